import Glibc
import Testing

@testable import Multiprocessing

/// The pid of the worker that ran it.
struct PoolWorkerPID: ProcessFunction {
    func callAsFunction(_ input: Int) -> Int32 { getpid() }
}

@Suite("Process pool: the task budget (maxTasksPerWorker)")
struct PoolTaskBudgetTests {
    // Found by mp-stress (pool-1m's churning pool): the driver counted a task when its answer
    // came, and counted it again when it gave the worker back, so a worker with a budget of
    // n served n / 2 calls (`apply` one at a time) and the pool started twice the workers.
    @Test("a worker serves exactly maxTasksPerWorker calls, one at a time", .timeLimit(.minutes(1)))
    func applyBudget() async throws {
        let pids = try await withProcessPool(workers: 1, maxTasksPerWorker: 3) { pool in
            var pids: [Int32] = []
            for input in 0..<9 { pids.append(try await pool.apply(PoolWorkerPID(), input)) }
            return pids
        }
        let runs = pids.chunked()
        #expect(runs.map(\.count) == [3, 3, 3], "pids: \(pids)")
        #expect(Set(runs.map(\.first)).count == 3, "each run is a worker of its own: \(pids)")
    }

    @Test("a worker serves exactly maxTasksPerWorker chunks of a map", .timeLimit(.minutes(1)))
    func mapBudget() async throws {
        let pids = try await withProcessPool(workers: 1, maxTasksPerWorker: 2) { pool in
            try await pool.map(PoolWorkerPID(), Array(0..<6), chunkSize: 1)
        }
        #expect(pids.chunked().map(\.count) == [2, 2, 2], "pids: \(pids)")
    }
}

extension Array where Element: Equatable {
    /// Runs of equal neighbours, in order.
    fileprivate func chunked() -> [[Element]] {
        var runs: [[Element]] = []
        for element in self {
            if let last = runs.last?.last, last == element {
                runs[runs.count - 1].append(element)
            } else {
                runs.append([element])
            }
        }
        return runs
    }
}
