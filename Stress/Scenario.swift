// What a stress scenario is: work at one of two sizes, a deadline, and a summary of what it
// checked. The runner (Runner.swift) measures the parent around it.

import ArgumentParser
import Synchronization

/// How big a run is.
enum Size: String, CaseIterable, ExpressibleByArgument, Sendable {
    /// The numbers of the reliability issue: a million tasks, 64 workers, 10,000 starts, 16x16.
    case full
    /// A quick check of the same code paths (also each scenario's warm-up round).
    case tiny

    /// `full` at full size, `tiny` otherwise.
    func pick<Value>(_ full: Value, tiny: Value) -> Value { self == .full ? full : tiny }
}

/// One stress scenario.
struct Scenario: Sendable {
    /// Its name on the command line.
    let name: String
    /// What it does and checks, in one line.
    let summary: String
    /// The longest it may take at full size; tiny runs get a fifth of it, at least 60 s.
    let fullDeadline: Duration
    /// Runs it at `size`; returns what was checked, in a few words. Throws ``StressFailure``
    /// on any wrong result.
    let run: @Sendable (Size) async throws -> String

    /// The deadline at `size`.
    func deadline(_ size: Size) -> Duration {
        size.pick(fullDeadline, tiny: max(.seconds(60), fullDeadline / 5))
    }
}

/// A wrong result, a lost item, an unexpected error: the scenario fails with this sentence.
struct StressFailure: Error, CustomStringConvertible {
    /// What went wrong.
    let description: String

    init(_ description: String) { self.description = description }
}

/// Every scenario, in the order `all` runs them.
let scenarios: [Scenario] = [poolMillion, workers64, starts10k, queue16x16]

/// How far each part of the running scenario has got, for the watchdog's message: a hang is
/// found faster when it says which call stopped.
enum StressProgress {
    private static let counts = Mutex<[String: Int]>([:])

    /// Adds `amount` to `part`'s count.
    static func add(_ amount: Int = 1, to part: String) {
        counts.withLock { $0[part, default: 0] += amount }
    }

    /// Forgets every count (a new round).
    static func reset() { counts.withLock { $0.removeAll() } }

    /// `part: count` for every part, sorted.
    static var summary: String {
        counts.withLock { counts in counts.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" } }
            .joined(separator: ", ")
    }
}
