import Glibc
import Synchronization
import Testing

@testable import Multiprocessing

/// SIGKILLs its own worker the first time it sees an input, leaving a marker file in
/// `directory` so that the next attempt (in another worker) returns `input * 2`.
/// Files rather than shared memory: a pool's function travels without descriptors.
struct PoolCrashFirstTime: ProcessFunction {
    var directory: String
    func callAsFunction(_ input: Int) -> Int {
        let marker = "\(directory)/\(input)"
        if access(marker, F_OK) != 0 {
            let descriptor = open(marker, O_CREAT | O_WRONLY, 0o644)
            if descriptor >= 0 { close(descriptor) }
            kill(getpid(), SIGKILL)
        }
        return input * 2
    }
}

/// SIGKILLs its own worker on every input.
struct PoolAlwaysCrash: ProcessFunction {
    func callAsFunction(_ input: Int) -> Int {
        kill(getpid(), SIGKILL)
        return input
    }
}

/// A fresh directory for markers, removed with its files by `body`'s end.
func withMarkerDirectory<Value>(_ body: (String) async throws -> Value) async throws -> Value {
    var template = Array("/tmp/mp-pool-markers-XXXXXX".utf8CString)
    guard let made = mkdtemp(&template) else { throw PlainError() }
    let directory = String(cString: made)
    defer {
        if let listing = opendir(directory) {
            while let entry = readdir(listing) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) {
                    String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self)
                }
                if name != "." && name != ".." { unlink("\(directory)/\(name)") }
            }
            closedir(listing)
        }
        rmdir(directory)
    }
    return try await body(directory)
}

/// An endless `AsyncSequence` of 0, 1, 2, ... that counts how many it handed out.
struct CountingAsyncInputs: AsyncSequence, Sendable {
    typealias Element = Int
    let pulled: CountingInputs.Counter
    /// Throws `InventoryError` instead of handing out this element, if set.
    var failAt: Int?

    struct AsyncIterator: AsyncIteratorProtocol {
        let pulled: CountingInputs.Counter
        var failAt: Int?
        var next = 0
        mutating func next() async throws -> Int? {
            if next == failAt { throw InventoryError(item: "input", missing: next) }
            await Task.yield()
            defer { next += 1 }
            pulled.value.add(1, ordering: .relaxed)
            return next
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(pulled: pulled, failAt: failAt) }
}

/// Runs a pool with crashes, retries, pipelined chunks and a cancelled call inside a child
/// of its own, so that counting this process's children counts the pool's only.
struct PoolDispatchLeavesNoChild: ProcessTarget {
    func run() async throws {
        try await withProcessPool(workers: 2, startMethod: .forkserver, retries: 1) { pool in
            let results = await pool.results(PoolMisbehave(bad: 37), Array(0..<100), chunkSize: 2)
            for (index, result) in results.enumerated() {
                let succeeded = (try? result.get()) == index * 2
                guard succeeded == (index != 37) else { throw PlainError() }
            }
            let cancelled = Task { try await pool.map(PoolNap(), Array(repeating: 60_000, count: 8), chunkSize: 1) }
            try await Task.sleep(for: .milliseconds(200))
            cancelled.cancel()
            _ = try? await cancelled.value
            guard try await pool.map(PoolSquare(), Array(0..<500), chunkSize: 1) == (0..<500).map({ $0 * $0 }) else {
                throw PlainError()
            }
        }
        guard CurrentProcess.activeChildren.isEmpty else { throw PlainError() }
    }
}

@Suite("Process pool dispatch: pipelining, retries, async inputs", .timeLimit(.minutes(2)))
struct ProcessPoolDispatchTests {
    @Test("an item whose worker dies on its first attempt succeeds with retries: 1, fails with retries: 0")
    func retryOnce() async throws {
        for retries in [0, 1] {
            try await withMarkerDirectory { directory in
                try await withProcessPool(workers: 2, retries: retries) { (pool: ProcessPool) async throws in
                    let results = await pool.results(
                        PoolCrashFirstTime(directory: directory), Array(0..<6), chunkSize: 3)
                    for (index, result) in results.enumerated() {
                        switch (retries, result) {
                        case (1, .success(let output)): #expect(output == index * 2)
                        case (0, .failure(let error)):
                            #expect(error.index == index)
                            #expect(error.attempts == 1)
                            guard case .workerEnded(.signaled(.kill)) = error.reason else {
                                Issue.record("item \(index): \(error)")
                                continue
                            }
                        default: Issue.record("retries \(retries), item \(index): \(result)")
                        }
                    }
                    #expect(await poolSize(pool, reaches: 2), "the pool keeps its configured size")
                }
            }
        }
    }

    @Test("an item whose every attempt dies fails with the attempts made, and the call returns")
    func retriesExhausted() async throws {
        try await withProcessPool(workers: 2, retries: 2) { (pool: ProcessPool) async throws in
            let results = await pool.results(PoolAlwaysCrash(), Array(0..<5), chunkSize: 2)
            for (index, result) in results.enumerated() {
                guard case .failure(let error) = result, case .workerEnded = error.reason else {
                    Issue.record("item \(index) did not fail with its worker's end: \(result)")
                    continue
                }
                #expect(error.index == index)
                #expect(error.attempts == 3)
                #expect(error.description.contains("attempt 3 of 3"))
            }
            #expect(await poolSize(pool, reaches: 2), "the pool keeps its configured size")
            #expect(try await pool.map(PoolSquare(), [4]) == [16])
        }
    }

    @Test("a function that throws is not retried")
    func thrownNotRetried() async throws {
        try await withProcessPool(workers: 2, retries: 3) { (pool: ProcessPool) async throws in
            let results = await pool.results(PoolMisbehave(bad: 1000), [1, -2, 3])
            guard case .failure(let error) = results[1], case .threw = error.reason else {
                Issue.record("item 1: \(results[1])")
                return
            }
            #expect(error.attempts == 1)
            #expect(try results[0].get() == 2 && results[2].get() == 6)
        }
    }

    @Test("an item that overruns its timeout is not retried")
    func timeoutNotRetried() async throws {
        try await withProcessPool(workers: 2, retries: 2) { (pool: ProcessPool) async throws in
            let results = await pool.results(PoolNap(), [5, 60_000], chunkSize: 1, timeout: .seconds(1))
            guard case .failure(let error) = results[1], case .timedOut = error.reason else {
                Issue.record("item 1 did not time out: \(results[1])")
                return
            }
            #expect(error.attempts == 1)
            #expect(try results[0].get() == 5)
        }
    }

    @Test("no inputs: every form returns at once with nothing")
    func noInputs() async throws {
        try await withProcessPool(workers: 2) { (pool: ProcessPool) async throws in
            #expect(try await pool.map(PoolSquare(), []).isEmpty)
            #expect(await pool.results(PoolSquare(), []).isEmpty)
            var streamed = 0
            for try await _ in pool.mapStream(PoolSquare(), [Int]()) { streamed += 1 }
            for try await _ in pool.mapUnordered(PoolSquare(), CountingAsyncInputs(pulled: .init()).prefix(0)) {
                streamed += 1
            }
            #expect(streamed == 0)
        }
    }

    @Test("a crash in a pipelined chunk names the right item", arguments: [0, 1, 151, 399])
    func pipelinedCrash(bad: Int) async throws {
        try await withProcessPool(workers: 2) { (pool: ProcessPool) async throws in
            // Warm: the drivers see quick answers, so later chunks go several to a worker.
            _ = try await pool.map(PoolSquare(), Array(0..<100), chunkSize: 2)
            let results = await pool.results(PoolMisbehave(bad: bad), Array(0..<400), chunkSize: 2)
            for (index, result) in results.enumerated() {
                if index == bad {
                    guard case .failure(let error) = result, case .workerEnded(.signaled(.kill)) = error.reason else {
                        Issue.record("item \(index): \(result)")
                        continue
                    }
                    #expect(error.index == bad)
                } else {
                    #expect((try? result.get()) == index * 2, "item \(index)")
                }
            }
        }
    }

    @Test("maps, applies and streams from many tasks at once on one pool come back exact")
    func manyCallersAtOnce() async throws {
        try await withProcessPool(workers: 2) { (pool: ProcessPool) async throws in
            try await withThrowingTaskGroup(of: Bool.self) { group in
                for caller in 0..<4 {
                    group.addTask {
                        let inputs = Array(caller * 1000..<caller * 1000 + 500)
                        return try await pool.map(PoolSquare(), inputs, chunkSize: caller + 1)
                            == inputs.map { $0 * $0 }
                    }
                }
                for caller in 0..<8 {
                    group.addTask {
                        for number in 0..<20 {
                            guard
                                try await pool.apply(PoolSquare(), caller * 100 + number)
                                    == (caller * 100 + number) * (caller * 100 + number)
                            else { return false }
                        }
                        return true
                    }
                }
                for caller in 0..<2 {
                    group.addTask {
                        var outputs: [Int] = []
                        for try await output in pool.mapStream(PoolSquare(), 0..<300, chunkSize: caller + 1) {
                            outputs.append(output)
                        }
                        return outputs == (0..<300).map { $0 * $0 }
                    }
                    group.addTask {
                        var outputs: [Int] = []
                        for try await output in pool.mapUnordered(PoolSquare(), 0..<300, chunkSize: caller + 2) {
                            outputs.append(output)
                        }
                        return outputs.sorted() == (0..<300).map { $0 * $0 }
                    }
                }
                for try await exact in group { #expect(exact) }
            }
        }
    }

    @Test("a timeout stays exact while other calls pipeline on the same pool")
    func timeoutWithPipelining() async throws {
        try await withProcessPool(workers: 2) { (pool: ProcessPool) async throws in
            async let busy = pool.map(PoolSquare(), Array(0..<3000), chunkSize: 1)
            let results = await pool.results(PoolNap(), [5, 60_000, 5], chunkSize: 1, timeout: .seconds(2))
            guard case .failure(let error) = results[1], case .timedOut = error.reason else {
                Issue.record("item 1 did not time out: \(results[1])")
                return
            }
            #expect(error.index == 1)
            #expect(try results[0].get() == 5 && results[2].get() == 5)
            #expect(try await busy == (0..<3000).map { $0 * $0 })
        }
    }

    @Test("cancelling a pipelined map kills its workers; the pool goes on with its size")
    func cancelPipelined() async throws {
        try await withProcessPool(workers: 2) { (pool: ProcessPool) async throws in
            let before = pool.workerPIDs
            _ = try await pool.map(PoolSquare(), Array(0..<100), chunkSize: 1)
            try await withMarkerDirectory { directory in
                let task = Task {
                    try await pool.map(
                        PoolMarkAndNap(directory: directory), [1, 1, 1, 1] + Array(repeating: 60_000, count: 20),
                        chunkSize: 1)
                }
                // Cancelled once a long item runs (not after a fixed time: on a loaded
                // machine no worker may have taken one yet).
                #expect(await becomesTrue(within: .seconds(30)) { access("\(directory)/running", F_OK) == 0 })
                task.cancel()
                await #expect(throws: CancellationError.self) { try await task.value }
            }
            #expect(
                eventually(within: .seconds(10)) { before.contains(where: processIsGone) }, "a busy worker was killed")
            #expect(try await pool.map(PoolSquare(), Array(0..<200), chunkSize: 1) == (0..<200).map { $0 * $0 })
            #expect(await poolSize(pool, reaches: 2))
        }
    }

    @Test("streams over an endless AsyncSequence pull within their documented bound", arguments: [1, 3])
    func asyncInputsBounded(chunkSize: Int) async throws {
        try await withProcessPool(workers: 2) { (pool: ProcessPool) async throws in
            let workers = 2
            let ordered = CountingInputs.Counter()
            var inOrder = pool.mapStream(PoolSquare(), CountingAsyncInputs(pulled: ordered), chunkSize: chunkSize)
                .makeAsyncIterator()
            for expected in 0..<50 { #expect(try await inOrder.next() == expected * expected) }
            try await Task.sleep(for: .milliseconds(300))
            #expect(ordered.value.load(ordering: .relaxed) <= 50 + 4 * workers * chunkSize)

            let unordered = CountingInputs.Counter()
            var asDone = pool.mapUnordered(PoolSquare(), CountingAsyncInputs(pulled: unordered), chunkSize: chunkSize)
                .makeAsyncIterator()
            for _ in 0..<50 { _ = try await asDone.next() }
            try await Task.sleep(for: .milliseconds(300))
            #expect(unordered.value.load(ordering: .relaxed) <= 50 + 6 * workers * chunkSize + 1)
        }
    }

    @Test("a stream over an AsyncSequence gives every output, and ends with the sequence's error")
    func asyncInputsFiniteAndFailing() async throws {
        try await withProcessPool(workers: 2) { (pool: ProcessPool) async throws in
            let counter = CountingInputs.Counter()
            var outputs: [Int] = []
            do {
                for try await output in pool.mapStream(
                    PoolSquare(), CountingAsyncInputs(pulled: counter, failAt: 40), chunkSize: 3)
                {
                    outputs.append(output)
                }
                Issue.record("the stream did not throw")
            } catch let error as InventoryError {
                #expect(error == InventoryError(item: "input", missing: 40))
            }
            #expect(outputs == Array((0..<outputs.count).map { $0 * $0 }))

            var unordered: [Int] = []
            let finite = CountingAsyncInputs(pulled: counter).prefix(100)
            for try await output in pool.mapUnordered(PoolSquare(), finite, chunkSize: 4) { unordered.append(output) }
            #expect(unordered.sorted() == (0..<100).map { $0 * $0 })
        }
    }

    @Test("crashes, retries, pipelining and cancellation leave no child process", .timeLimit(.minutes(1)))
    func noChildLeft() async throws {
        let child = ChildProcess(PoolDispatchLeavesNoChild())
        try await child.start()
        try await child.join()
        #expect(child.termination == .exited(0))
    }
}
