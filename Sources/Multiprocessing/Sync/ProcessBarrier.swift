import Glibc

/// A meeting point for a fixed number of parties, threads of any number of processes:
/// Python's `multiprocessing.Barrier`.
///
/// Each party calls `wait(timeout:)`; the call returns when all ``parties`` have arrived,
/// with the party's arrival index (0 for the first, `parties - 1` for the last), and the
/// barrier is ready for the next round.
///
/// A barrier is *broken* by a timeout, ``abort()``, a cancelled `async` wait, or a party that
/// dies while waiting (the waiters record their process ids and look at the others' every
/// ``livenessInterval``): every waiting party, and every later one, gets a
/// ``ProcessBarrierError`` until ``reset()``, which also fails the parties waiting then with
/// ``ProcessBarrierError/reset`` and makes the barrier usable again.
///
/// Unlike the library's other waits, a barrier's timeout throws: it breaks the barrier for
/// every party, as in Python, so it is a failure of the group and not just of one wait.
public final class ProcessBarrier: Sendable, Codable {
    // Words: 0 parties, 1 arrived, 2 generation, 3 why broken (0 not, else a Reason),
    // 4 the dead party's pid, then `outcomes` words (how each recent generation ended, by
    // generation modulo their count), then `parties` words (the arrived parties' pids).
    private let monitor: SharedMonitor

    private enum Reason: Int {
        case timedOut = 1, aborted, partyDied
    }

    private enum Outcome: Int {
        case passed = 1, reset
    }

    private static let outcomes = 64
    private static let outcomeBase = 5
    private static var slotBase: Int { outcomeBase + outcomes }

    /// How often a waiting party checks that the other waiting parties' processes live.
    public static let livenessInterval: Duration = .milliseconds(200)

    /// A new barrier for `parties` parties (at least 1).
    public init(parties: Int) throws {
        precondition(parties >= 1, "a barrier has at least one party")
        monitor = try SharedMonitor(words: Self.slotBase + parties, repair: Self.repair)
        monitor.update { $0[0] = parties }
    }

    /// Attaches to the barrier that came with a message.
    public init(from decoder: any Decoder) throws {
        monitor = try SharedMonitor(from: decoder, repair: Self.repair)
    }

    /// A process died inside one of the barrier's sections: an arrival half-recorded (its pid
    /// written, the count not raised) or a generation half-opened (the generation raised, the
    /// count not back to 0). Nothing may go on as if the state were whole (a count left at
    /// `parties` would never open again, and the next arrival would write past the slots):
    /// the barrier breaks with that process named, as when a waiting party dies, and the
    /// count goes back into range. Parties of a generation already opened still pass (the
    /// outcome is looked at before the broken flag); ``reset()`` makes it usable again.
    private static let repair: SharedMonitor.Repair = { state, pid in
        if state[1] < 0 || state[1] >= state[0] { state[1] = 0 }
        if state[3] == 0 {
            state[3] = Reason.partyDied.rawValue
            state[4] = Int(pid)
        }
    }

    /// Sends a copy of the barrier to another process; only the library's own encoder can.
    public func encode(to encoder: any Encoder) throws {
        try monitor.encode(to: encoder)
    }

    /// The shared state (for tests).
    var monitorForTests: SharedMonitor { monitor }

    /// How many parties must arrive for the barrier to open.
    public var parties: Int { monitor.update { $0[0] } }

    /// How many parties are waiting now.
    public var waitingCount: Int { monitor.update { $0[3] == 0 ? $0[1] : 0 } }

    /// Whether the barrier is broken (see ``ProcessBarrierError``).
    public var isBroken: Bool { monitor.update { $0[3] != 0 } }

    /// Arrives and waits for the other parties, at most `timeout` (`nil`: no limit).
    ///
    /// - Returns: this party's arrival index, from 0 to `parties - 1`.
    /// - Throws: ``ProcessBarrierError`` if the barrier is or becomes broken, is reset
    ///   meanwhile, or the time runs out (which breaks it for every party).
    public func wait(timeout: Duration? = nil) throws(ProcessBarrierError) -> Int {
        do {
            return try wait(deadline: timeout.deadline, cancellation: nil)
        } catch let error as ProcessBarrierError {
            throw error
        } catch {
            preconditionFailure("unreachable: no cancellation without a cancellation flag")
        }
    }

    /// Arrives and waits for the other parties; the task suspends meanwhile.
    ///
    /// - Returns: this party's arrival index.
    /// - Throws: as `wait(timeout:)`, and `CancellationError` if the task is cancelled while
    ///   waiting, which breaks the barrier for the others (``ProcessBarrierError/aborted``).
    public func wait(timeout: Duration? = nil) async throws -> Int {
        if Task.isCancelled { throw CancellationError() }
        let deadline = timeout.deadline
        return try await waitOnOwnThread { [self] cancellation in
            try wait(deadline: deadline, cancellation: cancellation)
        }
    }

    /// Breaks the barrier: every waiting party, and every later one, gets
    /// ``ProcessBarrierError/aborted`` until ``reset()``.
    public func abort() {
        breakBarrier(.aborted)
    }

    /// Returns the barrier to its initial state: parties waiting now get
    /// ``ProcessBarrierError/reset``; a broken barrier is usable again.
    public func reset() {
        monitor.update(wake: Int32.max) { state in
            if state[1] > 0 || state[3] != 0 {
                state[Self.outcomeBase + state[2] % Self.outcomes] = Outcome.reset.rawValue
                state[2] += 1
            }
            state[1] = 0
            state[3] = 0
            state[4] = 0
        }
    }

    private func breakBarrier(_ reason: Reason, pid: pid_t = 0) {
        monitor.update(wake: Int32.max) { state in
            if state[3] == 0 {
                state[3] = reason.rawValue
                state[4] = Int(pid)
            }
        }
    }

    private static func error(_ state: SharedMonitor.State) -> ProcessBarrierError {
        switch Reason(rawValue: state[3]) {
        case .timedOut: .timedOut
        case .aborted, nil: .aborted
        case .partyDied: .partyDied(pid: pid_t(state[4]))
        }
    }

    /// The outcome of `generation` if it has ended: its parties' index, or an error.
    private static func ended(
        _ state: SharedMonitor.State, generation: Int, index: Int
    ) throws(ProcessBarrierError) -> Int? {
        guard state[2] != generation else { return nil }
        if state[outcomeBase + generation % outcomes] == Outcome.reset.rawValue { throw .reset }
        return index
    }

    private func wait(deadline: Deadline?, cancellation: WaitCancellation?) throws -> Int {
        let me = getpid()
        FaultInjection.step("barrier.arrive.begin")
        let arrival = try monitor.update(wake: Int32.max) { state throws(ProcessBarrierError) -> (Int, Int?) in
            if state[3] != 0 { throw Self.error(state) }
            let index = state[1]
            state[Self.slotBase + index] = Int(me)
            FaultInjection.step("barrier.arrive.recorded")
            state[1] += 1
            FaultInjection.step("barrier.arrive.counted")
            guard state[1] == state[0] else { return (index, state[2]) }
            // The last party: the barrier opens for this generation.
            state[Self.outcomeBase + state[2] % Self.outcomes] = Outcome.passed.rawValue
            state[2] += 1
            FaultInjection.step("barrier.open.halfway")
            state[1] = 0
            return (index, nil)
        }
        let (index, waiting) = arrival
        guard let generation = waiting else {
            FaultInjection.step("barrier.opened")
            return index
        }
        FaultInjection.step("barrier.arrived")

        var lastCheck = ContinuousClock.now
        var dead: pid_t?
        let result: Int?
        do {
            result = try monitor.wait(
                deadline: deadline,
                check: {
                    FaultInjection.step("barrier.waiting")
                    try cancellation?.check()
                }
            ) { state in
                if let passed = try Self.ended(state, generation: generation, index: index) { return passed }
                if state[3] != 0 { throw Self.error(state) }
                if ContinuousClock.now - lastCheck >= Self.livenessInterval {
                    lastCheck = .now
                    for slot in 0..<state[1] {
                        let pid = pid_t(state[Self.slotBase + slot])
                        if pid != me, processIsDead(pid) {
                            state[3] = Reason.partyDied.rawValue
                            state[4] = Int(pid)
                            dead = pid
                            throw ProcessBarrierError.partyDied(pid: pid)
                        }
                    }
                }
                return nil
            }
        } catch is CancellationError {
            // A party that leaves would leave a hole in the count: the barrier breaks, unless
            // it opened meanwhile.
            let passed = try monitor.update(wake: Int32.max) { state throws(ProcessBarrierError) -> Int? in
                if let passed = try Self.ended(state, generation: generation, index: index) { return passed }
                if state[3] == 0 { state[3] = Reason.aborted.rawValue }
                return nil
            }
            if let passed { return passed }
            throw CancellationError()
        } catch {
            if dead != nil { monitor.wakeAll() }
            throw error
        }
        if let result {
            FaultInjection.step("barrier.released")
            return result
        }
        // The time ran out: the barrier breaks for every party, unless it opened meanwhile.
        return try monitor.update(wake: Int32.max) { state throws(ProcessBarrierError) -> Int in
            if let passed = try Self.ended(state, generation: generation, index: index) { return passed }
            if state[3] == 0 { state[3] = Reason.timedOut.rawValue }
            throw Self.error(state)
        }
    }
}

/// Whether process `pid` has ended: no such process, or a zombie waiting to be reaped.
func processIsDead(_ pid: pid_t) -> Bool {
    if kill(pid, 0) != 0 { return errno == ESRCH }
    let file = open("/proc/\(pid)/stat", O_RDONLY | O_CLOEXEC)
    guard file >= 0 else { return true }
    defer { close(file) }
    var buffer = [UInt8](repeating: 0, count: 512)
    let count = read(file, &buffer, buffer.count)
    guard count > 0 else { return true }
    // "pid (comm) S ...": the state follows the last parenthesis.
    guard let close = buffer[0..<count].lastIndex(of: UInt8(ascii: ")")), close + 2 < count else { return false }
    let state = buffer[close + 2]
    return state == UInt8(ascii: "Z") || state == UInt8(ascii: "X")
}
