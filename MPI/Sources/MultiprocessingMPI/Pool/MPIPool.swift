@_spi(MPI) import Multiprocessing
import Synchronization

/// A process pool whose workers are MPI ranks: the same calls as
/// ``Multiprocessing/ProcessPool`` (`map`, `results`, `apply`, `submit`, the streams over a
/// `Sequence` or an `AsyncSequence`, `progress:`, an `initializer:`, `close`, `terminate`
/// and `join`; the workers' log records reach this process), over every rank of an
/// `mpirun` job.
///
/// ```swift
/// // mpirun -np 4 .build/release/my-tool   (rank 0 runs main; ranks 1-3 serve it)
/// let squares = try await withMPIPool { pool in
///     try await pool.map(Square(), [1, 2, 3, 4, 5])   // [1, 4, 9, 16, 25]
/// }
/// ```
///
/// Each worker rank runs the items in a local pool of its own (``workersPerRank`` processes
/// on its machine): a crash, a `fatalError` or a timeout ends one local process, the item
/// fails with an error naming it and its rank, and the rank goes on with a new process.
/// A rank that dies, or goes silent past the liveness bound (``MPIWorld/liveness``), fails
/// the items it held with ``MPIPoolError/Reason/rankLost(silentFor:)`` naming it; the other
/// ranks finish the rest. Launch with `mpirun --enable-recovery`: without it, Open MPI ends
/// the whole job, rank 0 included, when one rank dies (see MPI/README.md).
public final class MPIPool: Sendable {
    /// The MPI job this pool runs on.
    public let world: MPIWorld
    /// The local worker processes of each rank.
    public let workersPerRank: Int
    let links: [RankLink]
    /// One task per rank receiving its replies; each ends when the rank's service has ended
    /// (or the rank is lost): ``join()`` waits for them.
    let receivers: [Task<Void, Never>]
    let lifecycle = MPIPoolLifecycle()
    private let nextID = Atomic<UInt64>(1)
    /// The most inputs one request to a rank carries.
    static let maximumRequest = 256

    /// Starts a pool service on every live worker rank and waits until each has its local
    /// workers up.
    /// - Parameters:
    ///   - workersPerRank: local worker processes per rank (default 1: one rank per core is
    ///     the usual `mpirun` layout).
    ///   - startMethod: how a rank starts its local workers (default `.forkserver`).
    ///   - maxTasksPerWorker: as for ``Multiprocessing/ProcessPool``, applied by each rank to
    ///     its local workers.
    ///   - retries: as for ``Multiprocessing/ProcessPool``, applied by each rank.
    ///   - memoryLimit: as for ``Multiprocessing/ProcessPool``, applied by each rank.
    ///   - initializer: a target run once in each local worker process of each rank before it
    ///     serves (Python's `initializer`), as ``Multiprocessing/ProcessPool``'s. It travels to
    ///     the ranks on the library's binary wire: one holding a handle that only makes sense
    ///     on one machine is refused with ``MPIError/notSendableToAnotherRank(type:codingPath:reason:)``.
    ///   - forwardsLogs: whether the swift-log records of the ranks' local workers are logged
    ///     again in this process (with metadata `rank`, `worker` and `pid`), through this
    ///     process's logging system, which decides what is printed. On the ranks, records at
    ///     `info` and above cross (`SWIFT_MPI_LOG_LEVEL` in the job's environment changes
    ///     that). Default `true`. An initializer that bootstraps `LoggingSystem` itself needs
    ///     `false`.
    /// - Throws: ``MPIError/notStartedByMPIRun`` outside `mpirun`; ``MPIPoolError`` when this
    ///   is not rank 0, there is no worker rank, or a rank's service did not start.
    public init(
        workersPerRank: Int = 1, startMethod: StartMethod = .forkserver, maxTasksPerWorker: Int? = nil,
        retries: Int = 0, initializer: (any ProcessTarget)? = nil, memoryLimit: Int? = nil, forwardsLogs: Bool = true
    ) async throws {
        precondition(workersPerRank > 0, "an MPI pool needs at least one worker per rank")
        let world = try await MPIWorld.start()
        guard world.rank == 0 else {
            throw MPIPoolError(reason: .couldNotRun("an MPI pool is made on rank 0, not on rank \(world.rank)"))
        }
        let service = PoolService(
            workers: workersPerRank, startMethod: startMethod, maxTasksPerWorker: maxTasksPerWorker, retries: retries,
            initializer: try initializer.map { try EncodedRankTarget($0) }, memoryLimit: memoryLimit,
            forwardsLogs: forwardsLogs)
        // Every rank's service starts at once; each says `ready` once its local pool is up.
        let links = try await withThrowingTaskGroup(of: RankLink.self) { group in
            for rank in world.liveWorkerRanks {
                group.addTask {
                    let channel = try await world.start(service, on: rank)
                    guard let reply = try await channel.receive(PoolReply.self, timeout: .seconds(60)) else {
                        throw MPIPoolError(
                            rank: rank, reason: .couldNotRun("the rank's pool did not start within 60 s"))
                    }
                    guard case .ready = reply else {
                        throw MPIPoolError(
                            rank: rank, reason: .couldNotRun("the rank's pool answered \(reply) at start"))
                    }
                    return RankLink(rank: rank, channel: channel)
                }
            }
            var links: [RankLink] = []
            for try await link in group { links.append(link) }
            return links.sorted { $0.rank < $1.rank }
        }
        guard !links.isEmpty else { throw MPIPoolError(reason: .noRanks) }
        self.world = world
        self.workersPerRank = workersPerRank
        self.links = links
        receivers = links.map { link in Task { await link.receiveReplies() } }
    }

    /// The worker ranks still serving the pool.
    public var liveRanks: [Int] { links.filter { !$0.isGone }.map(\.rank) }

    // MARK: Calls

    /// Calls `function` on every input, on the worker ranks, and returns the outputs in input
    /// order.
    /// - Parameters:
    ///   - function: the function, a Codable value sent to the ranks with each request.
    ///   - inputs: the inputs.
    ///   - chunkSize: inputs per request to a rank; default: the inputs spread over four
    ///     requests per local worker.
    ///   - timeout: the longest one item may run; its local worker is then killed and
    ///     replaced, and the item fails.
    /// - Throws: ``MPIPoolError`` naming the first failed item (the lowest index);
    ///   `CancellationError` when the calling task is cancelled (the ranks end the items).
    public func map<Function: ProcessFunction>(
        _ function: Function, _ inputs: [Function.Input], chunkSize: Int? = nil, timeout: Duration? = nil
    ) async throws -> [Function.Output] {
        let results = try await run(function, inputs, chunkSize: chunkSize, timeout: timeout)
        return try results.map { try $0.get() }
    }

    /// Calls `function` on every input and returns one `Result` per input, in input order:
    /// the failures in place instead of thrown. A cancelled call fails its unfinished items
    /// with ``MPIPoolError/Reason/cancelled``.
    public func results<Function: ProcessFunction>(
        _ function: Function, _ inputs: [Function.Input], chunkSize: Int? = nil, timeout: Duration? = nil
    ) async -> [Result<Function.Output, MPIPoolError>] {
        await results(function, inputs, chunkSize: chunkSize, timeout: timeout, reportingTo: nil)
    }

    /// `results`, reporting to `progress` if there is one.
    func results<Function: ProcessFunction>(
        _ function: Function, _ inputs: [Function.Input], chunkSize: Int?, timeout: Duration?,
        reportingTo progress: PoolProgressReporter?
    ) async -> [Result<Function.Output, MPIPoolError>] {
        do {
            return try await run(function, inputs, chunkSize: chunkSize, timeout: timeout, progress: progress)
        } catch let error as MPIPoolError {
            return inputs.indices.map { .failure(MPIPoolError(index: $0, rank: error.rank, reason: error.reason)) }
        } catch {
            return inputs.indices.map { .failure(MPIPoolError(index: $0, reason: .cancelled)) }
        }
    }

    /// Calls `function` on one input on a worker rank.
    /// - Throws: ``MPIPoolError`` (index 0) if the item failed; `CancellationError`.
    public func apply<Function: ProcessFunction>(
        _ function: Function, _ input: Function.Input, timeout: Duration? = nil
    ) async throws -> Function.Output {
        try await map(function, [input], chunkSize: 1, timeout: timeout)[0]
    }

    /// Starts `function` on one input and returns a task to await or cancel (cancelling it
    /// ends the item on its rank).
    public func submit<Function: ProcessFunction>(
        _ function: Function, _ input: Function.Input, timeout: Duration? = nil
    ) -> Task<Function.Output, any Error> {
        Task { try await self.apply(function, input, timeout: timeout) }
    }

    // MARK: Dispatch

    /// The call's chunks go to the ranks as they free up: each rank has up to two requests
    /// per local worker in flight, so that its workers never wait for the network.
    func run<Function: ProcessFunction>(
        _ function: Function, _ inputs: [Function.Input], chunkSize: Int?, timeout: Duration?,
        progress: PoolProgressReporter? = nil
    ) async throws -> [Result<Function.Output, MPIPoolError>] {
        let (typeName, encodedFunction) = try beginCall(function)
        defer { endCall() }
        progress?.begin(total: inputs.count)
        defer { progress?.end() }
        guard !inputs.isEmpty else { return [] }
        let live = links.filter { !$0.isGone }
        guard !live.isEmpty else { throw MPIPoolError(reason: noRankReason) }
        let inFlight = 2 * workersPerRank
        // Inputs per request: the network's round trip (~100 µs through the engine) costs
        // more than a trivial item, so a request carries many items even at chunk size 1
        // (the chunk size is the rank's local pool's, which fails items one by one), up to
        // `maximumRequest`, and no more than spreads the call four requests deep over every
        // rank's senders: slow items stay balanced.
        let spread = inputs.count / (live.count * inFlight * 4)
        let size = max(chunkSize ?? 1, min(Self.maximumRequest, spread))
        let starts = Array(stride(from: 0, to: inputs.count, by: size))
        let cursor = ChunkCursor()
        var results = [Result<Function.Output, MPIPoolError>?](repeating: nil, count: inputs.count)
        try await withThrowingTaskGroup(of: [(Int, Result<Function.Output, MPIPoolError>)].self) { group in
            for link in live {
                for _ in 0..<inFlight {
                    group.addTask {
                        var done: [(Int, Result<Function.Output, MPIPoolError>)] = []
                        while !link.isGone {
                            let taken = cursor.next.add(1, ordering: .relaxed).oldValue
                            guard taken < starts.count else { break }
                            let start = starts[taken]
                            let range = start..<min(start + size, inputs.count)
                            let results = try await self.runChunk(
                                typeName: typeName, function: encodedFunction, chunk: Array(inputs[range]),
                                firstIndex: start, chunkSize: chunkSize, timeout: timeout, on: link,
                                outputs: Function.Output.self)
                            if let progress {
                                let failed = results.count { if case .failure = $0.1 { true } else { false } }
                                progress.record(succeeded: results.count - failed, failed: failed)
                            }
                            done += results
                        }
                        return done
                    }
                }
            }
            for try await done in group {
                for (index, result) in done { results[index] = result }
            }
        }
        // Chunks no rank could take (every rank was lost, or the pool was terminated):
        // failed, not forgotten.
        let leftover = noRankReason
        return results.enumerated().map { index, result in
            result ?? .failure(MPIPoolError(index: index, reason: leftover))
        }
    }

    /// One request: its items' results, or their failure with the rank when it was lost.
    func runChunk<Input: Codable & Sendable, Output: Codable & Sendable>(
        typeName: String, function: [UInt8], chunk: [Input], firstIndex: Int, chunkSize: Int?,
        timeout: Duration?, on link: RankLink, outputs: Output.Type
    ) async throws -> [(Int, Result<Output, MPIPoolError>)] {
        let range = firstIndex..<(firstIndex + chunk.count)
        let id = nextID.add(1, ordering: .relaxed).newValue
        let request = PoolRequest.run(
            id: id, typeName: typeName, function: function, inputs: try RankWire.encode(chunk),
            chunkSize: chunkSize, timeout: timeout)
        let reply: PoolReply
        do {
            reply = try await link.call(request, id: id)
        } catch is CancellationError {
            throw CancellationError()
        } catch let error as MPIPoolError {
            // The pool was terminated while the request ran.
            return range.map { ($0, .failure(MPIPoolError(index: $0, rank: link.rank, reason: error.reason))) }
        } catch {
            let silence: Duration?
            if case MPIError.rankLost(_, let silentFor) = error { silence = silentFor } else { silence = nil }
            return range.map {
                ($0, .failure(MPIPoolError(index: $0, rank: link.rank, reason: .rankLost(silentFor: silence))))
            }
        }
        switch reply {
        case .done(_, let bytes):
            let outcomes: PoolItemResults<Output>
            do {
                outcomes = try RankWire.decode(PoolItemResults<Output>.self, from: bytes)
                // Every item answered once, the failures in order: else nothing of it is trusted.
                let offsets = outcomes.failures.map(\.offset)
                guard outcomes.outputs.count + offsets.count == range.count,
                    zip(offsets, offsets.dropFirst()).allSatisfy({ $0 < $1 }),
                    offsets.allSatisfy({ (0..<range.count).contains($0) })
                else {
                    throw MPIPoolError(
                        reason: .couldNotRun(
                            "\(outcomes.outputs.count) outputs and \(offsets.count) failures for \(range.count) items"))
                }
            } catch {
                return range.map {
                    (
                        $0,
                        .failure(
                            MPIPoolError(
                                index: $0, rank: link.rank, reason: .couldNotRun("the reply did not decode: \(error)")))
                    )
                }
            }
            var results: [(Int, Result<Output, MPIPoolError>)] = []
            results.reserveCapacity(range.count)
            var failures = outcomes.failures.makeIterator()
            var nextFailure = failures.next()
            var outputs = outcomes.outputs.makeIterator()
            for (offset, index) in range.enumerated() {
                if let failure = nextFailure, failure.offset == offset {
                    let reason = MPIPoolError.Reason.item(failure.kind, failure.detail)
                    results.append((index, .failure(MPIPoolError(index: index, rank: link.rank, reason: reason))))
                    nextFailure = failures.next()
                } else if let output = outputs.next() {
                    results.append((index, .success(output)))
                }
            }
            return results
        case .refused(_, let reason):
            return range.map { ($0, .failure(MPIPoolError(index: $0, rank: link.rank, reason: .couldNotRun(reason)))) }
        case .ready, .logs:
            return range.map {
                (
                    $0,
                    .failure(
                        MPIPoolError(index: $0, rank: link.rank, reason: .couldNotRun("the rank answered out of turn")))
                )
            }
        }
    }
}

/// The next chunk of a call to hand out, shared by the call's senders.
private final class ChunkCursor: Sendable {
    let next = Atomic<Int>(0)
}

/// Runs `body` with an ``MPIPool`` on the job's worker ranks and always ends the ranks'
/// services afterwards: closed and joined when `body` returns, terminated (the items still
/// running ended) and joined when it throws, as `withProcessPool` does.
///
/// The parameters are those of ``MPIPool/init(workersPerRank:startMethod:maxTasksPerWorker:retries:initializer:memoryLimit:forwardsLogs:)``.
public func withMPIPool<Value>(
    workersPerRank: Int = 1, startMethod: StartMethod = .forkserver, maxTasksPerWorker: Int? = nil, retries: Int = 0,
    initializer: (any ProcessTarget)? = nil, memoryLimit: Int? = nil, forwardsLogs: Bool = true,
    _ body: (MPIPool) async throws -> Value
) async throws -> Value {
    let pool = try await MPIPool(
        workersPerRank: workersPerRank, startMethod: startMethod, maxTasksPerWorker: maxTasksPerWorker,
        retries: retries, initializer: initializer, memoryLimit: memoryLimit, forwardsLogs: forwardsLogs)
    do {
        let value = try await body(pool)
        pool.close()
        await pool.join()
        return value
    } catch {
        // Not a graceful close: the items `body` left running would be waited for.
        pool.terminate()
        await pool.join()
        throw error
    }
}
