import Glibc

/// Why a ``ProcessBarrier`` let its parties go without all of them arriving: the barrier is
/// broken, and every party waiting on it, or arriving later, gets this error until
/// ``ProcessBarrier/reset()``.
public enum ProcessBarrierError: Error, Sendable, Hashable, CustomStringConvertible {
    /// A party's wait timed out (this one's or another's).
    case timedOut
    /// ``ProcessBarrier/abort()`` was called, or a waiting task was cancelled.
    case aborted
    /// ``ProcessBarrier/reset()`` was called while this party waited.
    case reset
    /// Process `pid` died while waiting on the barrier: it will never arrive again.
    case partyDied(pid: pid_t)

    /// A sentence saying what happened.
    public var description: String {
        switch self {
        case .timedOut: "the barrier is broken: a party's wait timed out"
        case .aborted: "the barrier is broken: it was aborted"
        case .reset: "the barrier was reset while this party waited"
        case .partyDied(let pid): "the barrier is broken: process \(pid) died waiting on it"
        }
    }
}
