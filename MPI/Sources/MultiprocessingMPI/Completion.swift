import Dispatch
import Synchronization

/// The outcome of one operation handed to the engine thread, waited for by a task (without
/// holding a thread of the cooperative pool) or by a thread (blocking).
///
/// Resumed exactly once, by the engine thread; whichever comes first, the result or the
/// waiter, the other finds it in `state`.
final class Completion: Sendable {
    private enum State {
        case pending
        case waiting(CheckedContinuation<Void, any Error>)
        case finished(Result<Void, any Error>)
    }

    private let state = Mutex(State.pending)
    /// Signalled once at completion, for a blocking waiter (an atomic operation when no one
    /// sleeps on it).
    private let signal = DispatchSemaphore(value: 0)

    /// Completes the operation; later calls do nothing.
    func resume(_ result: Result<Void, any Error>) {
        let (first, waiter): (Bool, CheckedContinuation<Void, any Error>?) = state.withLock { state in
            switch state {
            case .pending:
                state = .finished(result)
                return (true, nil)
            case .waiting(let continuation):
                state = .finished(result)
                return (true, continuation)
            case .finished:
                return (false, nil)
            }
        }
        guard first else { return }
        waiter?.resume(with: result)
        signal.signal()
    }

    /// True once the result is in.
    var isFinished: Bool {
        state.withLock { if case .finished = $0 { true } else { false } }
    }

    /// Waits, suspending the task.
    func wait() async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let result: Result<Void, any Error>? = state.withLock { state in
                if case .finished(let result) = state { return result }
                state = .waiting(continuation)
                return nil
            }
            if let result { continuation.resume(with: result) }
        }
    }

    /// Waits, blocking the calling thread (never call it on the cooperative pool).
    func waitBlocking() throws {
        _ = try waitBlocking(timeout: nil)
    }

    /// Waits at most `timeout` (nil: as long as it takes), blocking the calling thread;
    /// false if the operation had not completed by then.
    func waitBlocking(timeout: Duration?) throws -> Bool {
        if let timeout {
            let (seconds, attoseconds) = timeout.components
            let nanoseconds = Int(seconds) * 1_000_000_000 + Int(attoseconds / 1_000_000_000)
            if signal.wait(timeout: .now() + .nanoseconds(nanoseconds)) == .timedOut { return false }
        } else {
            signal.wait()
        }
        let result: Result<Void, any Error>? = state.withLock { state in
            if case .finished(let result) = state { return result }
            return nil
        }
        try result?.get()
        return true
    }
}
