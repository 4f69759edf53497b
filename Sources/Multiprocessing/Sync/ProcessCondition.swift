import Glibc

/// A condition variable that threads of any number of processes can wait on: Python's
/// `multiprocessing.Condition`.
///
/// It pairs a lock (a ``RecursiveProcessLock`` by default, as in Python, or a
/// ``ProcessLock``) with a queue of waiters. A waiter holds the lock, calls
/// ``wait(timeout:)``, which releases it while waiting and takes it back before returning;
/// a notifier holds the lock and calls ``notify(_:)`` or ``notifyAll()``.
///
/// ```swift
/// try condition.withLock {
///     _ = try condition.wait(for: { queueIsNotEmpty() }, timeout: .seconds(5))
/// }
/// ```
///
/// - ``notify(_:)`` wakes exactly `n` of the threads waiting at that moment (fewer if fewer
///   wait), in any process; a notification with nobody waiting is not remembered.
/// - Timeouts return `false`; a wait that times out still takes the lock back.
/// - The `async` form is `withLock(_:)`'s async overload: the body, waits
///   included, runs on a thread of the library's own; a cancelled task's wait throws
///   `CancellationError` (with the lock taken back).
public final class ProcessCondition: Sendable, Codable {
    private enum Guard: Sendable, Codable {
        case plain(ProcessLock)
        case recursive(RecursiveProcessLock)
    }

    private let lock: Guard
    /// Word 0: threads waiting; word 1: of them, how many were notified and have not yet
    /// woken up (never more than word 0); then ``slots`` words: the waiters' process ids
    /// (0: free), so that waiting threads can count out the waiters of a dead process.
    private let monitor: SharedMonitor

    private static let slots = 128
    private static let slotBase = 2

    /// A new condition with a new ``RecursiveProcessLock``.
    public convenience init() throws {
        try self.init(lock: RecursiveProcessLock())
    }

    /// A new condition on `lock`.
    public init(lock: RecursiveProcessLock) throws {
        self.lock = .recursive(lock)
        monitor = try SharedMonitor(words: Self.slotBase + Self.slots)
    }

    /// A new condition on `lock`.
    public init(lock: ProcessLock) throws {
        self.lock = .plain(lock)
        monitor = try SharedMonitor(words: Self.slotBase + Self.slots)
    }

    private enum CodingKeys: String, CodingKey {
        case lock, monitor
    }

    /// Attaches to the condition (and its lock) that came with a message.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        lock = try container.decode(Guard.self, forKey: .lock)
        monitor = try container.decode(SharedMonitor.self, forKey: .monitor)
    }

    /// Sends a copy of the condition and its lock to another process.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(lock, forKey: .lock)
        try container.encode(monitor, forKey: .monitor)
    }

    /// Takes the condition's lock (see ``ProcessLock/acquire()``).
    public func acquire() throws(ProcessLockError) {
        switch lock {
        case .plain(let lock): try lock.acquire()
        case .recursive(let lock): try lock.acquire()
        }
    }

    /// Takes the condition's lock, waiting at most `timeout`; `false` if the time ran out.
    public func acquire(timeout: Duration) throws(ProcessLockError) -> Bool {
        switch lock {
        case .plain(let lock): try lock.acquire(timeout: timeout)
        case .recursive(let lock): try lock.acquire(timeout: timeout)
        }
    }

    /// Releases the condition's lock (a precondition failure unless the caller holds it).
    public func release() {
        switch lock {
        case .plain(let lock): lock.release()
        case .recursive(let lock): lock.release()
        }
    }

    /// Whether the calling thread holds the condition's lock.
    public var isHeldByCurrentThread: Bool {
        switch lock {
        case .plain(let lock): lock.isHeldByCurrentThread
        case .recursive(let lock): lock.isHeldByCurrentThread
        }
    }

    /// Runs `body` holding the condition's lock (see `withLock(_:)`).
    public func withLock<Result>(_ body: () throws -> Result) throws -> Result {
        switch lock {
        case .plain(let lock): try lock.withLock(body)
        case .recursive(let lock): try lock.withLock(body)
        }
    }

    /// Runs `body` holding the condition's lock on a thread of the library's own, while the
    /// calling task suspends; waits inside `body` throw `CancellationError` once the task is
    /// cancelled.
    public func withLock<Result: Sendable>(_ body: @escaping @Sendable () throws -> Result) async throws -> Result {
        switch lock {
        case .plain(let lock): try await lock.withLock(body)
        case .recursive(let lock): try await lock.withLock(body)
        }
    }

    /// Releases the lock, waits until notified or until `timeout` passes (`nil`: no limit;
    /// zero or negative: not at all), then takes the lock back. The caller must hold the lock.
    ///
    /// - Returns: `false` if the time ran out without a notification.
    /// - Throws: ``ProcessLockError`` from taking the lock back (held then, as always);
    ///   `CancellationError` inside an `async` `withLock(_:)` whose task was
    ///   cancelled.
    public func wait(timeout: Duration? = nil) throws -> Bool {
        precondition(isHeldByCurrentThread, "ProcessCondition.wait called without holding its lock")
        let deadline = timeout.deadline
        let me = getpid()
        let slot = monitor.update { state in
            state[0] += 1
            // A slot for this waiter's pid if one is free (if not, it is counted but a death
            // of its process is not noticed).
            for slot in 0..<Self.slots where state[Self.slotBase + slot] == 0 {
                state[Self.slotBase + slot] = Int(me)
                return slot
            }
            return -1
        }
        let held = releaseFully()
        var cancelled: (any Error)?
        var notified: Bool
        var lastCheck = ContinuousClock.now
        do {
            notified =
                try monitor.wait(deadline: deadline, check: WaitCancellation.checkCurrent) { state in
                    if state[1] > 0 {
                        state[1] -= 1
                        state[0] -= 1
                        if slot >= 0 { state[Self.slotBase + slot] = 0 }
                        return true
                    }
                    if ContinuousClock.now - lastCheck >= ProcessBarrier.livenessInterval {
                        lastCheck = .now
                        Self.forgetDeadWaiters(state, me: me)
                    }
                    return nil
                } ?? false
        } catch {
            cancelled = error
            notified = false
        }
        if !notified {
            // Leave the queue, unless a notification came meanwhile: then it is taken (a
            // notification is never lost on a waiter that goes away).
            notified = monitor.update { state in
                state[0] -= 1
                if slot >= 0 { state[Self.slotBase + slot] = 0 }
                if state[1] > 0 {
                    state[1] -= 1
                    return true
                }
                return false
            }
        }
        try reacquire(held)
        if let cancelled, !notified { throw cancelled }
        return notified
    }

    /// Waits until `predicate` is true (it is evaluated holding the lock, first before any
    /// wait), at most `timeout` in all.
    ///
    /// - Returns: the last value of `predicate`: `false` if the time ran out.
    public func wait(for predicate: () throws -> Bool, timeout: Duration? = nil) throws -> Bool {
        let deadline = timeout.deadline
        while true {
            if try predicate() { return true }
            if deadline.hasPassed { return false }
            let left = deadline.map { ContinuousClock.now.duration(to: $0) }
            if !(try wait(timeout: left)) { return try predicate() }
        }
    }

    /// Wakes exactly `count` of the threads waiting now (all of them if fewer wait); the
    /// caller must hold the lock.
    public func notify(_ count: Int = 1) {
        precondition(isHeldByCurrentThread, "ProcessCondition.notify called without holding its lock")
        precondition(count >= 0, "a notification wakes zero or more waiters")
        monitor.update(wake: Int32.max) { state in
            state[1] += min(count, state[0] - state[1])
        }
    }

    /// Wakes every thread waiting now; the caller must hold the lock.
    public func notifyAll() {
        notify(Int.max)
    }

    /// Threads waiting and not yet notified (for tests: it may change at once).
    var waitingCount: Int { monitor.update { $0[0] - $0[1] } }

    /// Counts out the waiters whose process died while waiting: a notification must not be
    /// granted to them (it would wake fewer than asked), nor kept for a later waiter.
    private static func forgetDeadWaiters(_ state: SharedMonitor.State, me: pid_t) {
        for slot in 0..<slots {
            let pid = pid_t(state[slotBase + slot])
            guard pid != 0, pid != me, processIsDead(pid) else { continue }
            state[slotBase + slot] = 0
            state[0] -= 1
            state[1] = min(state[1], state[0])
        }
    }

    /// Releases the lock entirely; returns how many times it was held.
    private func releaseFully() -> Int {
        switch lock {
        case .plain(let lock):
            lock.release()
            return 1
        case .recursive(let lock):
            let count = lock.recursionCount
            for _ in 0..<count { lock.release() }
            return count
        }
    }

    /// Takes the lock back, `count` times.
    private func reacquire(_ count: Int) throws(ProcessLockError) {
        switch lock {
        case .plain(let lock):
            try lock.acquire()
        case .recursive(let lock):
            try lock.acquire()
            for _ in 1..<count { try lock.acquire() }
        }
    }
}
