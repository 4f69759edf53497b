import Synchronization

/// A lock that may be held across I/O, taken in arrival order by threads and tasks alike.
///
/// A `Mutex` must never be held while a caller waits for a socket: a blocking sender would
/// hold it for as long as the peer is slow, and an `async` sender waiting for the same
/// `Mutex` would block a thread of Swift's cooperative pool (two on a two-core machine).
/// Here a waiting thread sleeps on its own ``ThreadSignal`` and a waiting task suspends on
/// a continuation; whoever leaves hands the turn directly to the next in line.
final class Turnstile: Sendable {
    private enum Waiter {
        case thread(ThreadSignal)
        case task(CheckedContinuation<Void, any Error>)
    }

    private struct State {
        var held = false
        var line: [(id: UInt64, waiter: Waiter)] = []
        var nextID: UInt64 = 0
        /// Tasks that asked for the turn and have not yet joined the line.
        var arriving: Set<UInt64> = []
        /// Tasks cancelled before they joined the line: they must not join it.
        var cancelledEarly: Set<UInt64> = []
    }

    private let state = Mutex(State())

    /// Takes the turn, waiting until the deadline (`nil`: forever). `false` when the
    /// deadline passed first; the caller then does not hold the turn.
    func enter(deadline: Deadline? = nil) -> Bool {
        if tryEnter() { return true }
        // Made only when the turn is taken: the uncontended path allocates nothing.
        let signal = ThreadSignal()
        let id = state.withLock { state -> UInt64? in
            if !state.held {
                state.held = true
                return nil
            }
            state.nextID += 1
            state.line.append((state.nextID, .thread(signal)))
            return state.nextID
        }
        guard let id else { return true }
        if signal.wait(deadline: deadline) { return true }
        // Timed out. Leave the line, unless the turn was handed over in the meantime: then
        // it is ours, and its signal is on its way.
        let withdrawn = state.withLock { state -> Bool in
            guard let index = state.line.firstIndex(where: { $0.id == id }) else { return false }
            state.line.remove(at: index)
            return true
        }
        if withdrawn { return false }
        signal.wait()
        return true
    }

    /// Takes the turn if it is free.
    func tryEnter() -> Bool {
        state.withLock { state in
            if state.held { return false }
            state.held = true
            return true
        }
    }

    /// Takes the turn without blocking a thread.
    /// - Throws: `CancellationError` if the task is cancelled while it waits (it then does
    ///   not hold the turn).
    func enter() async throws {
        let id = state.withLock { state -> UInt64? in
            if !state.held {
                state.held = true
                return nil
            }
            state.nextID += 1
            state.arriving.insert(state.nextID)
            return state.nextID
        }
        guard let id else { return }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let outcome = state.withLock { state -> Bool? in
                    state.arriving.remove(id)
                    if state.cancelledEarly.remove(id) != nil { return false }
                    if !state.held {
                        state.held = true
                        return true
                    }
                    state.line.append((id, .task(continuation)))
                    return nil
                }
                switch outcome {
                case true?: continuation.resume()
                case false?: continuation.resume(throwing: CancellationError())
                case nil: break
                }
            }
        } onCancel: {
            let waiting = state.withLock { state -> CheckedContinuation<Void, any Error>? in
                if let index = state.line.firstIndex(where: { $0.id == id }),
                    case .task(let continuation) = state.line[index].waiter
                {
                    state.line.remove(at: index)
                    return continuation
                }
                if state.arriving.contains(id) { state.cancelledEarly.insert(id) }
                return nil  // already handed the turn: the task goes on holding it
            }
            waiting?.resume(throwing: CancellationError())
        }
    }

    /// Gives the turn to the next in line, or frees it.
    func leave() {
        let next = state.withLock { state -> Waiter? in
            guard !state.line.isEmpty else {
                state.held = false
                return nil
            }
            return state.line.removeFirst().waiter
        }
        switch next {
        case .thread(let signal)?: signal.fire()
        case .task(let continuation)?: continuation.resume()
        case nil: break
        }
    }
}
