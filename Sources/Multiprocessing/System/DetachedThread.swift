import Glibc

/// Starts a detached thread that runs `body` once. Returns 0, or the error number
/// `pthread_create` gave (the thread then does not exist).
func startDetachedThread(_ body: @escaping @Sendable () -> Void) -> Int32 {
    final class Job: Sendable {
        let body: @Sendable () -> Void
        init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    }
    let context = Unmanaged.passRetained(Job(body)).toOpaque()
    var thread = pthread_t()
    let result = pthread_create(
        &thread, nil,
        { context in
            Unmanaged<Job>.fromOpaque(context!).takeRetainedValue().body()
            return nil
        }, context)
    if result == 0 {
        pthread_detach(thread)
    } else {
        Unmanaged<Job>.fromOpaque(context).release()
    }
    return result
}
