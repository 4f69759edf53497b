import Glibc
import Logging
import Multiprocessing
import Synchronization
import Testing

@testable import MultiprocessingMPI

/// What a program written against `ProcessPool` also calls on an ``MPIPool``: streams over an
/// `AsyncSequence`, progress, an initializer, `terminate` and `join`. An extension of the
/// serialized MPI suite, run under `mpirun -np 4` (Scripts/test.sh).
extension MPIWorldTests {
    @Test("a stream over an AsyncSequence gives every output, in order or as done")
    func asyncStreams() async throws {
        try await withMPIPool { pool async throws in
            var ordered: [Int] = []
            let inputs = AsyncInputs(counter: PullCounter(), limit: 300)
            for try await output in pool.mapStream(WhereRun(napMicroseconds: 300), inputs, chunkSize: 3) {
                ordered.append(output.value)
            }
            #expect(ordered == (0..<300).map { $0 * 3 })
            var unordered: [Int] = []
            for try await output in pool.mapUnordered(RankSquare(), AsyncInputs(counter: PullCounter(), limit: 200)) {
                unordered.append(output)
            }
            #expect(unordered.sorted() == (0..<200).map { $0 * $0 })
        }
    }

    @Test("an AsyncSequence that throws ends the stream with its error, after the items pulled before it")
    func asyncInputsThrow() async throws {
        try await withMPIPool { pool async throws in
            for ordered in [true, false] {
                // Throws after 30 elements: with requests of 4, the last request holds 2.
                let inputs = AsyncInputs(counter: PullCounter(), limit: 1_000, failAt: 30)
                let stream =
                    ordered
                    ? pool.mapStream(RankSquare(), inputs, chunkSize: 4)
                    : pool.mapUnordered(RankSquare(), inputs, chunkSize: 4)
                var seen: [Int] = []
                do {
                    for try await output in stream { seen.append(output) }
                    Issue.record("the stream did not throw (ordered: \(ordered))")
                } catch let error as InputsFailed {
                    #expect(error.position == 30)
                }
                let expected = (0..<30).map { $0 * $0 }
                #expect((ordered ? seen : seen.sorted()) == expected, "ordered: \(ordered)")
            }
            #expect(try await pool.apply(RankSquare(), 5) == 25)
        }
    }

    @Test("a map's progress rises to the total over the ranks; the last report is final and counts every item")
    func mapProgress() async throws {
        try await withMPIPool { pool async throws in
            let seen = Mutex<[PoolProgress]>([])
            // Interval zero: every request answered is an update.
            let reporter = PoolProgressReporter(interval: .zero) { update in seen.withLock { $0.append(update) } }
            let outputs = try await pool.map(WhereRun(napMicroseconds: 1_000), Array(0..<300), progress: reporter)
            #expect(outputs.map(\.value) == (0..<300).map { $0 * 3 })
            #expect(Set(outputs.map(\.rank)) == Set(pool.liveRanks))
            let updates = seen.withLock { $0 }
            #expect(updates.allSatisfy { $0.total == 300 && $0.failed == 0 })
            #expect(zip(updates, updates.dropFirst()).allSatisfy { $0.completed <= $1.completed }, "\(updates)")
            #expect(updates.contains { $0.completed > 0 && $0.completed < 300 }, "no report between the first and last")
            let last = try #require(updates.last)
            #expect(last.isFinished && last.completed == 300, "\(last)")
            #expect(updates.dropLast().allSatisfy { !$0.isFinished })

            // The closure form, and failures counted.
            let final = Mutex<PoolProgress?>(nil)
            let results = await pool.results(FailOn(indices: [3, 40]), Array(0..<50), chunkSize: 2) { update in
                final.withLock { $0 = update }
            }
            #expect(results.count { (try? $0.get()) == nil } == 2)
            let ended = try #require(final.withLock { $0 })
            #expect(ended.isFinished && ended.completed == 50 && ended.failed == 2 && ended.total == 50, "\(ended)")
        }
    }

    @Test("a stream's progress counts the outputs handed out, read from the reporter's updates")
    func streamProgress() async throws {
        try await withMPIPool { pool async throws in
            for ordered in [true, false] {
                let reporter = PoolProgressReporter(interval: .zero)
                let watcher = Task {
                    var last: PoolProgress?
                    for await update in reporter.updates { last = update }
                    return last
                }
                var count = 0
                let stream =
                    ordered
                    ? pool.mapStream(RankSquare(), 0..<120, progress: reporter)
                    : pool.mapUnordered(RankSquare(), 0..<120, progress: reporter)
                for try await _ in stream { count += 1 }
                #expect(count == 120)
                let last = try #require(await watcher.value)
                #expect(last.isFinished && last.completed == 120 && last.total == 120, "\(last)")
            }
        }
    }

    @Test("an initializer runs in each local worker of each rank; the function sees what it set")
    func initializer() async throws {
        let marks = try await withMPIPool(initializer: SetWorkerMark(mark: 42)) { pool async throws in
            let ranks = pool.liveRanks
            let marks = try await pool.map(ReadWorkerMark(napMicroseconds: 2_000), Array(0..<120), chunkSize: 1)
            #expect(Set(marks.map(\.rank)) == Set(ranks))
            return marks.map(\.value)
        }
        #expect(marks == Array(repeating: 42, count: 120))
        // The ranks' shared local pools (default settings) never ran it.
        let plain = try await withMPIPool { pool async throws in
            try await pool.map(ReadWorkerMark(napMicroseconds: 0), Array(0..<12))
        }
        #expect(plain.allSatisfy { $0.value == 0 }, "\(plain)")
    }

    @Test("an initializer holding a one-machine handle is refused before any rank is asked")
    func initializerRefused() async throws {
        let queue = try Queue<Int>()
        try await expectRefused("a Queue in an MPI pool's initializer") {
            _ = try await MPIPool(initializer: HoldsQueueTarget(queue: queue))
        }
    }

    @Test("terminate fails the items under way at once and ends them on the ranks; join returns; the ranks serve on")
    func terminateAndJoin() async throws {
        // One worker per rank: the ranks' shared local pools; two: local pools of this pool's own.
        for workers in [1, 2] {
            let pool = try await MPIPool(workersPerRank: workers)
            let ranks = pool.liveRanks
            // Every item sleeps for an hour: only terminate ends this call.
            let call = Task { await pool.results(SleepOn(index: 0), Array(repeating: 0, count: 8), chunkSize: 1) }
            let stream = Task {
                for try await _ in pool.mapUnordered(SleepOn(index: 0), repeatElement(0, count: 4)) {}
            }
            try await Task.sleep(for: .milliseconds(300))
            pool.terminate()
            let results = await call.value
            do {
                try await stream.value
                Issue.record("the stream under way did not throw")
            } catch let error as MPIPoolError {
                guard case .closed = error.reason else {
                    Issue.record("stream: \(error)")
                    return
                }
            }
            for result in results {
                guard case .failure(let error) = result, case .closed = error.reason else {
                    Issue.record("\(workers) per rank: \(result)")
                    continue
                }
            }
            await pool.join()
            await #expect(throws: MPIPoolError.self) { try await pool.apply(RankSquare(), 1) }
            pool.terminate()  // again: nothing more to do
            // The ranks killed the sleeping workers: a new pool is served at once.
            let squares = try await withMPIPool(workersPerRank: workers) { next async throws in
                #expect(next.liveRanks == ranks)
                return try await next.map(RankSquare(), Array(0..<30))
            }
            #expect(squares == (0..<30).map { $0 * $0 })
        }
    }

    @Test("close lets the calls under way finish and refuses new ones; join returns once the services ended")
    func closeThenJoin() async throws {
        let pool = try await MPIPool()
        let call = Task { try await pool.map(WhereRun(napMicroseconds: 2_000), Array(0..<200), chunkSize: 1) }
        try await Task.sleep(for: .milliseconds(50))
        pool.close()
        do {
            _ = try await pool.apply(RankSquare(), 2)
            Issue.record("a closed pool took a call")
        } catch let error as MPIPoolError {
            guard case .closed = error.reason else {
                Issue.record("\(error)")
                return
            }
        }
        #expect(try await call.value.map(\.value) == (0..<200).map { $0 * 3 })
        await pool.join()
        await pool.join()  // again: returns at once
    }

    @Test("withMPIPool terminates the pool when its body throws: the items left running do not hold it")
    func withPoolTerminatesOnThrow() async throws {
        struct Thrown: Error {}
        let pending = Mutex<Task<Int, any Error>?>(nil)
        do {
            try await withMPIPool { pool async throws in
                // An item that would run for an hour: a graceful close would wait for it.
                pending.withLock { $0 = pool.submit(SleepOn(index: 0), 0) }
                try await Task.sleep(for: .milliseconds(300))
                throw Thrown()
            }
            Issue.record("withMPIPool did not throw")
        } catch is Thrown {}
        let task = try #require(pending.withLock { $0 })
        await #expect(throws: MPIPoolError.self) { _ = try await task.value }
        #expect(try await withMPIPool { pool async throws in try await pool.apply(RankSquare(), 7) } == 49)
    }

    @Test("the local workers' log records reach rank 0's logging system, tagged with rank, worker and pid")
    func workerLogs() async throws {
        RankLogCapture.installed
        let ranks = try await withMPIPool { pool async throws in
            let ranks = try await pool.map(LogOnRank(tag: "forwarded"), Array(0..<30), chunkSize: 1)
            // Not forwarded: below the ranks' level (info).
            _ = try await pool.map(LogOnRank(tag: "forwarded", level: .debug), Array(100..<103))
            return ranks
        }
        // join (in withMPIPool) waited for the services' end, after their last records.
        let records = RankLogCapture.records(tagged: "forwarded")
        #expect(records.map(\.message).sorted() == (0..<30).map { "item \($0)" }.sorted())
        for record in records {
            let item = try #require(Int(record.message.dropFirst("item ".count)))
            #expect(record.metadata["rank"] == "\(ranks[item].rank)", "\(record)")
            #expect(record.metadata["pid"] == "\(ranks[item].pid)", "\(record)")
            #expect(record.metadata["worker"]?.isEmpty == false, "\(record)")
        }
        #expect(Set(records.compactMap { $0.metadata["rank"] }).count == Set(ranks.map(\.rank)).count)

        // A pool that does not forward its ranks' logs.
        _ = try await withMPIPool(forwardsLogs: false) { pool async throws in
            try await pool.map(LogOnRank(tag: "kept"), Array(0..<10))
        }
        #expect(RankLogCapture.records(tagged: "kept").isEmpty)
    }
}

/// The error an ``AsyncInputs`` throws at `failAt`.
struct InputsFailed: Error {
    var position: Int
}

/// 0, 1, 2, ... up to `limit`, as an `AsyncSequence` that suspends before each element,
/// counting each one pulled; throws ``InputsFailed`` instead of element `failAt`.
struct AsyncInputs: AsyncSequence, Sendable {
    let counter: PullCounter
    let limit: Int
    var failAt: Int?

    func makeAsyncIterator() -> Iterator { Iterator(counter: counter, limit: limit, failAt: failAt) }

    struct Iterator: AsyncIteratorProtocol {
        let counter: PullCounter
        let limit: Int
        let failAt: Int?
        var position = 0

        mutating func next() async throws -> Int? {
            await Task.yield()
            guard position < limit else { return nil }
            if position == failAt { throw InputsFailed(position: position) }
            counter.add()
            defer { position += 1 }
            return position
        }
    }
}

/// What ``SetWorkerMark`` sets in a local worker process.
enum WorkerMark {
    static let value = Atomic<Int>(0)
}

/// An initializer: sets the worker's mark.
struct SetWorkerMark: ProcessTarget {
    var mark: Int
    func run() { WorkerMark.value.store(mark, ordering: .relaxed) }
}

/// The worker's mark (as `value`) and its rank.
struct ReadWorkerMark: ProcessFunction {
    var napMicroseconds: UInt32
    func callAsFunction(_ input: Int) -> WhereRun.Output {
        var output = WhereRun(napMicroseconds: napMicroseconds)(input)
        output.value = WorkerMark.value.load(ordering: .relaxed)
        return output
    }
}

/// An initializer that holds a queue: cannot go to another rank.
struct HoldsQueueTarget: ProcessTarget {
    var queue: Queue<Int>
    func run() {}
}

/// Logs "item N" tagged `tag` in the local worker, and says where it ran.
struct LogOnRank: ProcessFunction {
    var tag: String
    var level: Logger.Level = .info
    struct Output: Codable, Sendable {
        var rank: Int
        var pid: Int32
    }
    func callAsFunction(_ input: Int) -> Output {
        Logger(label: "mpi-log-test").log(level: level, "item \(input)", metadata: ["tag": "\(tag)"])
        return Output(rank: Int(String(cString: getenv("OMPI_COMM_WORLD_RANK"))) ?? -1, pid: getpid())
    }
}

/// The records logged on rank 0 (the test process) under the label `mpi-log-test`.
enum RankLogCapture {
    struct Record: Sendable {
        var message: String
        var metadata: [String: String]
    }

    static let records = Mutex<[Record]>([])

    /// Bootstraps rank 0's logging once (once per process), at level `debug`.
    static let installed: Void = LoggingSystem.bootstrap { label in Handler(label: label) }

    static func records(tagged tag: String) -> [Record] {
        records.withLock { $0.filter { $0.metadata["tag"] == tag } }
    }

    struct Handler: LogHandler {
        let label: String
        var logLevel: Logger.Level = .debug
        var metadata: Logger.Metadata = [:]

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            guard label == "mpi-log-test" else { return }
            let record = Record(
                message: event.message.description, metadata: (event.metadata ?? [:]).mapValues(\.description))
            records.withLock { $0.append(record) }
        }
    }
}
