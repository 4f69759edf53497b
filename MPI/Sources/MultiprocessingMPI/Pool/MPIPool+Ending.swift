import Multiprocessing
import Synchronization

/// Ending a pool, and the calls under way that closing waits for.
extension MPIPool {
    /// Ends the services on the ranks once their requests are answered; the pool takes no
    /// more calls. The ranks stay in the job, free for another pool.
    public func close() async {
        guard lifecycle.close() else { return }
        for link in links where !link.isGone {
            _ = try? await link.channel.send(PoolRequest.stop, timeout: .seconds(5))
        }
        for receiver in receivers { receiver.cancel() }
    }

    /// A call begins: what every request of it carries (the function's mangled type name and
    /// encoded value). Throws if the pool is closed or the function cannot travel; a call
    /// that began ends with ``endCall()``.
    func beginCall<Function: ProcessFunction>(_ function: Function) throws -> (String, [UInt8]) {
        guard let typeName = _mangledTypeName(Function.self) else {
            throw MPIPoolError(reason: .couldNotRun("\(Function.self) has no mangled name"))
        }
        let encoded = try RankWire.encode(function)
        guard lifecycle.begin() else { throw MPIPoolError(reason: .closed) }
        return (typeName, encoded)
    }

    /// A call that began has ended.
    func endCall() {
        lifecycle.end()
    }

    /// Why items no rank took failed: every rank was lost, or the pool was terminated.
    var noRankReason: MPIPoolError.Reason { .noRanks }
}

/// Whether an ``MPIPool`` takes calls, and how many are under way.
final class MPIPoolLifecycle: Sendable {
    private let state = Mutex(State())

    private struct State {
        var closed = false
        var activeCalls = 0
    }

    /// Counts a call in; false once the pool is closed.
    func begin() -> Bool {
        state.withLock { state in
            guard !state.closed else { return false }
            state.activeCalls += 1
            return true
        }
    }

    func end() {
        state.withLock { $0.activeCalls -= 1 }
    }

    /// Takes no more calls; false if it was closed already.
    func close() -> Bool {
        state.withLock { state in
            defer { state.closed = true }
            return !state.closed
        }
    }
}
