/// A counter that threads of any number of processes take from and give back to:
/// Python's `multiprocessing.Semaphore`.
///
/// `acquire()` waits until the value is above zero and takes one; `release()` adds one
/// and wakes a waiter. Any thread may release (a semaphore has no owner). Shared like
/// ``ProcessLock``: encoding it gives another process the same semaphore.
///
/// Timeouts return `false`; the `async` forms suspend the task while a thread of the
/// library waits, and throw `CancellationError` when the task is cancelled while waiting
/// (nothing taken then).
public final class ProcessSemaphore: Sendable, Codable {
    let core: SemaphoreCore

    /// A new semaphore whose value is `value` (at least 0).
    public init(value: Int = 1) throws {
        precondition(value >= 0, "a semaphore's value cannot be negative")
        core = try SemaphoreCore(value: value, bound: nil)
    }

    /// Attaches to the semaphore that came with a message.
    public init(from decoder: any Decoder) throws {
        core = SemaphoreCore(monitor: try SharedMonitor(from: decoder))
    }

    /// Sends a copy of the semaphore to another process; only the library's own encoder can.
    public func encode(to encoder: any Encoder) throws {
        try core.monitor.encode(to: encoder)
    }

    /// The value now (it may change at once).
    public var value: Int { core.value }

    /// Takes one, waiting as long as it takes.
    public func acquire() {
        _ = core.acquire(deadline: nil, check: {})
    }

    /// Takes one, waiting at most `timeout` (zero or negative: not at all); `false` if the
    /// time ran out.
    public func acquire(timeout: Duration) -> Bool {
        core.acquire(deadline: Optional(timeout).deadline, check: {})
    }

    /// Takes one if the value is above zero, without waiting.
    public func tryAcquire() -> Bool {
        core.acquire(deadline: .now, check: {})
    }

    /// Takes one; the task suspends meanwhile. Throws `CancellationError` if cancelled.
    public func acquire() async throws {
        _ = try await core.acquire(timeout: nil)
    }

    /// Takes one, waiting at most `timeout`; `false` if the time ran out. Throws
    /// `CancellationError` if cancelled while waiting.
    public func acquire(timeout: Duration) async throws -> Bool {
        try await core.acquire(timeout: timeout)
    }

    /// Gives back `count` (at least 1) and wakes as many waiters.
    public func release(count: Int = 1) {
        precondition(count >= 1, "a semaphore is released at least once")
        try! core.release(count: count)  // no bound: it cannot fail
    }
}

/// A semaphore whose value may never exceed its initial value: Python's
/// `multiprocessing.BoundedSemaphore`, checked.
///
/// A release that would raise the value above the bound throws
/// ``ProcessSemaphoreError/releasedTooManyTimes(bound:)`` and changes nothing (CPython's
/// `BoundedSemaphore` does not check across processes on Linux).
public final class BoundedProcessSemaphore: Sendable, Codable {
    let core: SemaphoreCore

    /// A new semaphore whose value and bound are `value` (at least 0).
    public init(value: Int = 1) throws {
        precondition(value >= 0, "a semaphore's value cannot be negative")
        core = try SemaphoreCore(value: value, bound: value)
    }

    /// Attaches to the semaphore that came with a message.
    public init(from decoder: any Decoder) throws {
        core = SemaphoreCore(monitor: try SharedMonitor(from: decoder))
    }

    /// Sends a copy of the semaphore to another process; only the library's own encoder can.
    public func encode(to encoder: any Encoder) throws {
        try core.monitor.encode(to: encoder)
    }

    /// The value now (it may change at once).
    public var value: Int { core.value }

    /// The most the value may be: its initial value.
    public var bound: Int { core.bound }

    /// Takes one, waiting as long as it takes.
    public func acquire() {
        _ = core.acquire(deadline: nil, check: {})
    }

    /// Takes one, waiting at most `timeout` (zero or negative: not at all); `false` if the
    /// time ran out.
    public func acquire(timeout: Duration) -> Bool {
        core.acquire(deadline: Optional(timeout).deadline, check: {})
    }

    /// Takes one if the value is above zero, without waiting.
    public func tryAcquire() -> Bool {
        core.acquire(deadline: .now, check: {})
    }

    /// Takes one; the task suspends meanwhile. Throws `CancellationError` if cancelled.
    public func acquire() async throws {
        _ = try await core.acquire(timeout: nil)
    }

    /// Takes one, waiting at most `timeout`; `false` if the time ran out. Throws
    /// `CancellationError` if cancelled while waiting.
    public func acquire(timeout: Duration) async throws -> Bool {
        try await core.acquire(timeout: timeout)
    }

    /// Gives back `count` (at least 1) and wakes as many waiters.
    ///
    /// - Throws: ``ProcessSemaphoreError/releasedTooManyTimes(bound:)`` if the value would
    ///   exceed the bound; nothing is released then.
    public func release(count: Int = 1) throws(ProcessSemaphoreError) {
        precondition(count >= 1, "a semaphore is released at least once")
        try core.release(count: count)
    }
}

/// The semaphore's state in a ``SharedMonitor``: word 0 the value, word 1 the bound (-1:
/// none).
struct SemaphoreCore: Sendable {
    let monitor: SharedMonitor

    init(value: Int, bound: Int?) throws {
        monitor = try SharedMonitor(words: 2)
        monitor.update { state in
            state[0] = value
            state[1] = bound ?? -1
        }
    }

    init(monitor: SharedMonitor) {
        self.monitor = monitor
    }

    var value: Int { monitor.update { $0[0] } }
    var bound: Int { monitor.update { $0[1] } }

    func acquire(deadline: Deadline?, check: () throws -> Void) rethrows -> Bool {
        try monitor.wait(deadline: deadline, check: check) { state in
            guard state[0] > 0 else { return nil }
            state[0] -= 1
            return true
        } ?? false
    }

    func acquire(timeout: Duration?) async throws -> Bool {
        if Task.isCancelled { throw CancellationError() }
        if acquire(deadline: .now, check: {}) { return true }
        if let timeout, timeout <= .zero { return false }
        let deadline = timeout.deadline
        return try await waitOnOwnThread { [self] cancellation in
            try acquire(deadline: deadline, check: cancellation.check)
        }
    }

    func release(count: Int) throws(ProcessSemaphoreError) {
        try monitor.update(wake: Int32(clamping: count)) { state throws(ProcessSemaphoreError) in
            if state[1] >= 0, state[0] + count > state[1] {
                throw .releasedTooManyTimes(bound: state[1])
            }
            state[0] += count
        }
    }
}
