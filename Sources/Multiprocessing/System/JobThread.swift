import Glibc
import Synchronization

/// A thread of the library's own that runs jobs one at a time, in order, for as long as
/// the process lives.
///
/// Children are started from here: a child's parent-death signal fires when the *thread*
/// that started it exits, so it must be a thread that never exits (not one of Dispatch's,
/// which come and go). Blocking callers wait on a ``ThreadSignal``; `async` callers
/// suspend, so starting a process never blocks a thread of the cooperative pool.
final class JobThread: Sendable {
    private let jobs = Mutex<[@Sendable () -> Void]>([])
    private let wakeUp = ThreadSignal()

    init() {
        var thread = pthread_t()
        let context = Unmanaged.passRetained(self).toOpaque()
        let result = pthread_create(
            &thread, nil,
            { context in
                Unmanaged<JobThread>.fromOpaque(context!).takeRetainedValue().loop()
                return nil
            }, context)
        precondition(result == 0, "swift-multiprocessing could not start its thread: \(result)")
        pthread_detach(thread)
    }

    /// Runs `body` on this thread and returns its result, blocking the caller meanwhile.
    func run<Result: Sendable, Failure: Error>(
        _ body: @escaping @Sendable () throws(Failure) -> Result
    ) throws(Failure) -> Result {
        let done = ThreadSignal()
        let outcome = Mutex<Swift.Result<Result, Failure>?>(nil)
        submit {
            let result = Swift.Result { () throws(Failure) -> Result in try body() }
            outcome.withLock { $0 = result }
            done.fire()
        }
        done.wait()
        return try outcome.withLock { $0! }.get()
    }

    /// Runs `body` on this thread; the calling task suspends meanwhile.
    ///
    /// Cancelling the task while the job waits its turn (behind a start that waits for a
    /// stopped fork server, say) throws `CancellationError` at once, and `body` never runs.
    /// Once the thread has taken the job up, it runs to the end.
    func run<Result: Sendable>(_ body: @escaping @Sendable () throws -> Result) async throws -> Result {
        // Who resumes the continuation: the thread taking the job up, or a cancellation
        // before that. Whichever comes first takes it out; the other finds it gone.
        let waiting = Mutex<CheckedContinuation<Result, any Error>?>(nil)
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                let cancelled = waiting.withLock { waiting -> Bool in
                    if Task.isCancelled { return true }
                    waiting = continuation
                    return false
                }
                if cancelled {
                    continuation.resume(throwing: CancellationError())
                    return
                }
                submit {
                    guard let continuation = waiting.withLock({ $0.take() }) else { return }
                    continuation.resume(with: Swift.Result { try body() })
                }
            }
        } onCancel: {
            waiting.withLock { $0.take() }?.resume(throwing: CancellationError())
        }
    }

    /// Jobs submitted and not yet taken up by the thread.
    var queued: Int { jobs.withLock(\.count) }

    func submit(_ job: @escaping @Sendable () -> Void) {
        jobs.withLock { $0.append(job) }
        wakeUp.fire()
    }

    private func loop() {
        while true {
            wakeUp.wait()
            // One job per wake-up (each `submit` fires once): what is still queued has not
            // been taken up, so `queued` is exact.
            guard let job = jobs.withLock({ $0.isEmpty ? nil : $0.removeFirst() }) else { continue }
            job()
        }
    }
}
