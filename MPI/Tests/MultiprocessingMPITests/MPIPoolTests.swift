import Glibc
import Multiprocessing
import Synchronization
import Testing

@testable import MultiprocessingMPI

/// The pool over MPI ranks, run with the other tests under `mpirun -np 4` (Scripts/test.sh).
/// An extension of the serialized MPI suite: one of these tests kills a rank, as one of those does.
extension MPIWorldTests {
    @Test("the seed's Pool example on the ranks: map gives the outputs in input order")
    func seedExample() async throws {
        let squares = try await withMPIPool { pool async throws in
            try await pool.map(RankSquare(), [1, 2, 3, 4, 5])
        }
        #expect(squares == [1, 4, 9, 16, 25])
    }

    @Test("a long map is spread over every live rank and keeps its order, at chunk size 1 and automatic")
    func spreadAndOrder() async throws {
        try await withMPIPool { pool async throws in
            let ranks = pool.liveRanks
            for chunkSize in [1, nil] as [Int?] {
                let inputs = Array(0..<300)
                let outputs = try await pool.map(WhereRun(napMicroseconds: 2_000), inputs, chunkSize: chunkSize)
                #expect(outputs.map(\.value) == inputs.map { $0 * 3 })
                #expect(Set(outputs.map(\.rank)) == Set(ranks), "chunk size \(String(describing: chunkSize))")
            }
        }
    }

    @Test("an error thrown by the function fails that item, named with its rank; map throws the first")
    func functionErrors() async throws {
        try await withMPIPool { pool async throws in
            do {
                _ = try await pool.map(FailOn(indices: [7, 12]), Array(0..<20), chunkSize: 1)
                Issue.record("map did not throw")
            } catch let error as MPIPoolError {
                #expect(error.index == 7)
                #expect(error.rank.map { pool.liveRanks.contains($0) } == true)
                guard case .item(.threw, let detail) = error.reason else {
                    Issue.record("reason: \(error.reason)")
                    return
                }
                #expect(detail.contains("refused 7"), "\(detail)")
                #expect(error.description.hasPrefix("item 7 failed on rank "), "\(error)")
            }
            let results = await pool.results(FailOn(indices: [7, 12]), Array(0..<20), chunkSize: 3)
            for (index, result) in results.enumerated() {
                switch result {
                case .success(let value): #expect(value == index && ![7, 12].contains(index))
                case .failure(let error): #expect([7, 12].contains(index) && error.index == index, "\(error)")
                }
            }
        }
    }

    @Test("an item that crashes its local worker fails alone; the rank goes on with a new worker")
    func crashIsolated() async throws {
        try await withMPIPool { pool async throws in
            let results = await pool.results(CrashOn(index: 5), Array(0..<30), chunkSize: 4)
            for (index, result) in results.enumerated() {
                if index == 5 {
                    guard case .failure(let error) = result, case .item(.workerEnded, let detail) = error.reason else {
                        Issue.record("item 5: \(result)")
                        continue
                    }
                    #expect(detail.contains("SIGKILL"), "\(detail)")
                } else {
                    #expect((try? result.get()) == index, "item \(index): \(result)")
                }
            }
            #expect(try await pool.map(RankSquare(), [6, 7]) == [36, 49])
        }
    }

    @Test("a per-item timeout fails the item that overran, and the others finish")
    func itemTimeout() async throws {
        try await withMPIPool { pool async throws in
            let results = await pool.results(SleepOn(index: 2), Array(0..<6), chunkSize: 1, timeout: .milliseconds(500))
            for (index, result) in results.enumerated() {
                if index == 2 {
                    guard case .failure(let error) = result, case .item(.timedOut, _) = error.reason else {
                        Issue.record("item 2: \(result)")
                        continue
                    }
                } else {
                    #expect((try? result.get()) == index, "item \(index): \(result)")
                }
            }
        }
    }

    @Test("cancelling the task that awaits an item ends it on its rank; the pool goes on")
    func cancellation() async throws {
        try await withMPIPool { pool async throws in
            let task = pool.submit(SleepOn(index: 0), 0)
            try await Task.sleep(for: .milliseconds(300))
            task.cancel()
            await #expect(throws: CancellationError.self) { _ = try await task.value }
            #expect(try await pool.apply(RankSquare(), 9) == 81)
        }
    }

    @Test("several tasks map over one pool at once, each gets its own outputs")
    func concurrentCalls() async throws {
        try await withMPIPool { pool async throws in
            try await withThrowingTaskGroup(of: Void.self) { group in
                for call in 0..<6 {
                    group.addTask {
                        let inputs = Array((call * 100)..<(call * 100 + 50))
                        let outputs = try await pool.map(RankSquare(), inputs, chunkSize: call % 2 == 0 ? 1 : nil)
                        #expect(outputs == inputs.map { $0 * $0 })
                        #expect(try await pool.apply(RankSquare(), call) == call * call)
                    }
                }
                try await group.waitForAll()
            }
        }
    }

    @Test("an input holding a one-machine handle is refused before anything is sent")
    func handleRefused() async throws {
        try await withMPIPool { pool async throws in
            let queue = try Queue<Int>()
            try await expectRefused("a Queue in a pool input") {
                _ = try await pool.map(QueueLength(), [HoldsQueue(queue: queue)])
            }
        }
    }

    @Test("an ordered stream gives every output in input order; an unordered one gives each once")
    func streams() async throws {
        try await withMPIPool { pool async throws in
            var ordered: [Int] = []
            for try await output in pool.mapStream(WhereRun(napMicroseconds: 300), 0..<400, chunkSize: 2) {
                ordered.append(output.value)
            }
            #expect(ordered == (0..<400).map { $0 * 3 })
            var unordered: [Int] = []
            for try await output in pool.mapUnordered(RankSquare(), 0..<300) { unordered.append(output) }
            #expect(unordered.sorted() == (0..<300).map { $0 * $0 })
        }
    }

    @Test("a stream ends with the first failed item's error, after the outputs before it")
    func streamFailure() async throws {
        try await withMPIPool { pool async throws in
            var seen: [Int] = []
            do {
                for try await output in pool.mapStream(FailOn(indices: [37]), 0..<100) { seen.append(output) }
                Issue.record("the stream did not throw")
            } catch let error as MPIPoolError {
                #expect(error.index == 37, "\(error)")
                #expect(seen == Array(0..<37))
            }
            #expect(try await pool.apply(RankSquare(), 4) == 16)
        }
    }

    @Test(
        "a stream pulls its inputs (a Sequence or an AsyncSequence) only as fast as the ranks take them, and a dropped one stops"
    )
    func streamBoundedMemory() async throws {
        try await withMPIPool { pool async throws in
            let pulled = PullCounter()
            try await expectBoundedPulling(
                pool.mapStream(RankSquare(), CountingInputs(counter: pulled, limit: 1_000_000)), pulled: pulled)
            // The same over an AsyncSequence.
            let pulledAsync = PullCounter()
            try await expectBoundedPulling(
                pool.mapStream(RankSquare(), AsyncInputs(counter: pulledAsync, limit: 1_000_000)), pulled: pulledAsync)
        }
    }

    /// Takes 20 outputs of `stream` and drops it: its inputs were pulled only a little ahead
    /// of the outputs taken, and no more are pulled once it is dropped.
    func expectBoundedPulling<Outputs: AsyncSequence>(_ stream: Outputs, pulled: PullCounter) async throws {
        var taken = 0
        for try await _ in stream {
            taken += 1
            if taken == 20 { break }
        }
        // Taken, buffered (2 requests of 1 per rank), in flight (2 per rank): well under 100.
        #expect(pulled.count < 100, "\(pulled.count) inputs pulled for 20 outputs")
        try await Task.sleep(for: .milliseconds(200))
        let after = pulled.count
        try await Task.sleep(for: .milliseconds(300))
        #expect(pulled.count == after, "the dropped stream went on pulling")
    }

    @Test(
        "a rank killed in the middle of a map fails the items it held, naming it; the others finish",
        .enabled(if: (MPIWorld.launchedSize ?? 0) >= 4, "needs at least 4 ranks"))
    func poolRankKilled() async throws {
        try await withMPIPool(startMethod: .spawn) { pool async throws in
            let before = pool.liveRanks
            try #require(before.count >= 2, "needs two live worker ranks")
            let victim = before[0]
            let results = await pool.results(
                KillRankOn(index: 10, rank: victim, napMicroseconds: 5_000), Array(0..<60), chunkSize: 1)
            var lost: [Int] = []
            for (index, result) in results.enumerated() {
                switch result {
                case .success(let value): #expect(value == index)
                case .failure(let error):
                    guard case .rankLost = error.reason else {
                        Issue.record("item \(index): \(error)")
                        continue
                    }
                    #expect(error.rank == victim, "\(error)")
                    #expect(error.description.contains("rank \(victim) was lost"), "\(error)")
                    lost.append(index)
                }
            }
            // The victim dies at the first item of 10 or more it takes: that item failed naming
            // it, and so did any other it held (one sent ahead may be below 10).
            #expect(lost.contains { $0 >= 10 } && lost.count <= 4, "\(lost)")
            #expect(!pool.liveRanks.contains(victim))
            // What is left still serves.
            #expect(try await pool.map(RankSquare(), [2, 3]) == [4, 9])
        }
    }
}

struct RankSquare: ProcessFunction {
    func callAsFunction(_ input: Int) -> Int { input * input }
}

/// The rank the item ran on (a local worker inherits its rank's environment).
struct WhereRun: ProcessFunction {
    var napMicroseconds: UInt32
    struct Output: Codable, Sendable {
        var value: Int
        var rank: Int
    }
    func callAsFunction(_ input: Int) -> Output {
        usleep(napMicroseconds)
        return Output(value: input * 3, rank: Int(String(cString: getenv("OMPI_COMM_WORLD_RANK"))) ?? -1)
    }
}

struct Refused: Error, Codable {
    var input: Int
}

struct FailOn: ProcessFunction {
    var indices: [Int]
    func callAsFunction(_ input: Int) throws -> Int {
        if indices.contains(input) { throw Refused(input: input) }
        return input
    }
}

extension Refused: CustomStringConvertible {
    var description: String { "refused \(input)" }
}

struct CrashOn: ProcessFunction {
    var index: Int
    func callAsFunction(_ input: Int) -> Int {
        if input == index { kill(getpid(), SIGKILL) }
        return input
    }
}

struct SleepOn: ProcessFunction {
    var index: Int
    func callAsFunction(_ input: Int) async throws -> Int {
        if input == index { try await Task.sleep(for: .seconds(3600)) }
        return input
    }
}

/// Kills its rank (the local worker's parent, started with `.spawn`) at `index`, on `rank` only.
struct KillRankOn: ProcessFunction {
    var index: Int
    var rank: Int
    var napMicroseconds: UInt32
    func callAsFunction(_ input: Int) -> Int {
        let here = Int(String(cString: getenv("OMPI_COMM_WORLD_RANK"))) ?? -1
        if input >= index && here == rank { kill(getppid(), SIGKILL) }
        usleep(napMicroseconds)
        return input
    }
}

struct HoldsQueue: Codable, Sendable {
    var queue: Queue<Int>
}

struct QueueLength: ProcessFunction {
    func callAsFunction(_ input: HoldsQueue) -> Int { 0 }
}

/// How many inputs a ``CountingInputs`` gave.
final class PullCounter: Sendable {
    private let pulled = Atomic<Int>(0)
    var count: Int { pulled.load(ordering: .relaxed) }
    func add() { pulled.add(1, ordering: .relaxed) }
}

/// 0, 1, 2, ... up to `limit`, counting each one pulled.
struct CountingInputs: Sequence, Sendable {
    let counter: PullCounter
    let limit: Int
    func makeIterator() -> Iterator { Iterator(counter: counter, limit: limit) }
    struct Iterator: IteratorProtocol {
        let counter: PullCounter
        let limit: Int
        var position = 0
        mutating func next() -> Int? {
            guard position < limit else { return nil }
            counter.add()
            defer { position += 1 }
            return position
        }
    }
}
