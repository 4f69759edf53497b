import Glibc
import Synchronization
import Testing

@testable import Multiprocessing

/// The updates a progress handler saw, in order.
final class ProgressLog: Sendable {
    let updates = Mutex<[PoolProgress]>([])
    func add(_ update: PoolProgress) { updates.withLock { $0.append(update) } }
    var all: [PoolProgress] { updates.withLock { $0 } }

    /// Whether the counts never go down and exactly the last update is final.
    var isMonotonic: Bool {
        let all = self.all
        for (previous, next) in zip(all, all.dropFirst())
        where next.completed < previous.completed || next.failed < previous.failed || next.elapsed < previous.elapsed {
            return false
        }
        return all.dropLast().allSatisfy { !$0.isFinished } && all.last?.isFinished == true
    }
}

@Suite("Pool progress", .timeLimit(.minutes(1)))
struct PoolProgressTests {
    @Test("a map's updates are monotonic and the final one counts every item")
    func mapProgress() async throws {
        let log = ProgressLog()
        try await withProcessPool(workers: 2) { (pool: ProcessPool) async throws in
            let squares = try await pool.map(PoolSquare(), Array(0..<500), chunkSize: 7) { log.add($0) }
            #expect(squares == (0..<500).map { $0 * $0 })
        }
        let updates = log.all
        #expect(log.isMonotonic)
        #expect(updates.first?.completed == 0)
        #expect(updates.last?.completed == 500)
        #expect(updates.last?.failed == 0)
        #expect(updates.allSatisfy { $0.total == 500 })
        #expect(updates.last?.fractionCompleted == 1)
        // Rate-limited: far fewer updates than the 72 chunks (a start, a final, and one per
        // 100 ms between them).
        #expect(updates.count < 72)
    }

    @Test("failed items are counted, and results still reports all of them")
    func failuresCounted() async throws {
        let log = ProgressLog()
        try await withProcessPool(workers: 2) { (pool: ProcessPool) async throws in
            let inputs = [1, -1, 2, -2, 3, 9, 4]  // negatives throw; 9 kills its worker
            let results = await pool.results(PoolMisbehave(bad: 9), inputs, chunkSize: 2) { log.add($0) }
            #expect(results.filter { (try? $0.get()) == nil }.count == 3)
        }
        #expect(log.isMonotonic)
        #expect(log.all.last?.completed == 7)
        #expect(log.all.last?.failed == 3)
    }

    @Test("a reporter's updates are an AsyncSequence that ends with the call")
    func reporterSequence() async throws {
        let reporter = PoolProgressReporter(interval: .milliseconds(1))
        let reader = Task {
            var seen: [PoolProgress] = []
            for await update in reporter.updates { seen.append(update) }
            return seen
        }
        try await withProcessPool(workers: 2) { (pool: ProcessPool) async throws in
            _ = try await pool.map(PoolNap(), Array(repeating: 2, count: 40), chunkSize: 1, progress: reporter)
        }
        let seen = await reader.value
        #expect(seen.last?.isFinished == true)
        #expect(seen.last?.completed == 40)
        #expect(zip(seen, seen.dropFirst()).allSatisfy { $0.completed <= $1.completed })
        #expect(reporter.latest?.completed == 40)
    }

    @Test("concurrent maps on one pool each report exactly their own items")
    func concurrentMaps() async throws {
        let logs = (0..<3).map { _ in ProgressLog() }
        try await withProcessPool(workers: 2) { (pool: ProcessPool) async throws in
            try await withThrowingTaskGroup(of: Void.self) { group in
                for (call, log) in logs.enumerated() {
                    group.addTask {
                        let count = 100 * (call + 1)
                        let squares = try await pool.map(PoolSquare(), Array(0..<count), chunkSize: 3) { log.add($0) }
                        #expect(squares.count == count)
                    }
                }
                try await group.waitForAll()
            }
        }
        for (call, log) in logs.enumerated() {
            #expect(log.isMonotonic)
            #expect(log.all.last?.completed == 100 * (call + 1))
            #expect(log.all.last?.total == 100 * (call + 1))
        }
    }

    @Test("one reporter shared by overlapping calls adds them up")
    func sharedReporter() async throws {
        let log = ProgressLog()
        let reporter = PoolProgressReporter(handler: log.add)
        try await withProcessPool(workers: 3) { (pool: ProcessPool) async throws in
            // The second call begins while the first waits on the gate in one worker.
            let gate = "/tmp/mp-progress-gate-\(getpid())"
            defer { unlink(gate) }
            async let first = pool.map(PoolWaitForFile(path: gate), [7], progress: reporter)
            while reporter.latest == nil { try await Task.sleep(for: .milliseconds(5)) }
            #expect(await pool.results(PoolSquare(), Array(0..<50), progress: reporter).count == 50)
            #expect(reporter.latest?.isFinished == false)
            close(open(gate, O_CREAT | O_WRONLY, 0o600))
            #expect(try await first == [7])
        }
        #expect(log.isMonotonic)
        #expect(log.all.last?.completed == 51)
        #expect(log.all.last?.total == 51)
    }

    @Test("streams report what they hand out; a failure ends them and is counted")
    func streamProgress() async throws {
        let ordered = ProgressLog()
        let unordered = ProgressLog()
        let failing = ProgressLog()
        try await withProcessPool(workers: 2) { (pool: ProcessPool) async throws in
            var sum = 0
            for try await square in pool.mapStream(PoolSquare(), 0..<200, chunkSize: 4, progress: ordered.add) {
                sum += square
            }
            #expect(sum == (0..<200).map { $0 * $0 }.reduce(0, +))
            var count = 0
            let inputs = CountingInputs(pulled: .init(), count: 30)  // a Sequence, not a Collection
            for try await _ in pool.mapUnordered(PoolSquare(), inputs, progress: unordered.add) {
                count += 1
            }
            #expect(count == 30)
            await #expect(throws: ProcessPoolError.self) {
                for try await _ in pool.mapStream(PoolMisbehave(bad: 1000), [1, 2, -3, 4], progress: failing.add) {}
            }
        }
        #expect(ordered.isMonotonic)
        #expect(ordered.all.last?.completed == 200)
        #expect(ordered.all.last?.total == 200)
        #expect(unordered.isMonotonic)
        #expect(unordered.all.last?.completed == 30)
        #expect(unordered.all.last?.total == nil)  // not a Collection: unknown
        #expect(failing.isMonotonic)
        #expect(failing.all.last?.completed == 3)
        #expect(failing.all.last?.failed == 1)
    }

    @Test("a cancelled call still sends a final update, and its reporter's updates end")
    func cancelledCall() async throws {
        let reporter = PoolProgressReporter()
        try await withProcessPool(workers: 2) { (pool: ProcessPool) async throws in
            let call = Task { try await pool.map(PoolNap(), Array(repeating: 10_000, count: 4), progress: reporter) }
            while reporter.latest == nil { try await Task.sleep(for: .milliseconds(5)) }
            call.cancel()
            await #expect(throws: CancellationError.self) { try await call.value }
        }
        var last: PoolProgress?
        for await update in reporter.updates { last = update }  // ends: the call is over
        #expect(last?.isFinished == true)
        #expect(last?.completed == 0)
        #expect(last?.total == 4)
    }

    @Test("progress reads as a sentence")
    func description() {
        let progress = PoolProgress(completed: 120, failed: 3, total: 400, elapsed: .seconds(4), isFinished: false)
        #expect(progress.rate == 30)
        #expect(progress.estimatedTimeRemaining == .seconds(280.0 / 30.0))
        #expect(progress.description == "120/400 items (3 failed), 30.0 items/s, about 9.3 s left")
        let unknown = PoolProgress(completed: 0, failed: 0, total: nil, elapsed: .zero, isFinished: false)
        #expect(unknown.estimatedTimeRemaining == nil)
        #expect(unknown.fractionCompleted == nil)
        #expect(unknown.description == "0/? items, 0.0 items/s")
    }
}

/// Waits (at most 30 s) until a file exists at `path`, then returns its input: a gate that
/// travels with the function (shared memory cannot).
struct PoolWaitForFile: ProcessFunction {
    let path: String
    func callAsFunction(_ input: Int) async throws -> Int {
        for _ in 0..<3000 where access(path, F_OK) != 0 { try await Task.sleep(for: .milliseconds(10)) }
        return input
    }
}
