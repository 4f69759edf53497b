import Glibc

/// A counting signal between threads: `wait` blocks until `fire` has been called more
/// times than `wait` has returned.
///
/// Blocking callers of work done on the ``Reactor`` thread park here, and a worker's main
/// thread sleeps here between jobs; a pthread condition variable because the
/// Synchronization module has locks but no way to sleep on one.
final class ThreadSignal: Sendable {
    // The pthread objects live at stable heap addresses (they must never move) and are
    // touched only through pthread calls, which synchronise themselves.
    private nonisolated(unsafe) let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private nonisolated(unsafe) let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private nonisolated(unsafe) let count = UnsafeMutablePointer<Int>.allocate(capacity: 1)

    init() {
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(condition, nil)
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
}
