import Glibc

/// A counting signal between threads: `wait` blocks until `fire` has been called more
/// times than `wait` has returned.
///
/// Blocking callers of work done on another thread park here, and so does a thread that
/// waits for its turn on a ``Turnstile``; a pthread condition variable because the
/// Synchronization module has locks but no way to sleep on one.
final class ThreadSignal: Sendable {
    // The pthread objects live at stable heap addresses (they must never move) and are
    // touched only through pthread calls, which synchronise themselves.
    private nonisolated(unsafe) let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private nonisolated(unsafe) let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private nonisolated(unsafe) let count = UnsafeMutablePointer<Int>.allocate(capacity: 1)

    init() {
        pthread_mutex_init(mutex, nil)
        // Timed waits measure on the monotonic clock, like every deadline in the library:
        // setting the wall clock must not shorten or stretch them.
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        pthread_cond_init(condition, &attributes)
        pthread_condattr_destroy(&attributes)
        count.initialize(to: 0)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        condition.deallocate()
        count.deallocate()
    }

    func fire() {
        pthread_mutex_lock(mutex)
        count.pointee += 1
        pthread_cond_signal(condition)
        pthread_mutex_unlock(mutex)
    }

    func wait() {
        pthread_mutex_lock(mutex)
        while count.pointee == 0 { pthread_cond_wait(condition, mutex) }
        count.pointee -= 1
        pthread_mutex_unlock(mutex)
    }

    /// Waits until fired or the deadline passes (`nil`: forever); `false` on timeout.
    func wait(deadline: Deadline?) -> Bool {
        guard let deadline else {
            wait()
            return true
        }
        var until = monotonicTime(of: deadline)
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        while count.pointee == 0 {
            if pthread_cond_timedwait(condition, mutex, &until) == ETIMEDOUT {
                if count.pointee == 0 { return false }
            }
        }
        count.pointee -= 1
        return true
    }
}
