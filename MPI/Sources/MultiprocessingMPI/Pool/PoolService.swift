import Multiprocessing
import Synchronization

/// The job an ``MPIPool`` starts on each worker rank: a local ``Multiprocessing/ProcessPool``
/// whose workers run the items, so that a crash, a timeout or a cancellation on that machine
/// ends one local process and the rank reports it, as a pool on one machine does.
struct PoolService: RankJob {
    var workers: Int
    var startMethod: StartMethod
    var maxTasksPerWorker: Int?
    var retries: Int
    /// Run once in each local worker before it serves; found by its type's name on the rank.
    var initializer: EncodedRankTarget?
    var memoryLimit: Int?
    /// Whether the rank's log records go to rank 0 (``RankLogs``).
    var forwardsLogs: Bool

    func run(channel: RankChannel) async throws {
        // The rank's shared pool for the default settings (started at launch), else one of
        // this service's own.
        let shared = await RankLocalPool.pool(for: self)
        let pool: ProcessPool
        if let shared {
            pool = shared
        } else {
            pool = try await ProcessPool(
                workers: workers, startMethod: startMethod, maxTasksPerWorker: maxTasksPerWorker, retries: retries,
                initializer: try initializer?.decode(), memoryLimit: memoryLimit, forwardsLogs: forwardsLogs)
        }
        try await channel.send(PoolReply.ready)
        let forwarding = forwardsLogs ? RankLogs.forward(over: channel) : nil
        // Requests run at once, each on a task of its own: rank 0 keeps several in flight so
        // that the local workers never wait for the network.
        let running = RunningRequests()
        defer { if shared == nil { pool.terminate() } }
        var terminated = false
        serving: while true {
            let request: PoolRequest
            do {
                request = try await channel.receive(PoolRequest.self)
            } catch {
                break serving  // rank 0 is gone, or MPI failed: nothing more will come
            }
            switch request {
            case .stop:
                break serving
            case .terminate:
                // Cancelling a request's task kills the local workers running its items.
                terminated = true
                running.cancelAll()
                break serving
            case .cancel(let id):
                running.cancel(id)
            case .run(let id, let typeName, let function, let inputs, let chunkSize, let timeout):
                running.start(id) {
                    let reply = await Self.answer(
                        id: id, typeName: typeName, function: function, inputs: inputs, chunkSize: chunkSize,
                        timeout: timeout, pool: pool)
                    _ = try? await channel.send(reply)
                }
            }
        }
        // Requests in flight are answered before the service ends (a stop comes after the
        // pool's last call returned, so normally there are none).
        await running.waitForAll()
        if shared == nil {
            if terminated { pool.terminate() } else { pool.close() }
            await pool.join()
        }
        // The last records, before the job ends (rank 0's join waits for that end).
        forwarding?.cancel()
        await forwarding?.value
    }

    /// Runs one request on the local pool.
    static func answer(
        id: UInt64, typeName: String, function: [UInt8], inputs: [UInt8], chunkSize: Int?, timeout: Duration?,
        pool: ProcessPool
    ) async -> PoolReply {
        guard let type = _typeByName(typeName) as? any ProcessFunction.Type else {
            return .refused(id: id, reason: "no ProcessFunction type with the mangled name \(typeName) in this program")
        }
        return await answer(
            type, id: id, function: function, inputs: inputs, chunkSize: chunkSize, timeout: timeout, pool: pool)
    }

    private static func answer<Function: ProcessFunction>(
        _ type: Function.Type, id: UInt64, function: [UInt8], inputs: [UInt8], chunkSize: Int?, timeout: Duration?,
        pool: ProcessPool
    ) async -> PoolReply {
        let decoded: (Function, [Function.Input])
        do {
            decoded = (
                try RankWire.decode(Function.self, from: function),
                try RankWire.decode([Function.Input].self, from: inputs)
            )
        } catch {
            return .refused(id: id, reason: "\(Function.self) or its inputs did not decode: \(error)")
        }
        // The call's chunk size, for the local pool: each item still fails alone.
        let results = await pool.results(decoded.0, decoded.1, chunkSize: chunkSize, timeout: timeout)
        var outcomes = PoolItemResults<Function.Output>(outputs: [], failures: [])
        outcomes.outputs.reserveCapacity(results.count)
        for (offset, result) in results.enumerated() {
            switch result {
            case .success(let output): outcomes.outputs.append(output)
            case .failure(let error):
                outcomes.failures.append(
                    PoolItemFailure(offset: offset, kind: kind(of: error), detail: detail(of: error)))
            }
        }
        do {
            return .done(id: id, outcomes: try RankWire.encode(outcomes))
        } catch {
            return .refused(id: id, reason: "the outputs of \(Function.self) could not be encoded: \(error)")
        }
    }

    static func kind(of error: ProcessPoolError) -> MPIPoolError.Kind {
        switch error.reason {
        case .threw: .threw
        case .workerEnded: .workerEnded
        case .timedOut: .timedOut
        case .couldNotRun: .couldNotRun
        case .memoryLimitExceeded: .memoryLimitExceeded
        case .cancelled: .cancelled
        case .closed, .noWorkers: .other
        }
    }

    /// The local pool's sentence without its "item k failed: " (k is the local index; rank 0
    /// names the item by its index in the call).
    static func detail(of error: ProcessPoolError) -> String {
        let text = error.description
        guard let index = error.index else { return text }
        let prefix = "item \(index) failed: "
        return text.hasPrefix(prefix) ? String(text.dropFirst(prefix.count)) : text
    }
}

/// The requests a ``PoolService`` is running, by id, so that rank 0 can cancel one.
final class RunningRequests: Sendable {
    private let tasks = Mutex<[UInt64: Task<Void, Never>]>([:])

    /// Runs `body` on a task of its own, known by `id` until it ends.
    func start(_ id: UInt64, _ body: @escaping @Sendable () async -> Void) {
        // Inserted under the lock before the task can end and remove itself.
        tasks.withLock { tasks in
            tasks[id] = Task {
                await body()
                self.tasks.withLock { _ = $0.removeValue(forKey: id) }
            }
        }
    }

    func cancel(_ id: UInt64) {
        tasks.withLock { $0[id] }?.cancel()
    }

    func cancelAll() {
        for task in tasks.withLock({ Array($0.values) }) { task.cancel() }
    }

    func waitForAll() async {
        for task in tasks.withLock({ Array($0.values) }) { await task.value }
    }
}
