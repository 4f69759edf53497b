import Glibc
import SystemPackage

extension FileDescriptor {
    /// Waits until the descriptor can be written without blocking, or the deadline passes
    /// (`nil`: forever). Returns `false` on timeout. An interrupted wait returns early
    /// (callers loop on their own condition).
    @discardableResult
    func waitWritable(deadline: Deadline?) -> Bool {
        var entry = pollfd(fd: rawValue, events: Int16(POLLOUT), revents: 0)
        return poll(&entry, 1, deadline.pollTimeout) > 0
    }

    /// Waits until the descriptor is readable (data, end of stream, an exited process for a
    /// pidfd), or the deadline passes. Returns `false` on timeout.
    ///
    /// This is the blocking wait; `async` callers use ``Reactor/waitReadable(_:deadline:)``.
    func waitReadable(deadline: Deadline?) throws(Errno) -> Bool {
        try pollAny([(self, Int16(POLLIN))], deadline: deadline)
    }
}

/// Blocks until one of `targets` (a descriptor and the `poll(2)` events wanted on it) is
/// ready, has failed or hung up, or the deadline passes (`nil`: forever). Returns `false`
/// on timeout. A handled signal (`EINTR`) does not end the wait early.
func pollAny(_ targets: [(FileDescriptor, Int16)], deadline: Deadline?) throws(Errno) -> Bool {
    var entries = targets.map { pollfd(fd: $0.0.rawValue, events: $0.1, revents: 0) }
    while true {
        let result = poll(&entries, nfds_t(entries.count), deadline.pollTimeout)
        if result > 0 { return true }
        if result == 0 {
            // poll rounds up to whole milliseconds; only give up once the deadline is gone.
            if deadline.hasPassed || deadline == nil { return false }
            continue
        }
        let error = Errno(rawValue: errno)
        if error != .interrupted { throw error }
    }
}
