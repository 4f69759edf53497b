import Glibc

/// A lock that the thread holding it may take again: Python's `multiprocessing.RLock`,
/// shared between processes and robust like ``ProcessLock``.
///
/// Each ``acquire()`` by the holding thread adds one to ``recursionCount``; each
/// ``release()`` takes one away, and the last one frees the lock. Only the holding thread may
/// release it (a precondition failure otherwise, as in Python, where it raises).
///
/// When the holder died holding it, the next thread to take it is told by a thrown
/// ``ProcessLockError/previousOwnerDied(pid:)`` with the lock held once (count 1).
public final class RecursiveProcessLock: Sendable, Codable {
    let core: LockCore

    /// A new, free lock.
    public init() throws {
        core = try LockCore()
    }

    /// Attaches to the lock that came with a message (a copy of its memory's descriptor).
    public init(from decoder: any Decoder) throws {
        core = LockCore(region: try SharedRegion(from: decoder))
    }

    /// Sends a copy of the lock to another process; only the library's own encoder can.
    public func encode(to encoder: any Encoder) throws {
        try core.region.encode(to: encoder)
    }

    /// Takes the lock (again, if the calling thread holds it), waiting as long as it takes.
    ///
    /// - Throws: ``ProcessLockError/previousOwnerDied(pid:)`` with the lock **held** when its
    ///   previous holder died holding it.
    public func acquire() throws(ProcessLockError) {
        _ = try lock(deadline: nil)
    }

    /// Takes the lock (again, if the calling thread holds it), waiting at most `timeout`.
    ///
    /// - Returns: `false` if the time ran out.
    /// - Throws: as ``acquire()``.
    public func acquire(timeout: Duration) throws(ProcessLockError) -> Bool {
        try lock(deadline: Optional(timeout).deadline)
    }

    /// Takes the lock if it is free or held by the calling thread, without waiting.
    ///
    /// - Returns: `false` if another thread holds it.
    /// - Throws: as ``acquire()``.
    public func tryAcquire() throws(ProcessLockError) -> Bool {
        if core.isHeldByCurrentThread {
            core.count += 1
            return true
        }
        return try core.tryLock()
    }

    /// Releases the lock once. A precondition failure unless the calling thread holds it.
    public func release() {
        precondition(
            core.isHeldByCurrentThread, "a RecursiveProcessLock was released by a thread that does not hold it")
        if core.count > 1 {
            core.count -= 1
        } else {
            core.unlock("a RecursiveProcessLock was")
        }
    }

    /// Whether the calling thread holds the lock.
    public var isHeldByCurrentThread: Bool { core.isHeldByCurrentThread }

    /// How many times the calling thread holds the lock (0 if it does not).
    public var recursionCount: Int { core.isHeldByCurrentThread ? core.count : 0 }

    /// Runs `body` holding the lock, and releases it once after.
    ///
    /// If the previous holder died holding it, `body` does not run: the lock is released and
    /// ``ProcessLockError/previousOwnerDied(pid:)`` thrown.
    public func withLock<Result>(_ body: () throws -> Result) throws -> Result {
        do {
            try acquire()
        } catch .previousOwnerDied(let pid) {
            release()
            throw ProcessLockError.previousOwnerDied(pid: pid)
        }
        defer { release() }
        return try body()
    }

    /// Takes the lock, runs `body` and releases the lock on a thread of the library's own,
    /// while the calling task suspends (see `withLock(_:)`).
    ///
    /// - Throws: `CancellationError` if the task is cancelled while waiting for the lock.
    public func withLock<Result: Sendable>(_ body: @escaping @Sendable () throws -> Result) async throws -> Result {
        if Task.isCancelled { throw CancellationError() }
        return try await waitOnOwnThread { [core] cancellation in
            do {
                _ = try core.lock(deadline: nil, cancellation: cancellation)
            } catch ProcessLockError.previousOwnerDied(let pid) {
                core.unlock("a RecursiveProcessLock was")
                throw ProcessLockError.previousOwnerDied(pid: pid)
            }
            defer { core.unlock("a RecursiveProcessLock was") }
            return try body()
        }
    }

    private func lock(deadline: Deadline?) throws(ProcessLockError) -> Bool {
        if core.isHeldByCurrentThread {
            core.count += 1
            FaultInjection.step("lock.reentered")
            return true
        }
        do {
            return try core.lock(deadline: deadline)
        } catch let error as ProcessLockError {
            throw error
        } catch {
            preconditionFailure("unreachable: no cancellation without a cancellation flag")
        }
    }
}
