import Glibc

/// A point in time by which a wait must end: `nil` waits forever.
///
/// Timeouts given as `Duration` become a deadline once, at the start of the call, so a
/// wait that is woken and goes back to sleep (another reader took the message, `EINTR`)
/// does not start its timeout over.
typealias Deadline = ContinuousClock.Instant

extension Optional where Wrapped == Duration {
    /// The deadline this timeout sets, counted from now.
    var deadline: Deadline? {
        map { ContinuousClock.now.advanced(by: $0) }
    }
}

extension Optional where Wrapped == Deadline {
    /// Milliseconds left before the deadline, rounded up, as `poll(2)` and `epoll_wait(2)`
    /// take them: -1 waits forever, 0 means the time is up.
    var pollTimeout: Int32 {
        guard let deadline = self else { return -1 }
        let left = ContinuousClock.now.duration(to: deadline)
        if left <= .zero { return 0 }
        let (seconds, attoseconds) = left.components
        let milliseconds = seconds * 1000 + (attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000
        return Int32(clamping: milliseconds)
    }

    /// Whether the deadline has passed.
    var hasPassed: Bool {
        guard let deadline = self else { return false }
        return ContinuousClock.now >= deadline
    }
}

/// A deadline as an absolute `CLOCK_MONOTONIC` time, for the pthread calls that take one.
func monotonicTime(of deadline: Deadline) -> timespec {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    let left = max(.zero, ContinuousClock.now.duration(to: deadline))
    let (seconds, attoseconds) = left.components
    var nanoseconds = Int(now.tv_nsec) + Int(attoseconds / 1_000_000_000)
    let wholeSeconds = Int(now.tv_sec) + Int(min(seconds, Int64(Int32.max))) + nanoseconds / 1_000_000_000
    nanoseconds %= 1_000_000_000
    return timespec(tv_sec: wholeSeconds, tv_nsec: nanoseconds)
}
