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
    func run<Result: Sendable>(_ body: @escaping @Sendable () throws -> Result) async throws -> Result {
        try await withCheckedThrowingContinuation { continuation in
            submit { continuation.resume(with: Swift.Result { try body() }) }
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
