// The checkable work the pool scenarios do: a result that only the right input gives, and
// that names its input, so a result delivered for the wrong item, twice or not at all shows.

import Multiprocessing

/// SplitMix64's finaliser: every bit of the input changes about half of the output's.
func mix(_ value: Int) -> UInt64 {
    var z = UInt64(bitPattern: Int64(value)) &+ 0x9E37_79B9_7F4A_7C15
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
}

/// `mix` applied `rounds` times: CPU work of a chosen length.
func mix(_ value: Int, rounds: Int) -> UInt64 {
    var result = UInt64(bitPattern: Int64(value))
    for _ in 0..<max(1, rounds) { result = mix(Int(bitPattern: UInt(result))) }
    return result
}

/// A result and the input it was computed from.
struct Mixed: Codable, Sendable, Equatable {
    var input: Int
    var value: UInt64

    /// The right result for `input`.
    init(input: Int, rounds: Int = 1) {
        self.input = input
        value = rounds == 1 ? mix(input) : mix(input, rounds: rounds)
    }
}

/// `Mixed(input:)` in a worker: the pool scenario's function.
struct MixFunction: ProcessFunction {
    func callAsFunction(_ input: Int) -> Mixed { Mixed(input: input) }
}

/// Marks each input as seen once; says what went wrong otherwise.
struct ExactlyOnce {
    private var seen: [Bool]
    private let base: Int
    private(set) var count = 0

    /// Inputs `range` are expected.
    init(_ range: Range<Int>) {
        seen = [Bool](repeating: false, count: range.count)
        base = range.lowerBound
    }

    /// Records `result`, checking its value and that its input is expected and new.
    mutating func record(_ result: Mixed, rounds: Int = 1, in form: String) throws {
        let offset = result.input - base
        guard seen.indices.contains(offset) else {
            throw StressFailure("\(form): a result for input \(result.input), which was not asked for")
        }
        guard !seen[offset] else { throw StressFailure("\(form): input \(result.input) answered twice") }
        guard result == Mixed(input: result.input, rounds: rounds) else {
            throw StressFailure("\(form): input \(result.input) gave \(result.value), not the right value")
        }
        seen[offset] = true
        count += 1
    }

    /// Throws unless every expected input was recorded.
    func checkComplete(_ form: String) throws {
        if let missing = seen.firstIndex(of: false) {
            throw StressFailure(
                "\(form): \(seen.count - count) of \(seen.count) inputs never answered (the first: \(base + missing))")
        }
    }
}
