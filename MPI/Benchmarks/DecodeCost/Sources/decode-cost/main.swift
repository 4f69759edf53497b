// Microseconds per item to encode and decode 256 outputs on the library's binary wire, as
// `[Outcome<Output>]` (an enum per item, the shape of MPIPool's PoolItemResult) and as a
// plain `[Output]`, from a generic function that is not specialized for `Output` (as
// MPIPool's code is, called from another module). Three passes each, printed as they come.
import Glibc
import Multiprocessing

/// The shape of MPIPool's `PoolItemResult` (MPI/Sources/MultiprocessingMPI/Pool/PoolWire.swift).
enum Outcome<Output: Codable & Sendable>: Codable, Sendable {
    case output(Output)
    case failure(kind: String, detail: String)
}

struct Point: Codable, Sendable {
    var x: Int
    var label: String
}

func seconds() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
}

/// (encode, decode) microseconds per item of `values` wrapped one enum per item.
@inline(never)
func perItemAsOutcomes<Output: Codable & Sendable>(_ values: [Output], rounds: Int) throws -> (Double, Double) {
    let outcomes = values.map { Outcome<Output>.output($0) }
    let bytes = try BinaryEncoder().encode(outcomes)
    let start = seconds()
    for _ in 0..<rounds { _ = try BinaryEncoder().encode(values.map { Outcome<Output>.output($0) }) }
    let encoded = seconds()
    for _ in 0..<rounds { _ = try BinaryDecoder().decode([Outcome<Output>].self, from: bytes) }
    let decoded = seconds()
    let items = Double(rounds * values.count)
    return ((encoded - start) / items * 1e6, (decoded - encoded) / items * 1e6)
}

/// (encode, decode) microseconds per item of `values` as one plain array.
@inline(never)
func perItemAsArray<Output: Codable & Sendable>(_ values: [Output], rounds: Int) throws -> (Double, Double) {
    let bytes = try BinaryEncoder().encode(values)
    let start = seconds()
    for _ in 0..<rounds { _ = try BinaryEncoder().encode(values) }
    let encoded = seconds()
    for _ in 0..<rounds { _ = try BinaryDecoder().decode([Output].self, from: bytes) }
    let decoded = seconds()
    let items = Double(rounds * values.count)
    return ((encoded - start) / items * 1e6, (decoded - encoded) / items * 1e6)
}

func report<Output: Codable & Sendable>(_ name: String, _ values: [Output], rounds: Int) throws {
    for _ in 0..<3 {
        let outcomes = try perItemAsOutcomes(values, rounds: rounds)
        let array = try perItemAsArray(values, rounds: rounds)
        print(
            "256 \(name), us per item: as outcomes encode \(outcomes.0) decode \(outcomes.1); as an array encode \(array.0) decode \(array.1)"
        )
    }
}

try report("Int", Array(0..<256), rounds: 400)
try report("Point", (0..<256).map { Point(x: $0, label: "p\($0)") }, rounds: 200)
