import Dispatch
import Glibc
import Multiprocessing
import Testing

@testable import MultiprocessingMPI

/// Run under `mpirun -np 4` (Scripts/test.sh): rank 0 runs these tests, ranks 1-3 serve it.
/// Serialized: one test kills a rank, and the others use the ranks still alive.
@Suite(
    "MPI world under mpirun", .serialized, .timeLimit(.minutes(1)),
    .enabled(if: MPIWorld.isLaunchedByMPI, "needs mpirun: MPI/Scripts/test.sh"))
struct MPIWorldTests {
    @Test("a typed value goes to each worker rank and back")
    func typedRoundTrip() async throws {
        let world = try await MPIWorld.start()
        #expect(world.rank == 0)
        #expect(world.size >= 2)
        for rank in world.liveWorkerRanks {
            let channel = try await world.start(WhoAreYou(), on: rank)
            try await channel.send(Greeting(text: "hello", numbers: [1, 2, 3], ratio: 0.5))
            let answer = try await channel.receive(Greeting.self)
            #expect(answer == Greeting(text: "hello from \(rank)", numbers: [3, 2, 1], ratio: 0.5))
        }
    }

    @Test("a million doubles go to a rank and back, sent from and received into the arrays' own storage")
    func doublesRoundTrip() async throws {
        let world = try await MPIWorld.start()
        let rank = try #require(world.liveWorkerRanks.first)
        let values = (0..<1_000_000).map { Double($0) * 0.25 }
        let channel = try await world.start(EchoDoubles(rounds: 1), on: rank)
        AddressLog.start()
        try await channel.sendElements(values)
        let back = try await channel.receiveElements(of: Double.self)
        let log = AddressLog.stop()
        #expect(back == values)
        // The bytes MPI read are the array's own, and the array returned is the memory MPI
        // wrote: no copy on either side of the transport.
        let sentFrom = values.withUnsafeBytes { Int(bitPattern: $0.baseAddress) }
        let receivedInto = back.withUnsafeBytes { Int(bitPattern: $0.baseAddress) }
        #expect(log.sends.contains(sentFrom))
        #expect(log.receives.contains(receivedInto))
    }

    @Test("many tasks send to every rank at once, each gets its own answers")
    func concurrentTraffic() async throws {
        let world = try await MPIWorld.start()
        let ranks = world.liveWorkerRanks
        let rounds = 40
        try await withThrowingTaskGroup(of: Int.self) { group in
            for rank in ranks {
                for worker in 0..<4 {
                    group.addTask {
                        let channel = try await world.start(EchoBytes(rounds: rounds), on: rank)
                        for round in 0..<rounds {
                            let message = Array("rank \(rank) task \(worker) round \(round)".utf8)
                            try await channel.sendBytes(message)
                            let answer = try await channel.receiveBytes()
                            #expect(answer == message)
                        }
                        return rounds
                    }
                }
            }
            var total = 0
            for try await count in group { total += count }
            #expect(total == ranks.count * 4 * rounds)
        }
    }

    @Test("several tasks share one channel: every message is received once")
    func sharedChannel() async throws {
        let world = try await MPIWorld.start()
        let rank = try #require(world.liveWorkerRanks.last)
        let count = 64
        let channel = try await world.start(EchoBytes(rounds: count), on: rank)
        let received = try await withThrowingTaskGroup(of: [UInt8].self) { group in
            for index in 0..<count {
                group.addTask {
                    try await channel.sendBytes([UInt8(index)])
                    return try await channel.receiveBytes()
                }
            }
            var all: [[UInt8]] = []
            for try await bytes in group { all.append(bytes) }
            return all
        }
        #expect(Set(received.map { $0[0] }) == Set((0..<count).map(UInt8.init)))
    }

    @Test("a job whose type is not in the program is refused, naming the type and the rank")
    func unknownJobType() async throws {
        let world = try await MPIWorld.start()
        let rank = try #require(world.liveWorkerRanks.first)
        let channel = try await world.startJob(
            typeName: "9NoSuchJob4NopeV", readableTypeName: "NoSuchJob", payload: [], on: rank)
        do {
            _ = try await channel.receiveBytes(timeout: .seconds(30))
            Issue.record("the job was not refused")
        } catch MPIError.unknownJobType(let refusingRank, let typeName) {
            #expect(refusingRank == rank)
            #expect(typeName.contains("NoSuchJob"))
        }
    }

    @Test("a job whose bytes do not decode is refused, saying so")
    func undecodableJob() async throws {
        let world = try await MPIWorld.start()
        let rank = try #require(world.liveWorkerRanks.first)
        let name = try #require(_mangledTypeName(EchoBytes.self))
        let channel = try await world.startJob(
            typeName: name, readableTypeName: "EchoBytes", payload: [0xFF], on: rank)
        do {
            _ = try await channel.receiveBytes(timeout: .seconds(30))
            Issue.record("the job was not refused")
        } catch MPIError.jobFailed(let failedRank, let description) {
            #expect(failedRank == rank)
            #expect(description.contains("could not be decoded"))
        }
    }

    @Test("a job that throws fails its channel with the error's description")
    func jobThrows() async throws {
        let world = try await MPIWorld.start()
        let rank = try #require(world.liveWorkerRanks.first)
        let channel = try await world.start(Thrower(), on: rank)
        do {
            _ = try await channel.receiveBytes(timeout: .seconds(30))
            Issue.record("the failure was not reported")
        } catch MPIError.jobFailed(let failedRank, let description) {
            #expect(failedRank == rank)
            #expect(description.contains("the job threw on purpose"))
        }
    }

    @Test("a job that ends ends its channel, after the messages it sent")
    func jobEnds() async throws {
        let world = try await MPIWorld.start()
        let rank = try #require(world.liveWorkerRanks.first)
        let channel = try await world.start(Silent(), on: rank)
        await #expect(throws: MPIError.self) { _ = try await channel.receiveBytes(timeout: .seconds(30)) }
    }

    @Test("every wait has a timeout form that returns nil or false when nothing comes")
    func timeouts() async throws {
        let world = try await MPIWorld.start()
        let rank = try #require(world.liveWorkerRanks.first)
        let channel = try await world.start(WaitsOnce(), on: rank)
        #expect(try await channel.receiveBytes(timeout: .milliseconds(50)) == nil)
        #expect(try await channel.receiveElements(of: Double.self, timeout: .milliseconds(50)) == nil)
        #expect(try await channel.receive(Greeting.self, timeout: .milliseconds(50)) == nil)
        // A small send completes at once (eagerly buffered by the receiver's MPI).
        #expect(try await channel.sendBytes([1], timeout: .seconds(30)))
        #expect(try await channel.sendElements([1.0], timeout: .seconds(30)))
        #expect(try await channel.send("x", timeout: .seconds(30)))
    }

    @Test("the blocking forms work from a thread of its own, timeouts included")
    func blockingForms() async throws {
        let world = try await MPIWorld.start()
        let rank = try #require(world.liveWorkerRanks.first)
        let channel = try await world.start(EchoBytes(rounds: 2), on: rank)
        let outcome: Result<[[UInt8]?], any Error> = await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                continuation.resume(
                    with: .success(
                        Result {
                            let none = try channel.receiveBytes(timeout: .milliseconds(50))
                            try channel.sendBytes([1, 2, 3])
                            let echo = try channel.receiveBytes()
                            #expect(
                                try channel.send(Greeting(text: "t", numbers: [], ratio: nil), timeout: .seconds(30)))
                            let greeting = try channel.receive(Greeting.self, timeout: .seconds(30))
                            #expect(greeting?.text == "t")
                            return [none, echo]
                        }))
            }
        }
        #expect(try outcome.get() == [nil, [1, 2, 3]])
    }

    @Test("threads and tasks use the transport at once")
    func threadsAndTasks() async throws {
        let world = try await MPIWorld.start()
        let ranks = world.liveWorkerRanks
        let rounds = 20
        var channels: [RankChannel] = []
        for rank in ranks {
            for _ in 0..<2 { channels.append(try await world.start(EchoBytes(rounds: rounds), on: rank)) }
        }
        let done = try await withThrowingTaskGroup(of: Int.self) { group in
            for (index, channel) in channels.enumerated() {
                if index % 2 == 0 {
                    // A thread of its own, with the blocking forms.
                    group.addTask {
                        try await withCheckedThrowingContinuation { continuation in
                            DispatchQueue.global().async {
                                continuation.resume(
                                    with: Result {
                                        for round in 0..<rounds {
                                            try channel.sendBytes([UInt8(index), UInt8(round)])
                                            guard try channel.receiveBytes() == [UInt8(index), UInt8(round)] else {
                                                return 0
                                            }
                                        }
                                        return rounds
                                    })
                            }
                        }
                    }
                } else {
                    group.addTask {
                        for round in 0..<rounds {
                            try await channel.sendBytes([UInt8(index), UInt8(round)])
                            guard try await channel.receiveBytes() == [UInt8(index), UInt8(round)] else { return 0 }
                        }
                        return rounds
                    }
                }
            }
            var total = 0
            for try await count in group { total += count }
            return total
        }
        #expect(done == channels.count * rounds)
    }

    @Test("a large send that nobody receives gives up at its timeout")
    func unreceivedLargeSendTimesOut() async throws {
        let world = try await MPIWorld.start()
        let rank = try #require(world.liveWorkerRanks.first)
        let channel = try await world.start(Silent(), on: rank)
        // 8 MB: past the eager limit, so MPI waits for the receiver to match it (rendezvous).
        let values = [Double](repeating: 1, count: 1 << 20)
        #expect(try await channel.sendElements(values, timeout: .milliseconds(200)) == false)
    }

    @Test("a job on a worker rank runs local child processes and a pool (not taken for ranks)")
    func localProcessesOnRank() async throws {
        let world = try await MPIWorld.start()
        let rank = try #require(world.liveWorkerRanks.first)
        let channel = try await world.start(LocalProcesses(), on: rank)
        try await channel.send(7)
        let results = try await channel.receive([Int].self)
        #expect(results.prefix(3) == [49, 49, 64])
        #expect(results.last != Int(getpid()))
    }

    @Test("jobs, messages and failures leave no descriptor behind on rank 0")
    func noDescriptorLeak() async throws {
        let world = try await MPIWorld.start()
        let rank = try #require(world.liveWorkerRanks.first)
        func openDescriptors() -> Int {
            guard let directory = opendir("/proc/self/fd") else { return -1 }
            defer { closedir(directory) }
            var count = 0
            while readdir(directory) != nil { count += 1 }
            return count
        }
        // Once first: MPI may open what it needs on first use of a path.
        let warmUp = try await world.start(EchoBytes(rounds: 1), on: rank)
        try await warmUp.sendBytes([0])
        _ = try await warmUp.receiveBytes()
        let before = openDescriptors()
        for round in 0..<50 {
            let channel = try await world.start(EchoBytes(rounds: 1), on: rank)
            try await channel.sendBytes([UInt8(round)])
            #expect(try await channel.receiveBytes() == [UInt8(round)])
            let failing = try await world.start(Thrower(), on: rank)
            await #expect(throws: MPIError.self) { _ = try await failing.receiveBytes(timeout: .seconds(30)) }
        }
        #expect(openDescriptors() == before)
    }

    @Test("a cancelled receive stops waiting")
    func cancelledReceive() async throws {
        let world = try await MPIWorld.start()
        let rank = try #require(world.liveWorkerRanks.first)
        let channel = try await world.start(WaitsOnce(), on: rank)
        let waiting = Task { try await channel.receiveBytes() }
        waiting.cancel()
        await #expect(throws: CancellationError.self) { _ = try await waiting.value }
        try await channel.sendBytes([])  // lets the job end
    }

    @Test("a handle that only makes sense on one machine is refused when sent to another rank")
    func oneMachineHandlesRefused() async throws {
        let world = try await MPIWorld.start()
        let rank = try #require(world.liveWorkerRanks.first)
        let channel = try await world.start(WaitsOnce(), on: rank)
        let (end, other) = try Connection<Int>.pair()
        let shared = try SharedValue<Int>(7)
        let queue = try Queue<Int>()
        let lock = try ProcessLock()
        let memory = try SharedMemory(creating: nil, size: 4096)
        defer {
            end.close()
            other.close()
            queue.close()
            // Named memory is unlinked here: at the job's end mpirun kills each rank's process
            // tree, the library's segment watcher included, before it could clean up.
            try? memory.unlink()
        }
        try await expectRefused("Connection") { try await channel.send(HoldsConnection(connection: end)) }
        try await expectRefused("SharedValue") { try await channel.send(shared) }
        try await expectRefused("Queue") { try await channel.send(queue) }
        try await expectRefused("ProcessLock") { try await channel.send(lock) }
        try await expectRefused("SharedMemory") { try await channel.send(memory) }
        #expect(!end.isClosed, "a refused connection end stays with its owner")
        // A job holding a handle is refused before it leaves.
        await #expect(throws: MPIError.self) { _ = try await world.start(JobWithQueue(queue: queue), on: rank) }
        try await channel.sendBytes([])  // lets the job end
    }

    @Test(
        "a rank killed by SIGKILL is found lost within the bound, named, and the others still serve",
        .enabled(if: (MPIWorld.launchedSize ?? 0) >= 3, "needs at least 3 ranks"))
    func rankKilled() async throws {
        let world = try await MPIWorld.start()
        let live = world.liveWorkerRanks
        try #require(live.count >= 2, "needs at least 3 ranks")
        let victim = live.last!
        let events = world.lostRankEvents()
        let channel = try await world.start(KillOwnRank(), on: victim)
        #expect(try await channel.receive(String.self) == "about to die")
        do {
            _ = try await channel.receiveBytes(timeout: .seconds(40))
            Issue.record("no error from the killed rank")
        } catch MPIError.rankLost(let rank, let silentFor) {
            #expect(rank == victim)
            #expect(silentFor >= world.liveness.lostAfter)
        }
        // The stream also gives ranks lost before it was made (the pool's test kills one).
        var iterator = events.makeAsyncIterator()
        var lost = await iterator.next()
        while let event = lost, event.rank != victim { lost = await iterator.next() }
        #expect(lost?.rank == victim)
        #expect(world.lostRanks[victim] != nil)
        #expect(!world.liveWorkerRanks.contains(victim))
        // Starting a job on it is refused, naming it.
        await #expect(throws: MPIError.self) { _ = try await world.start(Silent(), on: victim) }
        // The others still serve.
        for rank in world.liveWorkerRanks {
            let echo = try await world.start(EchoBytes(rounds: 1), on: rank)
            try await echo.sendBytes([42])
            #expect(try await echo.receiveBytes() == [42])
        }
    }
}

/// Expects `send` to throw ``MPIError/notSendableToAnotherRank``, saying so in words.
func expectRefused(_ name: String, _ send: () async throws -> Void) async throws {
    do {
        try await send()
        Issue.record("\(name) was sent to another rank")
    } catch let error as MPIError {
        guard case .notSendableToAnotherRank = error else {
            Issue.record("\(name): \(error)")
            return
        }
        #expect(error.description.contains("cannot be sent to another rank"), "\(name): \(error)")
    }
}

struct HoldsConnection: Codable, Sendable {
    var connection: Connection<Int>
}

struct JobWithQueue: RankJob {
    var queue: Queue<Int>
    func run(channel: RankChannel) async throws {}
}

@Suite("MPI world without mpirun")
struct NoLauncherTests {
    @Test("with no rank in the environment, starting the world says the program was not started by mpirun")
    func notUnderMPIRun() async throws {
        do {
            _ = try await MPIWorld.start(liveness: Liveness(), rank: -1)
            Issue.record("the world started without a launcher")
        } catch let error as MPIError {
            guard case .notStartedByMPIRun = error else {
                Issue.record("unexpected: \(error)")
                return
            }
            #expect(error.description.contains("not started by mpirun"))
        }
    }

    @Test("errors read as sentences naming the rank")
    func descriptions() {
        #expect(MPIError.rankLost(rank: 3, silentFor: .seconds(2)).description.contains("rank 3"))
        #expect(MPIError.unknownJobType(rank: 2, typeName: "X").description.contains("rank 2"))
    }
}
