// The standard library's `Synchronization.Mutex` takes and releases its lock inside
// libswiftSynchronization.so (`_MutexHandle._lock`/`_unlock`: an atomic word and futex system
// calls), which is not built with ThreadSanitizer. TSan never sees the lock, so two threads
// that each change the protected value inside `withLock` look like a race on it, although the
// count comes out exact.
//
// Run:  swiftc -sanitize=thread mutex-invisible-to-tsan.swift -o /tmp/mutex-invisible-to-tsan
//       /tmp/mutex-invisible-to-tsan
//       -> "WARNING: ThreadSanitizer: Swift access race" in the closure given to withLock
//          (its mangled name ends in "zYuYTXEfU_"), then "40000".
// With the suppression:
//       TSAN_OPTIONS=suppressions=Sanitizers/tsan.supp /tmp/mutex-invisible-to-tsan  -> "40000" only
import Glibc
import Synchronization

final class Box: Sendable { let counter = Mutex(0) }
let box = Box()
var threads: [pthread_t] = []
for _ in 0..<4 {
    var thread = pthread_t()
    pthread_create(
        &thread, nil,
        { _ in
            for _ in 0..<10_000 { box.counter.withLock { $0 += 1 } }
            return nil
        }, nil)
    threads.append(thread)
}
for thread in threads { pthread_join(thread, nil) }
print(box.counter.withLock { $0 })
