#if canImport(Glibc)
import Glibc
#endif

/// A one-shot signal between threads: one thread waits (blocking), another fires it once.
///
/// Blocking callers of work done on the ``Reactor`` thread park here; a pthread condition
/// variable because the Synchronization module has locks but no way to sleep on one.
final class ThreadSignal: Sendable {
    // The pthread objects live at stable heap addresses (they must never move) and are
    // touched only through pthread calls, which synchronise themselves.
    private nonisolated(unsafe) let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private nonisolated(unsafe) let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private nonisolated(unsafe) let fired = UnsafeMutablePointer<Bool>.allocate(capacity: 1)

    init() {
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(condition, nil)
        fired.initialize(to: false)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        condition.deallocate()
        fired.deallocate()
    }

    func fire() {
        pthread_mutex_lock(mutex)
        fired.pointee = true
        pthread_cond_broadcast(condition)
        pthread_mutex_unlock(mutex)
    }

    func wait() {
        pthread_mutex_lock(mutex)
        while !fired.pointee { pthread_cond_wait(condition, mutex) }
        pthread_mutex_unlock(mutex)
    }
}
