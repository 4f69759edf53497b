import Synchronization
import Testing

@testable import Multiprocessing

/// The board's collector: a call that waits for the outcomes of several inputs is woken once
/// they are all in, or at once by a failure or its cancellation.
@Suite("Pool board")
struct PoolBoardTests {
    private func outcome(start: Int, count: Int) -> PoolChunkOutcome<Int> {
        PoolChunkOutcome(origin: start, start: start, count: count, outputs: Array(start..<start + count))
    }

    @Test("a collector waiting for 3 inputs' outcomes is woken by the last of them, not the first")
    func collectorWaitsForAll() async throws {
        let board = PoolBoard<Int, Int>()
        board.deliver(outcome(start: 0, count: 1))
        let returned = Flag()
        let collecting = Task {
            defer { returned.value.store(true, ordering: .sequentiallyConsistent) }
            return try await board.collect(inputs: 3)
        }
        try await Task.sleep(for: .milliseconds(50))
        var early = returned.value.load(ordering: .sequentiallyConsistent)
        #expect(!early, "it returned with one input's outcome of 3")
        board.deliver(outcome(start: 1, count: 1))
        try await Task.sleep(for: .milliseconds(20))
        early = returned.value.load(ordering: .sequentiallyConsistent)
        #expect(!early, "it returned with two inputs' outcomes of 3")
        board.deliver(outcome(start: 2, count: 1))
        let outcomes = try await collecting.value
        #expect(outcomes.map(\.start) == [0, 1, 2])
        // The next collect starts counting afresh.
        board.deliver(outcome(start: 3, count: 2))
        #expect(try await board.collect(inputs: 2).map(\.count) == [2])
    }

    @Test("a collector waiting for more outcomes is woken by a failure")
    func failureWakesCollector() async throws {
        let board = PoolBoard<Int, Int>()
        let collecting = Task { try await board.collect(inputs: 10) }
        board.deliver(outcome(start: 0, count: 4))
        try await Task.sleep(for: .milliseconds(20))
        board.fail(PlainError())
        await #expect(throws: PlainError.self) { try await collecting.value }
    }

    @Test("a collector waiting for more outcomes is woken by its task's cancellation")
    func cancellationWakesCollector() async throws {
        let board = PoolBoard<Int, Int>()
        let collecting = Task { try await board.collect(inputs: 10) }
        try await Task.sleep(for: .milliseconds(20))
        collecting.cancel()
        await #expect(throws: CancellationError.self) { try await collecting.value }
    }

    @Test("collectors woken from many threads at once get every outcome exactly once")
    func concurrentDeliveries() async throws {
        let board = PoolBoard<Int, Int>()
        let total = 2_000
        await withTaskGroup(of: Void.self) { group in
            for thread in 0..<4 {
                group.addTask {
                    for start in stride(from: thread, to: total, by: 4) {
                        board.deliver(self.outcome(start: start, count: 1))
                    }
                }
            }
            group.addTask {
                var seen: [Int] = []
                while seen.count < total {
                    let left = total - seen.count
                    let outcomes = (try? await board.collect(inputs: left.isMultiple(of: 3) ? left : 1)) ?? []
                    seen += outcomes.map(\.start)
                }
                #expect(seen.sorted() == Array(0..<total))
            }
        }
    }
}

private final class Flag: Sendable {
    let value = Atomic<Bool>(false)
}
