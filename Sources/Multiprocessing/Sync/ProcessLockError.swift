import Glibc

/// Why a lock was not taken normally.
public enum ProcessLockError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The thread that held the lock ended without releasing it: its process died (killed,
    /// crashed, exited) or the thread itself exited. `pid` is that process (`nil` if it died
    /// before the lock could record it).
    ///
    /// **The lock is held by the caller when this error is thrown.** It is usable again, but
    /// the data it protects may be half-updated: repair or check it, then release the lock.
    case previousOwnerDied(pid: pid_t?)
    /// The calling thread already holds this lock, which is not recursive: waiting would
    /// deadlock (use ``RecursiveProcessLock`` to take a lock again).
    case alreadyHeldByCurrentThread
    /// The system refused (an `errno` value from the pthread call).
    case system(errno: Int32)

    /// A sentence saying what happened.
    public var description: String {
        switch self {
        case .previousOwnerDied(let pid):
            let owner = pid.map { "process \($0)" } ?? "a process"
            return "\(owner) died holding the lock; the lock is now held by the caller and "
                + "what it protects may be half-updated"
        case .alreadyHeldByCurrentThread:
            return "the calling thread already holds this lock, which is not recursive"
        case .system(let code):
            return "the lock failed: \(String(cString: strerror(code)))"
        }
    }
}

/// Why a semaphore refused a call.
public enum ProcessSemaphoreError: Error, Sendable, Hashable, CustomStringConvertible {
    /// A bounded semaphore was released more times than it was acquired: its value would
    /// exceed its initial value `bound`.
    case releasedTooManyTimes(bound: Int)

    /// A sentence saying what happened.
    public var description: String {
        switch self {
        case .releasedTooManyTimes(let bound):
            return "a bounded semaphore was released more times than acquired (its bound is \(bound))"
        }
    }
}
