import Glibc

/// The body of a thread started by ``startEngineThread(_:)``.
private final class ThreadBody {
    let body: @Sendable () -> Void
    init(_ body: @escaping @Sendable () -> Void) { self.body = body }
}

/// Starts a detached thread running `body`; returns pthread_create's error number, 0 if started.
func startEngineThread(_ body: @escaping @Sendable () -> Void) -> Int32 {
    let context = Unmanaged.passRetained(ThreadBody(body)).toOpaque()
    var thread = pthread_t()
    let code = pthread_create(
        &thread, nil,
        { context in
            let body = Unmanaged<ThreadBody>.fromOpaque(context!).takeRetainedValue()
            body.body()
            return nil
        }, context)
    if code != 0 {
        Unmanaged<ThreadBody>.fromOpaque(context).release()
        return code
    }
    pthread_detach(thread)
    return 0
}
