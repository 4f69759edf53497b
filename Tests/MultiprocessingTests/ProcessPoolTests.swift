import Glibc
import Synchronization
import Testing

@testable import Multiprocessing

struct PoolSquare: ProcessFunction {
    func callAsFunction(_ x: Int) -> Int { x * x }
}

/// How an input of ``PoolMisbehave`` ends its worker.
enum PoolFault: Int, Codable, Sendable, CaseIterable {
    case sigkill, fatalError, exitZero
}

/// Doubles its input, but misbehaves on `bad`: ends its own process as `fault` says, and
/// throws an ``InventoryError`` for negative inputs.
struct PoolMisbehave: ProcessFunction {
    var bad: Int
    var fault: PoolFault = .sigkill
    func callAsFunction(_ input: Int) throws -> Int {
        if input == bad {
            switch fault {
            case .sigkill: kill(getpid(), SIGKILL)
            case .fatalError: fatalError("deliberate crash in a pool worker")
            case .exitZero: exit(0)
            }
        }
        if input < 0 { throw InventoryError(item: "negative", missing: input) }
        return input * 2
    }
}

/// Sleeps `input` milliseconds, then returns it.
struct PoolNap: ProcessFunction {
    func callAsFunction(_ input: Int) async throws -> Int {
        try await Task.sleep(for: .milliseconds(input))
        return input
    }
}

/// Sleeps `input` milliseconds; a long sleep (a second or more) first leaves a file named
/// `running` in `directory`.
struct PoolMarkAndNap: ProcessFunction {
    var directory: String
    func callAsFunction(_ input: Int) async throws -> Int {
        if input >= 1000 { close(open("\(directory)/running", O_WRONLY | O_CREAT | O_CLOEXEC, 0o600)) }
        try await Task.sleep(for: .milliseconds(input))
        return input
    }
}

/// Uses a pool inside a child of its own, so that counting this process's children counts
/// the pool's only: every worker must be gone once `withProcessPool` returns.
struct PoolLeavesNoChild: ProcessTarget {
    func run() async throws {
        let squares = try await withProcessPool(workers: 3) { (pool: ProcessPool) async throws in
            try await pool.map(PoolSquare(), Array(1...20))
        }
        guard squares == (1...20).map({ $0 * $0 }) else { throw PlainError() }
        guard CurrentProcess.activeChildren.isEmpty else { throw PlainError() }
    }
}

/// Marks its worker: sets an environment variable that ``PoolReadMark`` reads back.
struct PoolMark: ProcessTarget {
    var value: String
    func run() { setenv("MULTIPROCESSING_POOL_MARK", value, 1) }
}

/// An initializer that fails.
struct PoolBrokenInitializer: ProcessTarget {
    func run() throws { throw InventoryError(item: "setup", missing: 1) }
}

/// Returns the mark set by the worker's initializer, or "none".
struct PoolReadMark: ProcessFunction {
    func callAsFunction(_ input: Int) -> String {
        getenv("MULTIPROCESSING_POOL_MARK").map { String(cString: $0) } ?? "none"
    }
}

/// Counts, in this process, how many inputs a sequence has handed out.
struct CountingInputs: Sequence, Sendable {
    let pulled: Counter
    var count: Int
    /// What the first input is, if not 0.
    var first = 0

    final class Counter: Sendable {
        let value = Atomic<Int>(0)
    }

    func makeIterator() -> AnyIterator<Int> {
        var next = 0
        return AnyIterator {
            guard next < count else { return nil }
            defer { next += 1 }
            pulled.value.add(1, ordering: .relaxed)
            return next == 0 ? first : next
        }
    }
}

/// Whether the pool gets back to `count` workers within 10 s: replacements start on their
/// own, so a call may end before its killed worker's replacement has started.
func poolSize(_ pool: ProcessPool, reaches count: Int) async -> Bool {
    for _ in 0..<400 {
        if pool.workerPIDs.count == count { return true }
        try? await Task.sleep(for: .milliseconds(25))
    }
    return false
}

@Suite("Process pool", .timeLimit(.minutes(2)))
struct ProcessPoolTests {
    @Test("the seed example: map squares five numbers on three workers")
    func seed() async throws {
        let squares = try await withProcessPool(workers: 3) { (pool: ProcessPool) async throws in
            try await pool.map(PoolSquare(), [1, 2, 3, 4, 5])
        }
        #expect(squares == [1, 4, 9, 16, 25])
    }

    @Test("1,000 items come back in input order", arguments: StartMethod.allCases)
    func thousandInOrder(method: StartMethod) async throws {
        try await withProcessPool(workers: 2, startMethod: method) { (pool: ProcessPool) async throws in
            #expect(try await pool.map(PoolSquare(), Array(0..<1000)) == (0..<1000).map { $0 * $0 })
            #expect(try await pool.map(PoolSquare(), Array(0..<100), chunkSize: 1) == (0..<100).map { $0 * $0 })
            #expect(try await pool.map(PoolSquare(), []) == [])
        }
    }

    @Test("a function's error names the index and comes back as the Codable error itself")
    func functionError() async throws {
        try await withProcessPool(workers: 2) { (pool: ProcessPool) async throws in
            let error = try await #require(throws: ProcessPoolError.self) {
                try await pool.map(PoolMisbehave(bad: .max), [1, 2, -3, 4, -5])
            }
            #expect(error.index == 2)
            #expect(error.remoteError?.underlying as? InventoryError == InventoryError(item: "negative", missing: -3))
            #expect(error.description.contains("item 2"))
            #expect(try await pool.apply(PoolMisbehave(bad: .max), 21) == 42)
        }
    }

    @Test("a worker that dies mid-task fails only that item, and the pool goes on", arguments: PoolFault.allCases)
    func workerDies(fault: PoolFault) async throws {
        try await withProcessPool(workers: 2) { (pool: ProcessPool) async throws in
            let before = Set(pool.workerPIDs)
            let results = await pool.results(PoolMisbehave(bad: 7, fault: fault), Array(0..<20), chunkSize: 3)
            for (index, result) in results.enumerated() where index != 7 {
                #expect(try result.get() == index * 2)
            }
            guard case .failure(let error) = results[7] else {
                Issue.record("item 7 did not fail")
                return
            }
            #expect(error.index == 7)
            switch (fault, error.reason) {
            case (.sigkill, .workerEnded(let termination)): #expect(termination == .signaled(.kill))
            case (.fatalError, .workerEnded(let termination)): #expect(termination != .exited(0))
            case (.exitZero, .workerEnded(let termination)): #expect(termination == .exited(0))
            default: Issue.record("unexpected failure: \(error)")
            }
            #expect(error.description.contains("item 7"))
            // The pool replaced the worker and still serves.
            #expect(try await pool.map(PoolSquare(), Array(0..<50)) == (0..<50).map { $0 * $0 })
            #expect(await poolSize(pool, reaches: 2))
            #expect(Set(pool.workerPIDs) != before)
        }
    }

    @Test("map throws the first failed item after finishing the others")
    func mapThrowsCrash() async throws {
        try await withProcessPool(workers: 2) { (pool: ProcessPool) async throws in
            let error = try await #require(throws: ProcessPoolError.self) {
                try await pool.map(PoolMisbehave(bad: 5), Array(0..<10))
            }
            #expect(error.index == 5)
            #expect(error.description.contains("SIGKILL"))
        }
    }

    @Test("an item that overruns its timeout fails, its worker is replaced")
    func timeout() async throws {
        try await withProcessPool(workers: 2) { (pool: ProcessPool) async throws in
            let start = ContinuousClock.now
            let results = await pool.results(
                PoolNap(), [10, 60_000, 20, 30], chunkSize: 1, timeout: .seconds(3))
            #expect(ContinuousClock.now - start < .seconds(20))
            #expect(try results[0].get() == 10)
            #expect(try results[2].get() == 20)
            #expect(try results[3].get() == 30)
            guard case .failure(let error) = results[1], case .timedOut = error.reason else {
                Issue.record("item 1 did not time out: \(results[1])")
                return
            }
            #expect(error.index == 1)
            #expect(try await pool.map(PoolSquare(), [3]) == [9])
        }
    }

    @Test("cancelling the task awaiting map returns promptly and leaves no extra process")
    func cancellation() async throws {
        let pool = try await ProcessPool(workers: 2)
        let before = pool.workerPIDs
        try await withMarkerDirectory { directory in
            let task = Task {
                try await pool.map(
                    PoolMarkAndNap(directory: directory), [60_000, 60_000, 60_000, 60_000], chunkSize: 1)
            }
            // Cancelled once an item runs (not after a fixed time: on a loaded machine no
            // worker may have taken one yet).
            #expect(await becomesTrue(within: .seconds(30)) { access("\(directory)/running", F_OK) == 0 })
            let start = ContinuousClock.now
            task.cancel()
            await #expect(throws: CancellationError.self) { try await task.value }
            #expect(ContinuousClock.now - start < .seconds(5))
        }
        // The workers that had taken an item were killed (and are replaced below).
        #expect(eventually(within: .seconds(10)) { before.contains(where: processIsGone) }, "a busy worker was killed")
        #expect(try await pool.map(PoolSquare(), [1, 2, 3]) == [1, 4, 9])
        #expect(await poolSize(pool, reaches: 2))
        pool.close()
        await pool.join()
        #expect(pool.workerPIDs.isEmpty)
    }

    @Test("three tasks map on one pool at once")
    func concurrentMaps() async throws {
        try await withProcessPool(workers: 2) { (pool: ProcessPool) async throws in
            try await withThrowingTaskGroup(of: Bool.self) { group in
                for offset in 0..<3 {
                    group.addTask {
                        let inputs = Array(offset * 100..<offset * 100 + 200)
                        return try await pool.map(PoolSquare(), inputs, chunkSize: 7) == inputs.map { $0 * $0 }
                    }
                }
                for try await matched in group { #expect(matched) }
            }
        }
    }

    @Test("withProcessPool leaves no child process alive")
    func noChildLeft() async throws {
        let child = ChildProcess(PoolLeavesNoChild())
        try await child.start()
        try await child.join()
        var pids: [pid_t] = []
        try await withProcessPool(workers: 2) { (pool: ProcessPool) async throws in
            pids = pool.workerPIDs
            _ = try await pool.map(PoolSquare(), [1])
        }
        #expect(pids.count == 2 && pids.allSatisfy(processIsGone))
    }

    @Test("a closed pool refuses new calls; terminate kills the workers")
    func closeAndTerminate() async throws {
        let pool = try await ProcessPool(workers: 2)
        pool.close()
        await #expect(throws: ProcessPoolError.self) { try await pool.map(PoolSquare(), [1]) }
        await pool.join()
        let other = try await ProcessPool(workers: 2)
        let pids = other.workerPIDs
        other.terminate()
        await other.join()
        #expect(pids.allSatisfy(processIsGone))
    }

    @Test("a worker past its task budget is replaced")
    func maxTasks() async throws {
        try await withProcessPool(workers: 1, maxTasksPerWorker: 2) { (pool: ProcessPool) async throws in
            let first = pool.workerPIDs
            #expect(try await pool.map(PoolSquare(), Array(0..<6), chunkSize: 1) == [0, 1, 4, 9, 16, 25])
            #expect(pool.workerPIDs != first)
        }
    }

    @Test("mapStream yields in input order; mapUnordered yields every output", arguments: [1, 4])
    func streams(chunkSize: Int) async throws {
        try await withProcessPool(workers: 2) { (pool: ProcessPool) async throws in
            var ordered: [Int] = []
            for try await square in pool.mapStream(PoolSquare(), 0..<300, chunkSize: chunkSize) {
                ordered.append(square)
            }
            #expect(ordered == (0..<300).map { $0 * $0 })
            var unordered: [Int] = []
            for try await nap in pool.mapUnordered(PoolNap(), [40, 0, 20, 0, 10], chunkSize: chunkSize) {
                unordered.append(nap)
            }
            #expect(unordered.sorted() == [0, 0, 10, 20, 40])
        }
    }

    @Test("a stream throws at the failed item after yielding the ones before it")
    func streamFailure() async throws {
        try await withProcessPool(workers: 2) { (pool: ProcessPool) async throws in
            var seen: [Int] = []
            let error = try await #require(throws: ProcessPoolError.self) {
                for try await output in pool.mapStream(PoolMisbehave(bad: .max), [0, 1, 2, -3, 4, 5]) {
                    seen.append(output)
                }
            }
            #expect(seen == [0, 2, 4])
            #expect(error.index == 3)
            let crash = try await #require(throws: ProcessPoolError.self) {
                for try await _ in pool.mapUnordered(PoolMisbehave(bad: 2), 0..<6) {}
            }
            #expect(crash.index == 2)
            #expect(try await pool.map(PoolSquare(), [4]) == [16])
        }
    }

    @Test("a stream pulls its inputs only as fast as they are read")
    func streamBackpressure() async throws {
        try await withProcessPool(workers: 2) { (pool: ProcessPool) async throws in
            let pulled = CountingInputs.Counter()
            let stream = pool.mapStream(PoolSquare(), CountingInputs(pulled: pulled, count: 100_000))
            var iterator = stream.makeAsyncIterator()
            #expect(try await iterator.next() == 0)
            #expect(try await iterator.next() == 1)
            try await Task.sleep(for: .milliseconds(300))
            #expect(pulled.value.load(ordering: .relaxed) <= 12, "at most about 2 × workers in flight, plus the buffer")
        }
    }

    @Test("a dropped stream stops its call")
    func droppedStream() async throws {
        let pool = try await ProcessPool(workers: 2)
        do {
            var iterator = pool.mapStream(PoolNap(), [0, 60_000, 60_000, 60_000]).makeAsyncIterator()
            #expect(try await iterator.next() == 0)
        }
        let start = ContinuousClock.now
        #expect(try await pool.map(PoolSquare(), [5]) == [25])
        #expect(ContinuousClock.now - start < .seconds(20))
        pool.terminate()
        await pool.join()
    }

    @Test("submit returns a handle to await, or to cancel, which kills the worker")
    func submit() async throws {
        try await withProcessPool(workers: 2) { (pool: ProcessPool) async throws in
            let square = pool.submit(PoolSquare(), 12)
            let nap = pool.submit(PoolNap(), 60_000)
            #expect(try await square.value == 144)
            try await Task.sleep(for: .milliseconds(300))
            let start = ContinuousClock.now
            nap.cancel()
            await #expect(throws: CancellationError.self) { try await nap.value }
            #expect(ContinuousClock.now - start < .seconds(5))
            #expect(try await pool.apply(PoolSquare(), 3) == 9)
        }
    }

    @Test("the initializer runs in every worker before it serves, replacements included")
    func initializer() async throws {
        try await withProcessPool(workers: 2, maxTasksPerWorker: 1, initializer: PoolMark(value: "ready")) {
            (pool: ProcessPool) async throws in
            #expect(
                try await pool.map(PoolReadMark(), Array(0..<8), chunkSize: 1) == Array(repeating: "ready", count: 8))
        }
    }

    @Test("the automatic chunk size is Python's: count / (4 × workers), rounded up, at least 1")
    func automaticChunkSize() async throws {
        try await withProcessPool(workers: 2) { (pool: ProcessPool) async throws in
            #expect(pool.automaticChunkSize(for: 0) == 1)
            #expect(pool.automaticChunkSize(for: 5) == 1)
            #expect(pool.automaticChunkSize(for: 9) == 2)
            #expect(pool.automaticChunkSize(for: 1000) == 125)
        }
    }

    @Test("a failing initializer fails each item with its error, and nothing hangs")
    func failingInitializer() async throws {
        try await withProcessPool(workers: 2, initializer: PoolBrokenInitializer()) {
            (pool: ProcessPool) async throws in
            let results = await pool.results(PoolSquare(), [1, 2, 3])
            for (index, result) in results.enumerated() {
                guard case .failure(let error) = result, case .couldNotRun(let why) = error.reason else {
                    Issue.record("item \(index) did not fail: \(result)")
                    continue
                }
                #expect(error.index == index)
                #expect(why.contains("PoolBrokenInitializer") && why.contains("setup"))
            }
        }
    }

    @Test("a pool whose third worker cannot start throws and leaves no worker behind")
    func startFailure() async throws {
        struct CannotStart: Error {}
        final class Starts: Sendable {
            let started = Mutex<[PoolWorker]>([])
            let calls = Atomic<Int>(0)
        }
        let starts = Starts()
        await #expect(throws: CannotStart.self) {
            _ = try await ProcessPool.startAll(3) {
                // The starts run at once: the third call fails, the other two start.
                if starts.calls.add(1, ordering: .relaxed).newValue == 3 { throw CannotStart() }
                let worker = try await PoolWorker.start(name: "doomed", startMethod: .spawn, initializer: nil)
                starts.started.withLock { $0.append(worker) }
                return worker
            }
        }
        let pids = starts.started.withLock { $0.map(\.pid) }
        #expect(pids.count == 2 && pids.allSatisfy(processIsGone))
    }

    @Test("a pool released without close lets its workers go")
    func droppedPool() async throws {
        var pool: ProcessPool? = try await ProcessPool(workers: 2, startMethod: .forkserver)
        #expect(try await pool?.map(PoolSquare(), [2]) == [4])
        let pids = pool?.workerPIDs ?? []
        pool = nil
        #expect(pids.count == 2)
        #expect(eventually(within: .seconds(10)) { pids.allSatisfy(processIsGone) })
    }

    @Test("an ordered stream stops taking inputs while one slow item holds the others back")
    func orderedWindow() async throws {
        try await withProcessPool(workers: 2) { (pool: ProcessPool) async throws in
            let pulled = CountingInputs.Counter()
            let stream = pool.mapStream(PoolNap(), CountingInputs(pulled: pulled, count: 100_000, first: 1500))
            try await Task.sleep(for: .milliseconds(800))
            #expect(pulled.value.load(ordering: .relaxed) <= 10, "the reorder window is 2 × workers × chunk size")
            var iterator = stream.makeAsyncIterator()
            #expect(try await iterator.next() == 1500)
            #expect(try await iterator.next() == 1)
        }
    }

    @Test("results, cancelled, fails every item with the cancellation instead of throwing")
    func resultsCancelled() async throws {
        try await withProcessPool(workers: 2) { (pool: ProcessPool) async throws in
            let task = Task { await pool.results(PoolNap(), [60_000, 60_000, 60_000], chunkSize: 1) }
            try await Task.sleep(for: .milliseconds(300))
            task.cancel()
            let results = await task.value
            #expect(results.count == 3)
            for result in results {
                guard case .failure(let error) = result, case .cancelled = error.reason else {
                    Issue.record("not cancelled: \(result)")
                    continue
                }
            }
            #expect(try await pool.map(PoolSquare(), [7]) == [49])
        }
    }
}
