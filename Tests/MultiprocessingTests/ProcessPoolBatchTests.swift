import Glibc
import Synchronization
import Testing

@testable import Multiprocessing

/// SIGKILLs its own worker the first time it sees one of `crashing`, leaving a marker file
/// in `directory` so that the next attempt returns `input * 2`; other inputs just double.
struct PoolCrashFirstTimeOn: ProcessFunction {
    var directory: String
    var crashing: Set<Int>
    func callAsFunction(_ input: Int) -> Int {
        let marker = "\(directory)/\(input)"
        if crashing.contains(input) && access(marker, F_OK) != 0 {
            let descriptor = open(marker, O_CREAT | O_WRONLY, 0o644)
            if descriptor >= 0 { close(descriptor) }
            kill(getpid(), SIGKILL)
        }
        return input * 2
    }
}

/// Sleeps `input` milliseconds, then returns its worker's process id.
struct PoolNapPID: ProcessFunction {
    func callAsFunction(_ input: Int) async throws -> Int32 {
        try await Task.sleep(for: .milliseconds(input))
        return getpid()
    }
}

/// Small chunks of inputs in memory go to a worker many in one message, answered in one
/// message: every promise of one chunk per message must hold inside a batch.
// Serialized, and sized to a few batches per call: run beside the other pool suites
// (cancellation windows of 500 ms) on a loaded 2-core machine, thousands of items at once
// starved them.
@Suite("Process pool batches: many small chunks per message", .serialized, .timeLimit(.minutes(2)))
struct ProcessPoolBatchTests {
    @Test("a batch and its answers cross the wire whole; a batch inside a batch is refused")
    func wire() throws {
        let batch = PoolMessage.batch([
            .task(id: 7, typeName: "T", function: [1, 2], inputs: [3], count: 1, eachInput: false),
            .outputs(
                id: 7, outputs: [4, 5], failures: [PoolItemFailure(offset: 0, outcome: .couldNotStart(reason: "x"))]),
        ])
        let bytes = try BinaryEncoder().encode(batch)
        guard case .batch(let messages) = try BinaryDecoder().decode(PoolMessage.self, from: bytes),
            messages.count == 2,
            case .task(7, "T", [1, 2], [3], 1, false) = messages[0],
            case .outputs(7, [4, 5], let failures) = messages[1], failures.count == 1, failures[0].offset == 0
        else {
            Issue.record("the batch came back different")
            return
        }
        let nested = try BinaryEncoder().encode(PoolMessage.batch([batch]))
        #expect(throws: (any Error).self) { try BinaryDecoder().decode(PoolMessage.self, from: nested) }
    }

    @Test("a crash inside a batch of chunks of one names the right item", arguments: [0, 17, 599])
    func crashInBatch(bad: Int) async throws {
        try await withProcessPool(workers: 2) { (pool: ProcessPool) async throws in
            // Warm: the drivers see quick answers, so later chunks go in batches.
            _ = try await pool.map(PoolSquare(), Array(0..<200), chunkSize: 1)
            let results = await pool.results(PoolMisbehave(bad: bad), Array(0..<600), chunkSize: 1)
            #expect(results.count == 600)
            for (index, result) in results.enumerated() {
                if index == bad {
                    guard case .failure(let error) = result, case .workerEnded(.signaled(.kill)) = error.reason else {
                        Issue.record("item \(index): \(result)")
                        continue
                    }
                    #expect(error.index == bad)
                    #expect(error.attempts == 1)
                } else {
                    #expect((try? result.get()) == index * 2, "item \(index)")
                }
            }
            #expect(await poolSize(pool, reaches: 2), "the pool keeps its configured size")
        }
    }

    @Test("slow items cut as one group still spread over every worker")
    func groupSpreads() async throws {
        try await withProcessPool(workers: 2) { (pool: ProcessPool) async throws in
            // 16 chunks of one are cut as one group: both drivers must share it, one slow
            // item at a time each (800 ms of naps cannot all run before the second starts).
            let pids = try await pool.map(PoolNapPID(), Array(repeating: 50, count: 16), chunkSize: 1)
            #expect(Set(pids).count == 2, "ran on \(Set(pids))")
        }
    }

    @Test("items that throw inside a batch fail alone, at their index")
    func throwsInBatch() async throws {
        try await withProcessPool(workers: 2) { (pool: ProcessPool) async throws in
            let inputs = (0..<800).map { $0 % 7 == 3 ? -$0 : $0 }
            let results = await pool.results(PoolMisbehave(bad: Int.max), inputs, chunkSize: 1)
            for (index, result) in results.enumerated() {
                if inputs[index] < 0 {
                    guard case .failure(let error) = result, case .threw = error.reason else {
                        Issue.record("item \(index): \(result)")
                        continue
                    }
                    #expect(error.index == index)
                } else {
                    #expect((try? result.get()) == index * 2, "item \(index)")
                }
            }
        }
    }

    @Test("crashes inside batches are retried; every item comes back once, right")
    func retriesInBatch() async throws {
        try await withMarkerDirectory { directory in
            try await withProcessPool(workers: 2, retries: 1) { (pool: ProcessPool) async throws in
                let crashing: Set<Int> = [5, 300, 301, 550]
                let function = PoolCrashFirstTimeOn(directory: directory, crashing: crashing)
                let outputs = try await pool.map(function, Array(0..<600), chunkSize: 1)
                #expect(outputs == (0..<600).map { $0 * 2 })
                #expect(await poolSize(pool, reaches: 2))
            }
        }
    }

    @Test("a timeout among many chunks of one fails that item only")
    func timeoutAmongSmallChunks() async throws {
        try await withProcessPool(workers: 2) { (pool: ProcessPool) async throws in
            var inputs = Array(repeating: 0, count: 100)
            inputs[50] = 60_000
            let results = await pool.results(PoolNap(), inputs, chunkSize: 1, timeout: .seconds(1))
            for (index, result) in results.enumerated() {
                if index == 50 {
                    guard case .failure(let error) = result, case .timedOut = error.reason else {
                        Issue.record("item 50 did not time out: \(result)")
                        continue
                    }
                    #expect(error.index == 50)
                } else {
                    #expect((try? result.get()) == 0, "item \(index)")
                }
            }
        }
    }

    @Test("concurrent maps of small chunks on one pool come back exact")
    func concurrentBatches() async throws {
        try await withProcessPool(workers: 2) { (pool: ProcessPool) async throws in
            try await withThrowingTaskGroup(of: Bool.self) { group in
                for call in 0..<4 {
                    group.addTask {
                        let inputs = Array((call * 1000)..<(call * 1000 + 500))
                        return try await pool.map(PoolSquare(), inputs, chunkSize: call % 3 + 1)
                            == inputs.map { $0 * $0 }
                    }
                }
                for try await exact in group { #expect(exact) }
            }
        }
    }

    @Test("cancelling a map of small chunks mid-batch throws and leaves the pool whole")
    func cancelMidBatch() async throws {
        try await withProcessPool(workers: 2) { (pool: ProcessPool) async throws in
            _ = try await pool.map(PoolSquare(), Array(0..<200), chunkSize: 1)
            let task = Task {
                try await pool.map(
                    PoolNap(), Array(repeating: 0, count: 300) + Array(repeating: 60_000, count: 40), chunkSize: 1)
            }
            try await Task.sleep(for: .milliseconds(500))
            task.cancel()
            await #expect(throws: CancellationError.self) { try await task.value }
            #expect(try await pool.map(PoolSquare(), Array(0..<300), chunkSize: 1) == (0..<300).map { $0 * $0 })
            #expect(await poolSize(pool, reaches: 2))
        }
    }
}
