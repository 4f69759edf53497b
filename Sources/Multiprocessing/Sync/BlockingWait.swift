import Glibc
import Synchronization

/// Whether the task that started a wait on a thread of the library has been cancelled.
final class WaitCancellation: Sendable {
    private let flag = Atomic<Bool>(false)

    var isCancelled: Bool { flag.load(ordering: .acquiring) }

    func cancel() { flag.store(true, ordering: .releasing) }

    /// Throws `CancellationError` once cancelled: the `check` of a sliced wait.
    func check() throws {
        if isCancelled { throw CancellationError() }
    }

    /// The cancellation of the task whose wait the calling thread runs, if it is a thread
    /// started by ``waitOnOwnThread(_:)``: blocking waits made inside an `async` form's body
    /// (a condition's wait inside `withLock`) notice the task's cancellation through it.
    static var current: WaitCancellation? {
        guard let pointer = pthread_getspecific(key) else { return nil }
        return Unmanaged<WaitCancellation>.fromOpaque(pointer).takeUnretainedValue()
    }

    /// Throws `CancellationError` if the calling thread runs the wait of a cancelled task.
    static func checkCurrent() throws {
        try current?.check()
    }

    fileprivate static let key: pthread_key_t = {
        var key = pthread_key_t()
        let result = pthread_key_create(&key, nil)
        precondition(result == 0, "swift-multiprocessing could not create a thread-specific key: \(result)")
        return key
    }()
}

/// Runs a blocking wait on a new thread of the library's own and suspends the calling task
/// meanwhile, so no thread of Swift's cooperative pool is ever blocked by a wait on another
/// process.
///
/// One thread per waiting task: a wait may last as long as the user wants, so a fixed pool
/// could be exhausted by waits that only another waiter's progress would end. `body` waits in
/// slices (``SharedMonitor/slice``) and looks at the cancellation between them: a cancelled
/// task is told within a slice.
func waitOnOwnThread<Result: Sendable>(
    _ body: @escaping @Sendable (WaitCancellation) throws -> Result
) async throws -> Result {
    let cancellation = WaitCancellation()
    return try await withTaskCancellationHandler {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Result, any Error>) in
            let started = startDetachedThread {
                // The thread's own reference, dropped before it ends.
                let unmanaged = Unmanaged.passRetained(cancellation)
                pthread_setspecific(WaitCancellation.key, unmanaged.toOpaque())
                let result = Swift.Result { try body(cancellation) }
                pthread_setspecific(WaitCancellation.key, nil)
                unmanaged.release()
                continuation.resume(with: result)
            }
            precondition(started == 0, "swift-multiprocessing could not start a thread to wait on: \(started)")
        }
    } onCancel: {
        cancellation.cancel()
    }
}
