import Multiprocessing
import Synchronization

/// Ending a pool (Python's `close`, `terminate`, `join`, as ``Multiprocessing/ProcessPool``'s),
/// and the calls under way that closing waits for.
extension MPIPool {
    /// Takes no more calls; the service on each rank ends once the calls under way are done
    /// (Python's `close()`). Wait for the services' end with ``join()``. The ranks stay in
    /// the job, free for another pool.
    public func close() {
        if lifecycle.close() { tellServices(.stop, ranks: links.filter { !$0.isGone }) }
    }

    /// Ends the calls under way now (Python's `terminate()`): their unfinished items fail with
    /// ``MPIPoolError/Reason/closed``, each rank kills the local workers running them (the
    /// local pools started for this pool are killed whole), and the pool takes no more calls.
    /// Wait for the services' end with ``join()``.
    public func terminate() {
        let live = links.filter { !$0.isGone }
        let (first, tell) = lifecycle.terminate()
        guard first else { return }
        // The waiting requests fail now, not when the ranks answer.
        for link in links { link.fail(with: MPIPoolError(reason: .closed)) }
        if tell { tellServices(.terminate, ranks: live) }
    }

    /// Waits until the service on every rank has ended, or its rank is lost (Python's
    /// `join()`). Closes the pool first if ``close()`` or ``terminate()`` was not called, so
    /// that it cannot wait for services never told to end.
    public func join() async {
        close()
        for teller in lifecycle.tellers { await teller.value }
        // Each receiver ends when its rank's service has ended (its channel says the job
        // ended, once every reply it sent is received) or the rank is lost (the liveness bound).
        for receiver in receivers { await receiver.value }
    }

    /// Sends `request` (`.stop` or `.terminate`) to each rank's service, on a task of its own.
    private func tellServices(_ request: PoolRequest, ranks: [RankLink]) {
        lifecycle.add(
            Task {
                await withTaskGroup(of: Void.self) { group in
                    for link in ranks {
                        group.addTask { _ = try? await link.channel.send(request, timeout: .seconds(5)) }
                    }
                }
            })
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

    /// A call that began has ended; the last one after ``close()`` stops the services.
    func endCall() {
        if lifecycle.end() { tellServices(.stop, ranks: links.filter { !$0.isGone }) }
    }

    /// Why items no rank took failed: the pool was terminated, or every rank was lost.
    var noRankReason: MPIPoolError.Reason { lifecycle.isTerminated ? .closed : .noRanks }
}

/// Whether an ``MPIPool`` takes calls, how many are under way, and whether its services were
/// told to end (once: `.stop` when closed and idle, or `.terminate`).
final class MPIPoolLifecycle: Sendable {
    private let state = Mutex(State())

    private struct State {
        var closed = false
        var terminated = false
        var activeCalls = 0
        var told = false
        var tellers: [Task<Void, Never>] = []
    }

    /// Counts a call in; false once the pool is closed.
    func begin() -> Bool {
        state.withLock { state in
            guard !state.closed else { return false }
            state.activeCalls += 1
            return true
        }
    }

    /// Counts a call out; true when the services are now to be stopped (closed, no call left).
    func end() -> Bool {
        state.withLock { state in
            state.activeCalls -= 1
            return Self.stopsNow(&state)
        }
    }

    /// Takes no more calls; true when the services are now to be stopped (no call under way).
    func close() -> Bool {
        state.withLock { state in
            state.closed = true
            return Self.stopsNow(&state)
        }
    }

    /// Whether this is the first terminate, and whether the services are still to be told
    /// (a `.stop` already sent finds them ending: no call was under way).
    func terminate() -> (first: Bool, tell: Bool) {
        state.withLock { state in
            guard !state.terminated else { return (false, false) }
            state.terminated = true
            state.closed = true
            defer { state.told = true }
            return (true, !state.told)
        }
    }

    var isTerminated: Bool { state.withLock { $0.terminated } }

    /// The tasks telling the services to end.
    var tellers: [Task<Void, Never>] { state.withLock { $0.tellers } }

    func add(_ teller: Task<Void, Never>) {
        state.withLock { $0.tellers.append(teller) }
    }

    private static func stopsNow(_ state: inout State) -> Bool {
        guard state.closed, state.activeCalls == 0, !state.told else { return false }
        state.told = true
        return true
    }
}
