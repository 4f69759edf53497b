import CMPIBootstrap
import Dispatch
import Glibc
import Multiprocessing

/// A worker rank's life, entered from the bootstrap constructor before `main`: initialize
/// MPI, run the jobs rank 0 starts until it says stop (or is lost), finalize, exit.
@_cdecl("mpi_swift_rank_main")
func rankMain(_ rank: Int32) {
    // The local pool an MPIPool with default settings uses (see ``RankLocalPool``), started
    // first: its fork server's exec and first worker (tens of milliseconds) then overlap
    // MPI_Init, which every rank runs at once with rank 0's, instead of following it.
    // Started before MPI_Init, the pool's processes are never forks of an MPI process.
    RankLocalPool.prepare()
    let engine: Engine
    do {
        engine = try Engine.startBlocking(liveness: .fromEnvironment)
    } catch {
        printToStandardError("swift-multiprocessing-mpi: rank \(rank) could not start MPI: \(error)")
        _exit(71)
    }
    let world = MPIWorld.install(engine: engine)
    WorkerRank(world: world).serve()
    // Bounded, as rank 0's: MPI_Finalize waits for every rank the runtime still counts, and
    // one that died a moment ago (a CI run: a rank killed by the last test, rank 0 exiting
    // right after) held this rank in MPI_Finalize after rank 0 had given up and exited, so
    // mpirun never ended.
    let bound = engine.liveness.lostAfter + .seconds(10)
    do {
        if try !engine.shutDown(timeout: bound) {
            printToStandardError(
                "swift-multiprocessing-mpi: rank \(rank): MPI_Finalize did not complete within \(bound); exiting without it"
            )
            fflush(nil)
            _exit(0)
        }
    } catch {
        printToStandardError("swift-multiprocessing-mpi: rank \(rank): \(error)")
    }
    fflush(nil)
    exit(0)
}

/// The worker rank's service: rank 0's orders, one at a time, on this thread; each job on a
/// task of its own.
struct WorkerRank {
    let world: MPIWorld

    func serve() {
        let engine = world.engine
        while true {
            let sink = ElementSink<UInt8>()
            do {
                _ = try engine.receiveBlocking(from: 0, tag: ReservedTag.control, into: sink)
            } catch {
                // Rank 0 is lost (or MPI failed): nothing more will come.
                printToStandardError("swift-multiprocessing-mpi: rank \(world.rank) stops: \(error)")
                return
            }
            let order: ControlMessage
            do {
                order = try RankWire.decode(ControlMessage.self, from: sink.elements)
            } catch {
                printToStandardError("swift-multiprocessing-mpi: rank \(world.rank) got a bad order: \(error)")
                continue
            }
            switch order {
            case .stop:
                return
            case .start(let tag, let typeName, let readableTypeName, let payload):
                let channel = RankChannel(engine: engine, peer: 0, tag: tag)
                let rank = world.rank
                Task.detached {
                    let failure = await Self.run(
                        typeName: typeName, readableTypeName: readableTypeName, payload: payload, channel: channel)
                    let report = ControlMessage.jobEnded(
                        rank: rank, tag: tag, messagesSent: channel.counter.value, failure: failure)
                    if let bytes = try? RankWire.encode(report), let payload = try? SendPayload(bytes) {
                        _ = try? await engine.send(payload, to: 0, tag: ReservedTag.control)
                    }
                }
            case .jobEnded:
                continue  // only rank 0 receives these
            }
        }
    }

    /// Finds the job's type in this program, decodes and runs it; what went wrong, if anything.
    private static func run(
        typeName: String, readableTypeName: String, payload: [UInt8], channel: RankChannel
    ) async -> JobFailure? {
        guard let type = _typeByName(typeName) as? any RankJob.Type else {
            return .unknownType("\(readableTypeName) (mangled name \(typeName))")
        }
        do {
            try await run(type, payload: payload, channel: channel)
            return nil
        } catch {
            return .failed(String(describing: error))
        }
    }

    private static func run<Job: RankJob>(_ type: Job.Type, payload: [UInt8], channel: RankChannel) async throws {
        let job: Job
        do {
            job = try RankWire.decode(Job.self, from: payload)
        } catch {
            throw MPIError.jobFailed(
                rank: channel.engine.rank, description: "\(Job.self) could not be decoded: \(error)")
        }
        try await job.run(channel: channel)
    }
}
