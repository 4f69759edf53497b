import Glibc
import Testing

@testable import Multiprocessing

/// Allocates and touches `input` MiB, holds it a moment, and returns a byte of it. From
/// 250 MiB on (sizes meant to pass a limit) it holds it 20 s: the watchdog must end it, on
/// however busy a machine, before it could return.
struct PoolAllocate: ProcessFunction {
    func callAsFunction(_ megabytes: Int) async throws -> Int {
        let count = megabytes << 20
        let memory = UnsafeMutableRawBufferPointer.allocate(byteCount: max(count, 1), alignment: 4096)
        defer { memory.deallocate() }
        // Every page touched: resident, not only reserved.
        for page in stride(from: 0, to: count, by: 4096) { memory[page] = UInt8(truncatingIfNeeded: page >> 12) }
        // Held long enough for the watchdog to look (it reads every 5 ms).
        try await Task.sleep(for: megabytes >= 250 ? .seconds(20) : .milliseconds(50))
        return Int(memory[count > 4096 ? 4096 : 0])
    }
}

@Suite("Pool memory limit", .timeLimit(.minutes(1)))
struct PoolMemoryLimitTests {
    @Test(
        "an item past the memory limit fails saying so; the others succeed; the pool keeps its workers",
        arguments: StartMethod.allCases)
    func overLimit(method: StartMethod) async throws {
        let limit = 100 << 20
        try await withProcessPool(workers: 2, startMethod: method, memoryLimit: limit) {
            (pool: ProcessPool) async throws in
            let results = await pool.results(PoolAllocate(), [1, 300, 2, 10, 3], chunkSize: 1)
            #expect(results.count == 5)
            for index in [0, 2, 3, 4] { #expect((try? results[index].get()) != nil) }
            guard case .failure(let error) = results[1] else {
                Issue.record("the 300 MB item succeeded under a 100 MB limit")
                return
            }
            #expect(error.index == 1)
            guard case .memoryLimitExceeded(let reportedLimit, let resident) = error.reason else {
                Issue.record("wrong reason: \(error)")
                return
            }
            #expect(reportedLimit == limit)
            #expect(resident > limit)
            #expect(error.description.contains("exceeded the memory limit of \(limit) bytes"))
            #expect(await poolSize(pool, reaches: 2))
            // The replacement works, and is watched too.
            #expect(try await pool.map(PoolAllocate(), [5, 5, 5, 5]).count == 4)
            let again = await pool.results(PoolAllocate(), [400])
            if case .failure(let error) = again[0], case .memoryLimitExceeded = error.reason {
            } else {
                Issue.record("a replacement worker was not held to the limit: \(again[0])")
            }
        }
    }

    @Test(
        "work within the limit is unaffected, and map throws the limit's error",
        // The limit is on resident memory, which AddressSanitizer inflates: freed blocks stay
        // in its quarantine (up to 256 MiB) and every touched byte costs an eighth more in
        // shadow memory, so a worker that allocated and freed 20 + 40 + 60 MiB can pass 200 MiB.
        // Measured: "item 5 failed: worker ... exceeded the memory limit" under ASan only.
        .disabled(if: Sanitizer.address, "AddressSanitizer's quarantine and shadow memory count as resident"))
    func withinLimit() async throws {
        try await withProcessPool(workers: 2, memoryLimit: 200 << 20) { (pool: ProcessPool) async throws in
            #expect(try await pool.map(PoolAllocate(), [20, 40, 60, 20, 40, 60]).count == 6)
            await #expect {
                try await pool.map(PoolAllocate(), [10, 500, 10])
            } throws: { error in
                guard let error = error as? ProcessPoolError, case .memoryLimitExceeded = error.reason else {
                    return false
                }
                return error.index == 1
            }
        }
    }

    @Test("an item past the memory limit is not retried: it would pass it again")
    func notRetried() async throws {
        try await withProcessPool(workers: 2, retries: 2, memoryLimit: 100 << 20) { (pool: ProcessPool) async throws in
            let results = await pool.results(PoolAllocate(), [1, 300, 2], chunkSize: 1)
            #expect((try? results[0].get()) != nil)
            #expect((try? results[2].get()) != nil)
            guard case .failure(let error) = results[1], case .memoryLimitExceeded = error.reason else {
                Issue.record("expected the memory limit: \(results[1])")
                return
            }
            #expect(error.attempts == 1)
        }
    }

    @Test("a pool without a limit reports a plain SIGKILL as before; a limit of zero is refused")
    func noLimit() async throws {
        try await withProcessPool(workers: 1) { (pool: ProcessPool) async throws in
            let results = await pool.results(PoolMisbehave(bad: 3), [3])
            guard case .failure(let error) = results[0], case .workerEnded(.signaled(let signal)) = error.reason else {
                Issue.record("expected a SIGKILL: \(results[0])")
                return
            }
            #expect(signal.rawValue == SIGKILL)
        }
        await #expect(throws: ProcessPoolError.self) { try await ProcessPool(workers: 1, memoryLimit: 0) }
    }
}
