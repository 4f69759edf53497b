// A scenario that hangs must fail, not wait forever: a thread watches its deadline.

import Glibc
import Synchronization

/// Ends the program with a message if it is not disarmed before `deadline` passes.
///
/// It ends it with `_exit`: a hung scenario may hold locks that `exit`'s handlers would wait
/// on. The library's children die with their parent (parent-death signal), so none is left.
final class Watchdog: Sendable {
    private let disarmed = Mutex(false)

    /// Starts watching: `message` is printed if the time runs out.
    init(deadline: Duration, message: @escaping @Sendable () -> String) {
        let start = ContinuousClock.now
        startThread { [self] in
            while ContinuousClock.now - start < deadline {
                if disarmed.withLock({ $0 }) { return }
                usleep(50_000)
            }
            if disarmed.withLock({ $0 }) { return }
            printError("FAIL: " + message())
            _exit(1)
        }
    }

    /// Stops watching.
    func disarm() { disarmed.withLock { $0 = true } }
}

/// Writes `text` and a newline to standard error.
func printError(_ text: String) {
    var line = text + "\n"
    line.withUTF8 { bytes in
        var offset = 0
        while offset < bytes.count {
            let written = write(2, bytes.baseAddress! + offset, bytes.count - offset)
            if written < 0 && errno == EINTR { continue }
            guard written > 0 else { return }
            offset += written
        }
    }
}
