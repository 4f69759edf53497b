import Glibc

/// A lock that threads of any number of processes can take: Python's
/// `multiprocessing.Lock`, robust.
///
/// ```swift
/// let lock = try ProcessLock()
/// // ... store `lock` in a `ProcessTarget` to share it with a child ...
/// try lock.withLock { counter += 1 }
/// ```
///
/// - Shared: encoding the lock (by storing it in a ``ProcessTarget``, or sending it on a
///   ``Connection``) gives the other process a copy of the same lock; it works between the
///   threads of one process too.
/// - Robust: if the thread holding it ends without releasing it (its process killed,
///   crashed or exited), the next thread to take it is told by a thrown
///   ``ProcessLockError/previousOwnerDied(pid:)``, *with the lock held*, and the lock is
///   usable again. A `try` cannot be forgotten, so the death cannot go unnoticed.
/// - Owned: only the thread that took it may release it; releasing it from another thread
///   is a precondition failure (Python's `Lock` lets any thread release it).
/// - Not re-entrant: taking it again on the thread that holds it throws
///   ``ProcessLockError/alreadyHeldByCurrentThread`` instead of deadlocking.
/// - Timeouts return `false`; only failures throw.
///
/// Because a lock belongs to a thread and a task may move between threads at each `await`,
/// the `async` form is `withLock(_:)`'s async overload: the lock is taken,
/// the synchronous body run and the lock released on a thread of the library's own, while
/// the calling task suspends.
public final class ProcessLock: Sendable, Codable {
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

    /// Takes the lock, waiting as long as it takes.
    ///
    /// - Throws: ``ProcessLockError/previousOwnerDied(pid:)`` with the lock **held** when its
    ///   previous holder died holding it; ``ProcessLockError/alreadyHeldByCurrentThread``.
    public func acquire() throws(ProcessLockError) {
        _ = try lock(deadline: nil)
    }

    /// Takes the lock, waiting at most `timeout` (zero or negative: not at all).
    ///
    /// - Returns: `false` if the time ran out.
    /// - Throws: as ``acquire()``.
    public func acquire(timeout: Duration) throws(ProcessLockError) -> Bool {
        try lock(deadline: Optional(timeout).deadline)
    }

    /// Takes the lock if it is free, without waiting.
    ///
    /// - Returns: `false` if another thread holds it.
    /// - Throws: as ``acquire()``.
    public func tryAcquire() throws(ProcessLockError) -> Bool {
        try core.tryLock()
    }

    /// Releases the lock. A precondition failure unless the calling thread holds it.
    public func release() {
        core.unlock("a ProcessLock was")
    }

    /// Whether the calling thread holds the lock.
    public var isHeldByCurrentThread: Bool { core.isHeldByCurrentThread }

    /// Runs `body` holding the lock, and releases it after.
    ///
    /// If the previous holder died holding it, `body` does not run: the lock is released and
    /// ``ProcessLockError/previousOwnerDied(pid:)`` thrown (to repair the data first, use
    /// ``acquire()`` and catch it).
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
    /// while the calling task suspends: no thread of the cooperative pool waits.
    ///
    /// - Throws: `CancellationError` if the task is cancelled while waiting for the lock
    ///   (nothing is held then); otherwise as `withLock(_:)`.
    public func withLock<Result: Sendable>(_ body: @escaping @Sendable () throws -> Result) async throws -> Result {
        if Task.isCancelled { throw CancellationError() }
        return try await waitOnOwnThread { [core] cancellation in
            do {
                _ = try core.lock(deadline: nil, cancellation: cancellation)
            } catch ProcessLockError.previousOwnerDied(let pid) {
                core.unlock("a ProcessLock was")
                throw ProcessLockError.previousOwnerDied(pid: pid)
            }
            defer { core.unlock("a ProcessLock was") }
            return try body()
        }
    }

    private func lock(deadline: Deadline?) throws(ProcessLockError) -> Bool {
        do {
            return try core.lock(deadline: deadline)
        } catch let error as ProcessLockError {
            throw error
        } catch {
            preconditionFailure("unreachable: no cancellation without a cancellation flag")
        }
    }
}
