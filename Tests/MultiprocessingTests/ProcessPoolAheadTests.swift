import Glibc
import Synchronization
import Testing

@testable import Multiprocessing

/// Items that make a slow chunk's successor wait: item 0 waits (up to 30 s) until item 1
/// has run, then returns whether it saw it run, or (with `killsWorker`) SIGKILLs its own
/// worker. Item 1 marks that it ran. Every item appends its index to `directory/runs` (one
/// `O_APPEND` write each, so that concurrent runs cannot interleave) and, except item 0,
/// takes 5 ms: chunks too slow to be batched, so each is sent ahead behind the one before.
struct WaitsForItemOne: ProcessFunction {
    var directory: String
    var killsWorker = false
    /// Item 0 does not wait for item 1: it SIGKILLs its worker at once.
    var killsAtOnce = false

    func callAsFunction(_ input: Int) -> Bool {
        let log = open("\(directory)/runs", O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o600)
        if log >= 0 {
            let line = Array("\(input)\n".utf8)
            _ = line.withUnsafeBytes { write(log, $0.baseAddress, $0.count) }
            close(log)
        }
        switch input {
        case 0:
            if killsAtOnce {
                usleep(20_000)
                kill(getpid(), SIGKILL)
            }
            var seen = false
            for _ in 0..<30_000 where !seen {
                seen = access("\(directory)/one", F_OK) == 0
                if !seen { usleep(1000) }
            }
            if killsWorker { kill(getpid(), SIGKILL) }
            return seen
        case 1:
            close(open("\(directory)/one", O_WRONLY | O_CREAT | O_CLOEXEC, 0o600))
            return true
        default:
            usleep(5000)
            return true
        }
    }

    /// How many times each item ran, by the log.
    static func runs(in directory: String) -> [Int: Int] {
        var counts: [Int: Int] = [:]
        let log = open("\(directory)/runs", O_RDONLY | O_CLOEXEC)
        guard log >= 0 else { return counts }
        defer { close(log) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while case let count = read(log, &buffer, buffer.count), count > 0 { bytes += buffer[..<count] }
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") {
            if let index = Int(line) { counts[index, default: 0] += 1 }
        }
        return counts
    }
}

/// A chunk sent ahead to a busy worker (so that the worker starts it the moment it answers)
/// must not wait there while another worker is free: the free one takes it back.
@Suite("Process pool: chunks sent ahead", .timeLimit(.minutes(2)))
struct ProcessPoolAheadTests {
    @Test(
        "a slow item's successor, sent ahead to its worker, runs on a free worker instead",
        arguments: [StartMethod.spawn, .forkserver])
    func freeWorkerTakesItBack(_ method: StartMethod) async throws {
        try await withMarkerDirectory { directory in
            try await withProcessPool(workers: 2, startMethod: method) { pool in
                // Item 0 returns true only if item 1 ran while it waited: on the other worker.
                let outputs = try await pool.map(WaitsForItemOne(directory: directory), Array(0..<12), chunkSize: 1)
                #expect(outputs == Array(repeating: true, count: 12))
                let runs = WaitsForItemOne.runs(in: directory)
                #expect(runs == Dictionary(uniqueKeysWithValues: (0..<12).map { ($0, 1) }), "each item ran once")
            }
        }
    }

    @Test("several calls at once, each with a blocked item: every item runs once, none waits behind it")
    func concurrentCalls() async throws {
        // One worker more than the calls: each call's item 0 holds a worker until the
        // call's item 1 has run somewhere, so with fewer (the 2 this test had) two calls
        // can hold every worker at once and wait for each other (seen once under ASan,
        // 17:29 UTC: item 0 gave up after its 30 s), with or without chunks sent ahead.
        try await withProcessPool(workers: 4, startMethod: .forkserver) { pool in
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<3 {
                    group.addTask {
                        try await withMarkerDirectory { directory in
                            let outputs = try await pool.map(
                                WaitsForItemOne(directory: directory), Array(0..<8), chunkSize: 1)
                            #expect(outputs == Array(repeating: true, count: 8))
                            let runs = WaitsForItemOne.runs(in: directory)
                            #expect(runs == Dictionary(uniqueKeysWithValues: (0..<8).map { ($0, 1) }))
                        }
                    }
                }
                try await group.waitForAll()
            }
        }
    }

    @Test(
        "a worker that dies with a chunk sent ahead: the chunk runs once, taken back or run again",
        arguments: [false, true])
    func workerDiesWithChunkAhead(atOnce: Bool) async throws {
        try await withMarkerDirectory { directory in
            try await withProcessPool(workers: 2, startMethod: .forkserver) { pool in
                let function = WaitsForItemOne(directory: directory, killsWorker: true, killsAtOnce: atOnce)
                let results = await pool.results(function, Array(0..<10), chunkSize: 1)
                guard case .failure(let error) = results[0], case .workerEnded(.signaled(.kill)) = error.reason else {
                    Issue.record("item 0 should fail with its worker killed: \(results[0])")
                    return
                }
                #expect(error.index == 0)
                for (index, result) in results.enumerated().dropFirst() {
                    #expect((try? result.get()) == true, "item \(index): \(result)")
                }
                let runs = WaitsForItemOne.runs(in: directory)
                #expect(runs == Dictionary(uniqueKeysWithValues: (0..<10).map { ($0, 1) }), "each item ran once")
            }
        }
    }
}

/// The claim word alone, under contention: the pool offering each task while the worker
/// claims the one before, and a third thread stealing whatever is offered.
@Suite("Process pool: the claim word of a chunk sent ahead")
struct WorkerWordsTests {
    @Test("each task offered is run by exactly one side: the worker or the stealer")
    func exactlyOneSideRunsEachTask() throws {
        let words = try WorkerWords()
        // Up to this many tasks, for up to 3 s (a sanitized run on busy cores is slow).
        let count = 200_000
        let stopOffering = ContinuousClock.now + .seconds(3)
        let claimed = Mutex([Bool](repeating: false, count: count + 1))
        let stolen = Mutex([Bool](repeating: false, count: count + 1))
        // The last task the pool has offered (or had refused), whether it offers no more, and
        // the last task the worker claimed.
        let offered = Atomic<Int>(0)
        let offering = Atomic<Bool>(true)
        let reached = Atomic<Int>(0)
        let finished = Atomic<Int>(0)
        // The pool: offers task k while the worker may still be claiming k - 1, as a driver
        // sends a chunk ahead behind the one its worker has not started yet.
        onNewThread(after: .zero) {
            for task in 1...count where ContinuousClock.now < stopOffering {
                while reached.load(ordering: .acquiring) < task - 2 { sched_yield() }
                _ = words.offerAhead(UInt64(task))
                offered.store(task, ordering: .releasing)
            }
            offering.store(false, ordering: .releasing)
            finished.add(1, ordering: .releasing)
        }
        onNewThread(after: .zero) {
            var task = 1
            while true {
                while offered.load(ordering: .acquiring) < task && offering.load(ordering: .acquiring) {
                    sched_yield()
                }
                guard offered.load(ordering: .acquiring) >= task else { break }
                if words.claim(UInt64(task)) { claimed.withLock { $0[task] = true } }
                reached.store(task, ordering: .releasing)
                task += 1
            }
            finished.add(1, ordering: .releasing)
        }
        onNewThread(after: .zero) {
            while finished.load(ordering: .acquiring) < 2 {
                let task = offered.load(ordering: .acquiring)
                if task > 0, words.steal(UInt64(task)) { stolen.withLock { $0[task] = true } }
                sched_yield()
            }
            finished.add(1, ordering: .releasing)
        }
        let deadline = ContinuousClock.now + .seconds(60)
        while finished.load(ordering: .acquiring) < 3 && ContinuousClock.now < deadline { usleep(1000) }
        try #require(finished.load(ordering: .acquiring) == 3, "the threads did not finish")
        let tasks = offered.load(ordering: .acquiring)
        try #require(tasks >= 1000, "only \(tasks) tasks offered: the test did not run")
        let (ran, took) = (claimed.withLock { $0 }, stolen.withLock { $0 })
        let lost = (1...tasks).filter { !ran[$0] && !took[$0] }
        let twice = (1...tasks).filter { ran[$0] && took[$0] }
        #expect(lost.isEmpty, "\(lost.count) of \(tasks) tasks run by neither side, first \(lost.prefix(5))")
        #expect(twice.isEmpty, "\(twice.count) of \(tasks) tasks run by both sides, first \(twice.prefix(5))")
        #expect(took.contains(true), "no steal succeeded in \(tasks) tasks: the test did not contend")
    }
}
