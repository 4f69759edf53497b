import CMPIBootstrap
import Glibc
import Synchronization

/// The ranks of an MPI job (`MPI_COMM_WORLD`) as this process sees them.
///
/// Launched with `mpirun -np N program`, rank 0 runs `main` and the program; ranks above 0
/// never reach `main`: the package catches them before it and they serve rank 0, running the
/// ``RankJob``s it starts. Rank 0 gets the world with ``start(liveness:)``:
///
/// ```swift
/// let world = try await MPIWorld.start()
/// for rank in world.workerRanks {
///     let channel = try await world.start(Echo(), on: rank)
///     try await channel.send("hello")
/// }
/// ```
///
/// One thread of the package makes every MPI call; errors come back as thrown ``MPIError``s,
/// never as an abort. A worker rank that dies is found by its silence (see ``Liveness``).
/// When rank 0's program exits, the worker ranks are told to stop and MPI is finalized.
public final class MPIWorld: Sendable {
    /// This process's rank.
    public let rank: Int
    /// The number of ranks.
    public let size: Int
    let engine: Engine
    private let nextTag: Atomic<Int32>

    private init(engine: Engine) {
        self.engine = engine
        rank = engine.rank
        size = engine.size
        nextTag = Atomic(ReservedTag.firstFree)
    }

    /// The ranks that serve rank 0: `1..<size`.
    public var workerRanks: Range<Int> { 1..<max(1, size) }

    /// The ranks declared lost so far, with how long each had been silent.
    public var lostRanks: [Int: Duration] { engine.mailbox.lostRanks }

    /// The worker ranks not lost (so far).
    public var liveWorkerRanks: [Int] {
        let lost = lostRanks
        return workerRanks.filter { lost[$0] == nil }
    }

    /// The ranks lost from now on (after those already lost); ends when MPI is finalized.
    public func lostRankEvents() -> AsyncStream<LostRank> { engine.mailbox.lostRankStream() }

    /// How this world's ranks watch each other.
    public var liveness: Liveness { engine.liveness }

    /// True when a launcher (`mpirun`, `srun`) started this process as a rank.
    public static var isLaunchedByMPI: Bool { mpi_bootstrap_rank() >= 0 }

    /// The number of ranks the launcher announced in the environment, before MPI is
    /// initialized; nil if it said nothing.
    public static var launchedSize: Int? {
        let size = mpi_bootstrap_world_size()
        return size >= 0 ? Int(size) : nil
    }

    // MARK: Starting

    private enum State {
        case idle
        case starting(Task<MPIWorld, any Error>)
        case started(MPIWorld)
    }

    private static let state = Mutex<State>(.idle)

    /// The world, MPI initialized on first use (on rank 0; a worker rank's world exists
    /// before its jobs run). `liveness` applies on the first call only.
    ///
    /// Throws ``MPIError/notStartedByMPIRun`` when no launcher started this process.
    public static func start(liveness: Liveness = .fromEnvironment) async throws -> MPIWorld {
        try await start(liveness: liveness, rank: Int(mpi_bootstrap_rank()))
    }

    /// ``start(liveness:)`` with the rank found in the environment passed in (-1: none).
    static func start(liveness: Liveness, rank: Int) async throws -> MPIWorld {
        guard rank >= 0 else { throw MPIError.notStartedByMPIRun }
        // The started world without a task (the common case); a task to await otherwise.
        let (found, task): (MPIWorld?, Task<MPIWorld, any Error>?) = state.withLock { state in
            switch state {
            case .started(let world): return (world, nil)
            case .starting(let task): return (nil, task)
            case .idle:
                let task = Task<MPIWorld, any Error> {
                    let world = MPIWorld(engine: try await Engine.start(liveness: liveness))
                    world.startControlService()
                    Self.state.withLock { $0 = .started(world) }
                    return world
                }
                state = .starting(task)
                return (nil, task)
            }
        }
        if let found { return found }
        return try await task!.value
    }

    /// Installs a worker rank's world (before `main`, on the worker's bootstrap).
    static func install(engine: Engine) -> MPIWorld {
        let world = MPIWorld(engine: engine)
        state.withLock { $0 = .started(world) }
        return world
    }

    /// The world if it has been started.
    static var current: MPIWorld? {
        state.withLock { if case .started(let world) = $0 { world } else { nil } }
    }

    // MARK: Jobs

    /// Starts `job` on worker rank `rank` and returns the channel to it. Only on rank 0.
    ///
    /// A job holding a one-machine handle is refused with
    /// ``MPIError/notSendableToAnotherRank(type:codingPath:reason:)``.
    public func start<Job: RankJob>(_ job: Job, on rank: Int) async throws -> RankChannel {
        guard let name = _mangledTypeName(Job.self) else {
            throw MPIError.jobFailed(rank: rank, description: "\(String(reflecting: Job.self)) has no mangled name")
        }
        return try await startJob(
            typeName: name, readableTypeName: String(reflecting: Job.self), payload: try RankWire.encode(job), on: rank)
    }

    /// Starts the job of the type whose mangled name is `typeName`, decoded on rank `rank`
    /// from `payload` (the value on the library's binary wire). Only on rank 0. If the type
    /// is not in the worker's program, receives on the channel throw
    /// ``MPIError/unknownJobType(rank:typeName:)``.
    public func startJob(
        typeName: String, readableTypeName: String, payload: [UInt8], on rank: Int
    ) async throws -> RankChannel {
        guard self.rank == 0 else { throw MPIError.wrongRank(operation: "starting a job", rank: self.rank) }
        guard workerRanks.contains(rank) else { throw MPIError.invalidRank(rank, worldSize: size) }
        if let silentFor = lostRanks[rank] { throw MPIError.rankLost(rank: rank, silentFor: silentFor) }
        let tag = allocateTag()
        let order = ControlMessage.start(
            tag: tag, typeName: typeName, readableTypeName: readableTypeName, payload: payload)
        _ = try await engine.send(SendPayload(try RankWire.encode(order)), to: rank, tag: ReservedTag.control)
        return RankChannel(engine: engine, peer: rank, tag: tag)
    }

    /// A fresh tag for a job's channel; tags are reused after MPI's upper bound (a channel
    /// is identified by rank and tag, and a job that old has long ended).
    private func allocateTag() -> Int32 {
        while true {
            let tag = nextTag.wrappingAdd(1, ordering: .relaxed).oldValue
            if tag >= ReservedTag.firstFree && tag <= engine.tagUpperBound { return tag }
            _ = nextTag.compareExchange(
                expected: tag &+ 1, desired: ReservedTag.firstFree, ordering: .relaxed)
        }
    }

    // MARK: Rank 0's side of the control channel

    /// Receives the worker ranks' reports (a job ended) until MPI is finalized.
    private func startControlService() {
        let engine = engine
        Task.detached {
            while true {
                let sink = ElementSink<UInt8>()
                do {
                    _ = try await engine.receive(from: nil, tag: ReservedTag.control, into: sink)
                } catch {
                    return  // shut down
                }
                guard
                    case .jobEnded(let rank, let tag, let count, let failure)? =
                        try? RankWire.decode(ControlMessage.self, from: sink.elements)
                else { continue }
                engine.endChannel(
                    source: rank, tag: tag, afterMessages: count,
                    error: failure?.error(rank: rank) ?? .jobEnded(rank: rank))
            }
        }
    }

    /// At rank 0's exit: tells the worker ranks to stop, then finalizes MPI. Starts the
    /// world first if the program never did, so that the worker ranks (waiting in MPI_Init)
    /// are released and the job ends cleanly.
    static func finishRankZero() {
        let engine: Engine
        switch state.withLock({ $0 }) {
        case .started(let world):
            engine = world.engine
        case .starting:
            return  // MPI is being initialized by a task that exit overtook: it cannot be finished here
        case .idle:
            guard let started = try? Engine.startBlocking(liveness: .fromEnvironment) else { return }
            engine = started
        }
        let stop = try? RankWire.encode(ControlMessage.stop)
        let lost = engine.mailbox.lostRanks
        let deadline = ContinuousClock.now + .seconds(2)
        for rank in 1..<max(1, engine.size) where lost[rank] == nil {
            if let stop, let payload = try? SendPayload(stop) {
                _ = try? engine.sendBlocking(payload, to: rank, tag: ReservedTag.control, deadline: deadline)
            }
        }
        // Bounded: MPI_Finalize waits for every live rank to finalize too, and a rank that is
        // alive but frozen (not yet declared lost) would hold rank 0's exit forever.
        let bound = engine.liveness.lostAfter + .seconds(10)
        do {
            if try !engine.shutDown(timeout: bound) {
                printToStandardError(
                    "swift-multiprocessing-mpi: MPI_Finalize did not complete within \(bound); exiting without it")
            }
        } catch {
            printToStandardError("swift-multiprocessing-mpi: \(error)")
        }
    }
}

/// Rank 0's exit hook, registered by the bootstrap constructor.
@_cdecl("mpi_swift_rank_zero_exit")
func rankZeroExit() {
    MPIWorld.finishRankZero()
}

/// Writes a line to standard error (no Foundation).
func printToStandardError(_ line: String) {
    var text = line
    text += "\n"
    text.withUTF8 { bytes in _ = write(2, bytes.baseAddress, bytes.count) }
}
