import Glibc
import SystemPackage

extension FileDescriptor {
    /// Waits until the descriptor is readable (data, end of stream, an exited process for a
    /// pidfd), or the deadline passes. Returns `false` on timeout.
    ///
    /// This is the blocking wait; `async` callers use ``Reactor/waitReadable(_:deadline:)``.
    func waitReadable(deadline: Deadline?) throws(Errno) -> Bool {
        var entry = pollfd(fd: rawValue, events: Int16(POLLIN), revents: 0)
        while true {
            let result = poll(&entry, 1, deadline.pollTimeout)
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
}
