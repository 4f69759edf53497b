import Glibc
import Synchronization

/// What the engine thread counts when `SWIFT_MPI_ENGINE_STATS=1` is in its environment
/// (read once, when the thread starts), to split rank 0's CPU into the work its messages
/// cost and the polling between them (MPI/SCALING.md). Off, the loop tests one Boolean per
/// round and counts nothing.
///
/// Written by the engine thread alone (relaxed atomics: each counter is read on its own,
/// never as a consistent set with the others).
final class EngineCounters: Sendable {
    let enabled: Bool
    /// Rounds of the loop that made progress (took an order, completed or matched a message).
    let busyRounds = Atomic<Int>(0)
    /// Rounds that made none: polling, then the short sleeps.
    let idleRounds = Atomic<Int>(0)
    /// Idle rounds that ended in a sleep on the wake semaphore.
    let sleeps = Atomic<Int>(0)
    /// The engine thread's CPU time in busy and idle rounds, in nanoseconds (read with
    /// `CLOCK_THREAD_CPUTIME_ID` once a round, so a round's reading is charged to it).
    let busyNanoseconds = Atomic<Int>(0)
    let idleNanoseconds = Atomic<Int>(0)
    /// What one `CLOCK_THREAD_CPUTIME_ID` reading costs the thread, in nanoseconds (the mean
    /// of 10,000 taken at the start), so that a reader can take it out of each round.
    let readingNanoseconds = Atomic<Int>(0)
    /// Messages of the channels and of control, sent and received (complete in MPI's sense).
    let sends = Atomic<Int>(0)
    let receives = Atomic<Int>(0)
    /// Heartbeats sent and received.
    let heartbeatsSent = Atomic<Int>(0)
    let heartbeatsReceived = Atomic<Int>(0)

    init() {
        enabled = getenv("SWIFT_MPI_ENGINE_STATS").map { String(cString: $0) == "1" } ?? false
    }

    /// The engine thread's CPU time so far, in nanoseconds (call it on the engine thread).
    static func threadNanoseconds() -> Int {
        var now = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now)
        return Int(now.tv_sec) * 1_000_000_000 + now.tv_nsec
    }

    /// Measures what a reading costs (engine thread, once, when enabled).
    func calibrate() {
        guard enabled else { return }
        let count = 10_000
        let start = Self.threadNanoseconds()
        for _ in 0..<count { _ = Self.threadNanoseconds() }
        readingNanoseconds.store((Self.threadNanoseconds() - start) / (count + 1), ordering: .relaxed)
    }

    var snapshot: EngineStatistics {
        EngineStatistics(
            enabled: enabled,
            busyRounds: busyRounds.load(ordering: .relaxed),
            idleRounds: idleRounds.load(ordering: .relaxed),
            sleeps: sleeps.load(ordering: .relaxed),
            busyCPU: .nanoseconds(busyNanoseconds.load(ordering: .relaxed)),
            idleCPU: .nanoseconds(idleNanoseconds.load(ordering: .relaxed)),
            readingCost: .nanoseconds(readingNanoseconds.load(ordering: .relaxed)),
            sends: sends.load(ordering: .relaxed),
            receives: receives.load(ordering: .relaxed),
            heartbeatsSent: heartbeatsSent.load(ordering: .relaxed),
            heartbeatsReceived: heartbeatsReceived.load(ordering: .relaxed))
    }
}

/// The engine thread's counts so far, for the benchmarks (`SWIFT_MPI_ENGINE_STATS=1`; all
/// zero without it). Subtract two snapshots to get a phase's figures.
@_spi(Benchmarks) public struct EngineStatistics: Sendable {
    /// Whether the engine counts (`SWIFT_MPI_ENGINE_STATS=1` when it started).
    public var enabled: Bool
    /// Rounds of the engine loop that made progress.
    public var busyRounds: Int
    /// Rounds that made none (polling, and the rounds that end in a short sleep).
    public var idleRounds: Int
    /// Idle rounds that ended in a sleep.
    public var sleeps: Int
    /// The engine thread's CPU time in busy rounds, each round's clock reading included.
    public var busyCPU: Duration
    /// The engine thread's CPU time in idle rounds, each round's clock reading included.
    public var idleCPU: Duration
    /// What one round's clock reading costs (take `rounds × readingCost` out of the CPU times).
    public var readingCost: Duration
    /// Channel and control messages sent (completed).
    public var sends: Int
    /// Channel and control messages received (completed).
    public var receives: Int
    /// Heartbeats sent.
    public var heartbeatsSent: Int
    /// Heartbeats received.
    public var heartbeatsReceived: Int

    /// The counts from `earlier` to this snapshot.
    public func since(_ earlier: EngineStatistics) -> EngineStatistics {
        EngineStatistics(
            enabled: enabled, busyRounds: busyRounds - earlier.busyRounds, idleRounds: idleRounds - earlier.idleRounds,
            sleeps: sleeps - earlier.sleeps, busyCPU: busyCPU - earlier.busyCPU, idleCPU: idleCPU - earlier.idleCPU,
            readingCost: readingCost, sends: sends - earlier.sends, receives: receives - earlier.receives,
            heartbeatsSent: heartbeatsSent - earlier.heartbeatsSent,
            heartbeatsReceived: heartbeatsReceived - earlier.heartbeatsReceived)
    }
}

@_spi(Benchmarks) extension MPIWorld {
    /// The engine thread's counts so far (see ``EngineStatistics``).
    public var engineStatistics: EngineStatistics { engine.mailbox.counters.snapshot }
}
