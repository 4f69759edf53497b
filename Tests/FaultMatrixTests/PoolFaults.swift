import Glibc
import Logging
import Synchronization
import Testing

@testable import Multiprocessing

// The fault matrix's ProcessPool row.
//
// Child faults: one worker of the pool, chosen by its name (`PoolWorker-k`: the runner makes
// one pool, so its workers are numbered from 1, replacements after them), is armed by the
// pool's initializer to die at a seeded step and hit: a task received, before or after an
// item inside a chunk or batch, the chunk done, mid-reply (a reply larger than the socket
// buffer, cut), after the reply, or set up before its first task (a replacement worker too,
// with `maxTasksPerWorker`). The runner uses the pool through one of its calls (`results`,
// `results` with a timeout, `map`, the two streams, concurrent `submit`s, two calls at once)
// and checks every item: its right output, or an error naming it and how the dying worker
// ended, for the item that worker was running only, and with `retries` none at all. The pool
// must work again afterwards and leave no worker once closed.
//
// Parent faults: a process P (a child of the runner) owns the pool and maps in a loop; the
// runner signals P once the workers have started a seeded number of items (or while P is
// still making the pool); P must die of the signal and every worker with it.
//
// Spawn failure: RLIMIT_NOFILE lowered in the runner while a pool starts, or while a worker's
// replacement starts: a clear error naming EMFILE, nothing left half-made, and the pool (or a
// new one) works once the limit is back.

/// A table in named shared memory that pool workers write and the runner reads.
///
/// A pool's function travels as plain bytes (no descriptors go with a task), so the workers
/// attach the table by its name. Words: `[0]` the pid of the worker armed with the fault,
/// `[1]` P's phase (1 making its pool, 2 mapping), `[2...5]` P's first workers; then per item
/// 4 words: the pid that first started it, the last one, and how many times it started.
enum PoolLedger {
    static let header = 8
    static let itemWords = 4
    static let maximumItems = 256

    /// Made under a name of its own: the runner's leak check counts the library's entries
    /// (`mp-...`) in /dev/shm, which is shared by the cells running at once; a case's ledger is
    /// its scaffolding, unlinked by the case itself.
    static func create() throws -> SharedMemory {
        try SharedMemory(
            creating: "fm-pool-ledger-\(getpid())-\(UInt32.random(in: 0...UInt32.max))",
            size: MemoryLayout<Int>.stride * (header + itemWords * maximumItems),
            unlinkWhenOwnerExits: false)
    }

    /// The table's words in this process, attached once per process and kept.
    static func words(_ name: String) throws -> UnsafeMutablePointer<Int> {
        try attached.withLock { table in
            let memory = try table[name] ?? SharedMemory(attachingTo: name)
            table[name] = memory
            // The mapping lives as long as the process (the table keeps it).
            return memory.withUnsafeMutableBytes { $0.baseAddress!.assumingMemoryBound(to: Int.self) }
        }
    }

    private static let attached = Mutex<[String: SharedMemory]>([:])

    /// The words of the table this process made (the runner's: it keeps no second mapping,
    /// which would outlive the case).
    static func words(of memory: SharedMemory) -> UnsafeMutablePointer<Int> {
        memory.withUnsafeMutableBytes { $0.baseAddress!.assumingMemoryBound(to: Int.self) }
    }

    static func slot(_ words: UnsafeMutablePointer<Int>, _ index: Int) -> UnsafeMutablePointer<Int> {
        words + header + itemWords * index
    }

    /// What the function returns for `index`.
    static func expected(_ index: Int) -> Int { index &* 2_654_435_761 % 1_000_003 }

    /// Items started so far, all runs counted.
    static func started(_ words: UnsafeMutablePointer<Int>, items: Int) -> Int {
        (0..<items).reduce(0) { $0 + slot(words, $1)[2] }
    }
}

/// What ``LedgerWork`` returns for an item.
struct LedgerOutput: Codable, Sendable {
    var index: Int
    var value: Int
    var pid: Int32
    var padding: [UInt8]
}

/// Records the item's run in the ledger, optionally naps or pads its output, and returns a
/// value the runner can check.
struct LedgerWork: ProcessFunction {
    var ledger: String
    /// Bytes of padding in each output: large outputs make a chunk's reply larger than the
    /// socket's buffer, so it goes out in parts (the mid-reply step).
    var padding = 0
    var napMicroseconds = 0
    /// The item whose first run SIGKILLs its worker (the spawn-failure cases' way of
    /// making the pool start a replacement).
    var killsItself: Int?
    /// Whether each item logs a record (forwarded to the pool's process).
    var logs = false

    func callAsFunction(_ index: Int) throws -> LedgerOutput {
        guard (0..<PoolLedger.maximumItems).contains(index) else { throw PoolFaultError.badIndex(index) }
        let slot = PoolLedger.slot(try PoolLedger.words(ledger), index)
        let pid = Int(getpid())
        if slot[2] == 0 { slot[0] = pid }
        slot[1] = pid
        slot[2] += 1
        if killsItself == index && slot[2] == 1 { kill(getpid(), SIGKILL) }
        if napMicroseconds > 0 { usleep(UInt32(napMicroseconds)) }
        // A record through the pool's log relay (a queue every worker writes): a worker
        // that dies must not jam it for the others.
        if logs { Logger(label: "fault-matrix.pool").info("item \(index)") }
        return LedgerOutput(
            index: index, value: PoolLedger.expected(index), pid: getpid(),
            padding: [UInt8](repeating: UInt8(truncatingIfNeeded: index), count: padding))
    }
}

enum PoolFaultError: Error {
    /// An item index outside the ledger, or out of order in an ordered stream.
    case badIndex(Int)
    /// getrlimit failed with this errno.
    case noLimit(Int32)
}

/// The runner's log handler: counts the records relayed from the workers, prints nothing
/// (each item logs one).
struct CountingLogHandler: LogHandler {
    static let records = Atomic<Int>(0)
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }
    func log(event: LogEvent) {
        Self.records.add(1, ordering: .relaxed)
    }
}

/// The pool's initializer: arms the fault in the worker named `worker` only, and notes its pid.
struct ArmPoolWorker: ProcessTarget {
    var ledger: String
    var worker: String
    var step: String
    var hits: Int
    var action: FaultInjection.Action

    func run() throws {
        guard CurrentProcess.name == worker else { return }
        try PoolLedger.words(ledger)[0] = Int(getpid())
        FaultInjection.arm(step, after: hits, action: action)
    }
}

/// Squares, for the pool's check afterwards.
struct PoolFaultSquare: ProcessFunction {
    func callAsFunction(_ x: Int) -> Int { x * x }
}

/// The case's parent for the parent faults: owns a pool and maps over the ledger in a loop
/// until it is signalled.
struct PoolOwner: ProcessTarget {
    var ledger: String
    var workers: Int
    var startMethod: StartMethod
    var retries: Int
    var maxTasksPerWorker: Int?
    var items: Int
    var chunkSize: Int
    var napMicroseconds: Int

    func run() async throws {
        let words = try PoolLedger.words(ledger)
        words[1] = 1
        let pool = try await ProcessPool(
            workers: workers, startMethod: startMethod, maxTasksPerWorker: maxTasksPerWorker, retries: retries)
        for (offset, pid) in pool.workerPIDs.prefix(4).enumerated() { words[2 + offset] = Int(pid) }
        words[1] = 2
        let work = LedgerWork(ledger: ledger, napMicroseconds: napMicroseconds)
        while true {
            _ = await pool.results(work, Array(0..<items), chunkSize: chunkSize)
        }
    }
}

/// Runs `body`, or gives up after `bound` (cancelling it): `nil` then.
func withinBound<T: Sendable>(_ bound: Duration, _ body: @escaping @Sendable () async throws -> T) async throws -> T? {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try? await Task.sleep(for: bound)
            return nil
        }
        defer { group.cancelAll() }
        return try await group.next() ?? nil
    }
}

/// Whether process `pid` has ended (gone, or a zombie).
func poolProcessEnded(_ pid: Int) -> Bool {
    guard pid > 0, let stat = readTextFile("/proc/\(pid)/stat") else { return true }
    // The state follows the command name in parentheses, which may itself hold spaces.
    guard let close = stat.lastIndex(of: ")") else { return true }
    return stat[close...].dropFirst(2).first == "Z"
}

/// Runs `body` with RLIMIT_NOFILE lowered so that `spare` more descriptors can be opened in
/// this process, then restores it.
func withSpareDescriptors<T>(_ spare: Int, _ body: () async throws -> T) async throws -> T {
    var saved = rlimit()
    guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &saved) == 0 else {
        throw PoolFaultError.noLimit(errno)
    }
    // A new descriptor takes the lowest free number: the free numbers below the limit are
    // what can still be opened.
    let open = Set(openDescriptors().keys)
    var limit: Int32 = 0
    var free = 0
    while free < spare || open.contains(limit) {
        if !open.contains(limit) { free += 1 }
        limit += 1
    }
    var lowered = saved
    lowered.rlim_cur = rlim_t(limit)
    _ = setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &lowered)
    defer { _ = setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &saved) }
    return try await body()
}

/// Prints a case's parameters when `MP_POOL_DEBUG` is set.
func debugNote(_ text: String) {
    guard getenv("MP_POOL_DEBUG") != nil else { return }
    let line = Array("[pool case] \(text)\n".utf8)
    _ = line.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
}

/// Whether an error's text names descriptor exhaustion.
func namesDescriptorExhaustion(_ error: any Error) -> Bool {
    let text = "\(error)"
    return text.contains("EMFILE") || text.contains("Too many open files") || text.contains("too many open files")
}

enum PoolScenario: FaultScenario {
    static let object = "ProcessPool"

    /// The worker steps (Sources/Multiprocessing/Pool/ServePool.swift, and the mid-frame step
    /// of Messaging/MessageStream.swift for a reply cut short).
    static let steps = [
        "pool.worker.initialized", "pool.worker.received", "pool.worker.beforeItem", "pool.worker.afterItem",
        "pool.worker.taskDone", "stream.send.midFrame", "pool.worker.replied",
    ]

    /// The pool's calls a case uses.
    enum Call: CaseIterable {
        case results, resultsTwice, resultsWithTimeout, map, unorderedStream, orderedStream, submits
    }

    static func run(_ point: FaultPoint) async throws -> CaseOutcome {
        if let action = point.fault.childAction { return try await childFault(point, action) }
        if let signal = point.fault.parentSignal { return try await parentFault(point, signal) }
        return try await spawnFailure(point)
    }

    // MARK: Child faults

    static func childFault(_ point: FaultPoint, _ action: FaultInjection.Action) async throws -> CaseOutcome {
        var random = point.random
        let step = steps[point.index % steps.count]
        let workers = Int.random(in: 2...3, using: &random)
        let method: StartMethod = Bool.random(using: &random) ? .spawn : .forkserver
        let retries = Int.random(in: 0...2, using: &random) == 0 ? 1 : 0
        let maxTasks: Int? = Int.random(in: 0...3, using: &random) == 0 ? 3 : nil
        var call = Call.allCases.randomElement(using: &random)!
        var items = Int.random(in: 12...40, using: &random)
        var chunkSize = [1, 2, 4, 0].randomElement(using: &random)!
        var padding = 0
        var hits = Int.random(in: 0...2, using: &random)
        if step == "stream.send.midFrame" {
            // A chunk's reply of 4 outputs of 80 KB: more than the socket holds at once.
            (padding, chunkSize, items, hits) = (80_000, 4, Int.random(in: 12...20, using: &random), 0)
            if call == .submits || call == .resultsWithTimeout { call = .results }
        }
        if step == "pool.worker.initialized" { hits = 0 }
        // A replacement worker (after a task budget) or one of the first.
        let armed =
            maxTasks != nil
            ? Int.random(in: 1...(workers + 2), using: &random)
            : Int.random(
                in: 1...workers, using: &random)
        if call == .submits { items = min(items, 10) }

        let ledger = try PoolLedger.create()
        defer { try? ledger.unlink() }
        let words = PoolLedger.words(of: ledger)
        let forwardsLogs = Bool.random(using: &random)
        // A runner runs one case: its logging system is set once, before the pool reads its level.
        if forwardsLogs { LoggingSystem.bootstrap { _ in CountingLogHandler() } }
        // A memory ceiling far above what a worker uses: its watchdog runs in every worker.
        let memoryLimit: Int? = Bool.random(using: &random) ? 1 << 32 : nil
        let pool = try await ProcessPool(
            workers: workers, startMethod: method, maxTasksPerWorker: maxTasks, retries: retries,
            initializer: ArmPoolWorker(
                ledger: ledger.name, worker: "PoolWorker-\(armed)", step: step, hits: hits, action: action),
            memoryLimit: memoryLimit, forwardsLogs: forwardsLogs)
        let work = LedgerWork(ledger: ledger.name, padding: padding, logs: forwardsLogs)
        let size: Int? = chunkSize == 0 ? nil : chunkSize
        var outcome = CaseOutcome()
        let context =
            "\(step) hit \(hits + 1) in PoolWorker-\(armed) of \(workers) (\(method), retries \(retries), "
            + "maxTasks \(maxTasks.map(String.init) ?? "none"), \(call), \(items) items, chunk \(chunkSize), "
            + "logs \(forwardsLogs), memory limit \(memoryLimit != nil))"

        debugNote(context)
        // What each item came to: an output, or an error.
        var seen: [Int: [Result<LedgerOutput, any Error>]] = [:]
        var streamFailure: (any Error)?
        let finished = try await withinBound(.seconds(40)) { [call, items] in
            try await Self.use(pool, call, work, items: items, chunkSize: size)
        }
        guard let finished else {
            pool.terminate()
            _ = try await withinBound(.seconds(10)) { await pool.join() }
            return CaseOutcome(problems: ["\(context): the call did not end within 40 s"])
        }
        (seen, streamFailure) = finished

        let armedPID = words[0]
        // The armed worker is gone: the fault fired, or (with a task budget) it was retired.
        let fired = armedPID != 0 && poolProcessEnded(armedPID)
        let expectedEnd = Self.termination(of: action)
        var failures = 0
        var errorSeen = ""
        func checkFailure(_ error: any Error, index: Int?) {
            failures += 1
            guard let error = error as? ProcessPoolError, case .workerEnded(let ended) = error.reason else {
                outcome.problems.append("\(context): item \(index ?? -1) failed with an unexpected error: \(error)")
                return
            }
            errorSeen = "\(error)"
            if !expectedEnd.contains(ended) {
                outcome.problems.append("\(context): the worker's end is \(ended), not \(expectedEnd)")
            }
            if Int(error.workerPID ?? 0) != armedPID {
                outcome.problems.append("\(context): \(error) names pid \(error.workerPID ?? 0), not \(armedPID)")
            }
            guard let failed = error.index else {
                outcome.problems.append("\(context): \(error) names no item")
                return
            }
            // An error names the item's index in its own call: an apply's is 0, the second
            // of two calls over halves counts from the half.
            if let index {
                let expected =
                    call == .submits ? 0 : call == .resultsTwice && index >= items / 2 ? index - items / 2 : index
                if failed != expected {
                    outcome.problems.append("\(context): item \(index)'s error names item \(failed), not \(expected)")
                }
            }
            if !"\(error)".contains("item \(failed)") {
                outcome.problems.append("\(context): \"\(error)\" does not name its item")
            }
            // The item at fault was started by the dying worker, or was about to be. (An
            // apply's error names item 0 of its own call.)
            let item = index ?? failed
            if (0..<items).contains(item) {
                let first = PoolLedger.slot(words, item)[0]
                if first != armedPID && !(first == 0 && step == "pool.worker.beforeItem") {
                    outcome.problems.append(
                        "\(context): item \(item) failed with the armed worker's end but was first run by \(first)")
                }
            } else {
                outcome.problems.append("\(context): \(error) names an item not in the call")
            }
        }
        for index in 0..<items {
            let results = seen[index] ?? []
            if results.count > 1 {
                outcome.problems.append("\(context): item \(index) came back \(results.count) times")
            }
            for result in results {
                switch result {
                case .success(let output):
                    if output.value != PoolLedger.expected(index) || output.index != index
                        || output.padding.count != padding
                    {
                        outcome.problems.append("\(context): item \(index) has a wrong output")
                    }
                case .failure(let error):
                    checkFailure(error, index: index)
                }
            }
            if results.isEmpty && streamFailure == nil && call != .submits {
                outcome.lost += 1
                outcome.problems.append("\(context): item \(index) has no outcome")
            }
            // Run again only after the worker that first ran it died (its answer lost with it).
            let slot = PoolLedger.slot(words, index)
            if slot[2] > 2 || (slot[2] == 2 && slot[0] != armedPID) {
                outcome.problems.append(
                    "\(context): item \(index) ran \(slot[2]) times, first on \(slot[0]) (armed \(armedPID))")
            }
        }
        if let streamFailure { checkFailure(streamFailure, index: nil) }
        if failures > (fired ? 1 : 0) {
            outcome.problems.append("\(context): \(failures) items failed (fault fired: \(fired))")
        }
        if retries > 0 && failures > 0 {
            outcome.problems.append("\(context): with retries an item still failed")
        }
        // Exactly the item the worker was running fails: one at an item's steps (before it
        // ran, or after it ran with its output not yet sent), none between items and tasks
        // (the chunks it held run again elsewhere).
        let atItem = step == "pool.worker.beforeItem" || step == "pool.worker.afterItem"
        if fired && retries == 0 && failures != (atItem ? 1 : 0) && !(maxTasks != nil && failures == 0) {
            outcome.problems.append("\(context): the worker died at \(step) and \(failures) items failed")
        }
        outcome.errorSeen = errorSeen
        PoolScenario.log(
            "\(point.fault.rawValue) \(point.index) \(step) fired=\(fired) failed=\(failures) retries=\(retries) \(call)"
        )

        // The pool works afterwards, and closing it leaves no worker (the runner checks).
        let again = try await withinBound(.seconds(30)) {
            await pool.results(PoolFaultSquare(), Array(0..<8), chunkSize: 1)
        }
        if let again {
            // The armed worker may not have reached its step yet, or even started (a
            // replacement): it may die now, once.
            var lateFault = !fired && retries == 0
            for (index, result) in again.enumerated() where (try? result.get()) != index * index {
                if lateFault, case .failure(let error) = result, case .workerEnded(let ended) = error.reason,
                    expectedEnd.contains(ended), Int(error.workerPID ?? 0) == words[0], error.index == index
                {
                    lateFault = false
                    continue
                }
                outcome.problems.append("\(context): afterwards, item \(index) of another map gave \(result)")
            }
        } else {
            outcome.problems.append("\(context): another map afterwards did not end within 30 s")
            pool.terminate()
        }
        pool.close()
        if try await withinBound(.seconds(20), { await pool.join() }) == nil {
            outcome.problems.append("\(context): join after close did not end within 20 s")
        }
        // The relay carried the surviving workers' records: they were queued before their
        // items were answered; the relay thread logs them in its own time (join does not
        // wait for it), so within a bound. Only if an item answered: a map or stream ends
        // at its first failure, and when that was the armed worker's first item, the others
        // may not have finished one yet (seed 10 of a loaded repetition: PoolWorker-3 of 3
        // died at item 0 of an ordered stream while the two spawned workers were starting).
        let answered = seen.values.contains { $0.contains { (try? $0.get()) != nil } }
        let relayed = ContinuousClock.now.advanced(by: .seconds(10))
        while forwardsLogs && answered && CountingLogHandler.records.load(ordering: .relaxed) == 0
            && ContinuousClock.now < relayed
        {
            try await Task.sleep(for: .milliseconds(5))
        }
        if forwardsLogs && answered && CountingLogHandler.records.load(ordering: .relaxed) == 0 {
            outcome.problems.append("\(context): no worker's log record reached this process")
        }
        return outcome
    }

    /// How a worker ends of `action`.
    static func termination(of action: FaultInjection.Action) -> [Termination] {
        switch action {
        case .kill: [.signaled(.kill)]
        case .segmentationFault: [.signaled(.segmentationFault)]
        case .fatalError: [.signaled(.illegalInstruction), .signaled(.trap)]
        case .exitZero: [.exited(0)]
        case .hang: []
        }
    }

    /// Uses the pool through `call`; returns what each item came to, and the error that ended
    /// a stream or a throwing map (after which the items have no outcome).
    static func use(
        _ pool: ProcessPool, _ call: Call, _ work: LedgerWork, items: Int, chunkSize: Int?
    ) async throws -> ([Int: [Result<LedgerOutput, any Error>]], (any Error)?) {
        var seen: [Int: [Result<LedgerOutput, any Error>]] = [:]
        func record(_ results: [Result<LedgerOutput, ProcessPoolError>], from start: Int) {
            for (offset, result) in results.enumerated() {
                seen[start + offset, default: []].append(result.mapError { $0 })
            }
        }
        let inputs = Array(0..<items)
        switch call {
        case .results:
            record(await pool.results(work, inputs, chunkSize: chunkSize), from: 0)
        case .resultsWithTimeout:
            record(await pool.results(work, inputs, chunkSize: chunkSize, timeout: .seconds(30)), from: 0)
        case .resultsTwice:
            // Two calls at once, from two tasks, over halves of the inputs.
            let half = items / 2
            async let first = pool.results(work, Array(0..<half), chunkSize: chunkSize)
            async let second = pool.results(work, Array(half..<items), chunkSize: chunkSize)
            let (a, b) = await (first, second)
            record(a, from: 0)
            record(b, from: half)
        case .map:
            do {
                let outputs = try await pool.map(work, inputs, chunkSize: chunkSize)
                for output in outputs { seen[output.index, default: []].append(.success(output)) }
            } catch {
                return (seen, error)
            }
        case .unorderedStream, .orderedStream:
            let stream =
                call == .orderedStream
                ? pool.mapStream(work, inputs, chunkSize: chunkSize ?? 1)
                : pool.mapUnordered(work, inputs, chunkSize: chunkSize ?? 1)
            var previous = -1
            do {
                for try await output in stream {
                    if call == .orderedStream && output.index != previous + 1 {
                        seen[output.index, default: []].append(.failure(PoolFaultError.badIndex(output.index)))
                    }
                    previous = output.index
                    seen[output.index, default: []].append(.success(output))
                }
            } catch {
                return (seen, error)
            }
        case .submits:
            // Concurrent applies: each its own call; an error names item 0 of its call.
            let tasks = inputs.map { pool.submit(work, $0) }
            for (index, task) in zip(inputs, tasks) {
                do {
                    seen[index, default: []].append(.success(try await task.value))
                } catch {
                    seen[index, default: []].append(.failure(error))
                }
            }
        }
        return (seen, nil)
    }

    /// Appends a line to `<report directory>/ProcessPool-steps.log`: which step each case
    /// struck, whether the fault fired in the call, how many items failed.
    static func log(_ line: String) {
        let fd = open(
            "\(FaultMatrix.reportDirectory)/ProcessPool-steps.log", O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        guard fd >= 0 else { return }
        defer { close(fd) }
        let bytes = Array((line + "\n").utf8)
        _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    }

    // MARK: Parent faults

    static func parentFault(_ point: FaultPoint, _ signal: Int32) async throws -> CaseOutcome {
        var random = point.random
        let workers = Int.random(in: 2...3, using: &random)
        let method: StartMethod = Bool.random(using: &random) ? .spawn : .forkserver
        let items = Int.random(in: 8...32, using: &random)
        // 0: while P is still making its pool; else after that many items started.
        let after = Int.random(in: 0...3, using: &random) == 0 ? 0 : Int.random(in: 1...(2 * items), using: &random)
        let ledger = try PoolLedger.create()
        defer { try? ledger.unlink() }
        let words = PoolLedger.words(of: ledger)
        let owner = PoolOwner(
            ledger: ledger.name, workers: workers, startMethod: method, retries: Int.random(in: 0...1, using: &random),
            maxTasksPerWorker: Bool.random(using: &random) ? 2 : nil, items: items,
            chunkSize: Int.random(in: 1...3, using: &random), napMicroseconds: Int.random(in: 0...3000, using: &random))
        let context = "P with \(workers) \(method) workers signalled \(signal) after \(after) items started"
        debugNote(context)
        let parent = ChildProcess(owner)
        try await parent.start()
        var outcome = CaseOutcome()
        // Wait (bounded) for the moment, then signal P.
        let deadline = ContinuousClock.now.advanced(by: .seconds(20))
        while ContinuousClock.now < deadline {
            if after == 0 ? words[1] >= 1 : PoolLedger.started(words, items: items) >= after { break }
            if !parent.isAlive { break }
            try await Task.sleep(for: .milliseconds(1))
        }
        if ContinuousClock.now >= deadline {
            outcome.problems.append("\(context): P made no progress within 20 s")
        }
        kill(parent.pid ?? 0, signal)
        if try await withinBound(.seconds(20), { _ = try? await parent.join() }) == nil {
            outcome.problems.append("\(context): P did not end within 20 s of the signal")
            parent.kill()
            _ = try? await parent.join(timeout: .seconds(10))
        }
        if parent.termination != .signaled(ProcessSignal(rawValue: signal)) {
            outcome.problems.append("\(context): P ended \(parent.termination.map { "\($0)" } ?? "not at all")")
        }
        // Every worker it had (the first ones, and any that ran an item) dies with it.
        var pids = Set((2...5).map { words[$0] })
        for index in 0..<items {
            pids.insert(PoolLedger.slot(words, index)[0])
            pids.insert(PoolLedger.slot(words, index)[1])
        }
        pids.remove(0)
        let gone = ContinuousClock.now.advanced(by: .seconds(10))
        while ContinuousClock.now < gone && !pids.allSatisfy(poolProcessEnded) {
            try await Task.sleep(for: .milliseconds(5))
        }
        let orphans = pids.filter { !poolProcessEnded($0) }
        if !orphans.isEmpty {
            outcome.problems.append("\(context): workers \(orphans.sorted()) outlived P by 10 s")
            for pid in orphans { kill(pid_t(pid), SIGKILL) }
        }
        return outcome
    }

    // MARK: Spawn failure

    static func spawnFailure(_ point: FaultPoint) async throws -> CaseOutcome {
        var random = point.random
        let method: StartMethod = Bool.random(using: &random) ? .spawn : .forkserver
        let forwardsLogs = Bool.random(using: &random)
        // A runner runs one case: its logging system is set once, before the pool reads its level.
        if forwardsLogs { LoggingSystem.bootstrap { _ in CountingLogHandler() } }
        var outcome = CaseOutcome()
        if point.index % 2 == 0 {
            // The pool's start fails.
            let workers = Int.random(in: 1...3, using: &random)
            let spare = Int.random(in: 0...(workers * 5), using: &random)
            let context = "a pool of \(workers) \(method) workers starting with \(spare) descriptors spare"
            debugNote(context)
            do {
                let pool = try await withSpareDescriptors(spare) {
                    try await ProcessPool(workers: workers, startMethod: method, forwardsLogs: forwardsLogs)
                }
                // It fitted: it works.
                outcome.problems += await check(pool, context: context)
            } catch {
                if !namesDescriptorExhaustion(error) {
                    outcome.problems.append("\(context): an unclear error: \(error)")
                }
                outcome.errorSeen = "\(error)"
            }
        } else {
            // A replacement worker's start fails: an item kills its worker under the limit.
            let workers = Int.random(in: 1...3, using: &random)
            let spare = Int.random(in: 0...4, using: &random)
            let retries = Int.random(in: 0...1, using: &random)
            let items = Int.random(in: 6...16, using: &random)
            let victim = Int.random(in: 0..<items, using: &random)
            let context =
                "a \(workers)-worker \(method) pool (retries \(retries)) losing the worker of item \(victim) "
                + "of \(items) with \(spare) descriptors spare"
            debugNote(context)
            let ledger = try PoolLedger.create()
            defer { try? ledger.unlink() }
            let pool = try await ProcessPool(
                workers: workers, startMethod: method, retries: retries, forwardsLogs: forwardsLogs)
            let work = LedgerWork(ledger: ledger.name, killsItself: victim)
            let results = try await withinBound(.seconds(30)) {
                try await withSpareDescriptors(spare) { await pool.results(work, Array(0..<items), chunkSize: 1) }
            }
            if let results {
                for (index, result) in results.enumerated() {
                    switch result {
                    case .success(let output):
                        if output.value != PoolLedger.expected(index) {
                            outcome.problems.append("\(context): item \(index) has a wrong output")
                        }
                    case .failure(let error):
                        if case .workerEnded(.signaled(.kill)) = error.reason, error.index == victim {
                            if retries > 0 && !namesDescriptorExhaustion(error) {
                                // Retried: only a replacement that could not start excuses it.
                                outcome.errorSeen = "\(error)"
                            }
                            continue
                        }
                        if !namesDescriptorExhaustion(error) {
                            outcome.problems.append("\(context): item \(index): an unclear error: \(error)")
                        }
                        outcome.errorSeen = "\(error)"
                    }
                }
            } else {
                outcome.problems.append("\(context): the call did not end within 30 s")
                pool.terminate()
            }
            outcome.problems += await check(pool, context: context + ", limit restored")
        }
        // Once the limit is back, a new pool works.
        do {
            let pool = try await ProcessPool(workers: 2, startMethod: method)
            outcome.problems += await check(pool, context: "a new pool after the limit")
        } catch {
            outcome.problems.append("a new pool after the limit could not start: \(error)")
        }
        return outcome
    }

    /// Maps on `pool`, then closes and joins it; what went wrong.
    static func check(_ pool: ProcessPool, context: String) async -> [String] {
        var problems: [String] = []
        let results = try? await withinBound(.seconds(30)) {
            await pool.results(PoolFaultSquare(), Array(0..<8), chunkSize: 1)
        }
        if let results {
            for (index, result) in results.enumerated() where (try? result.get()) != index * index {
                problems.append("\(context): item \(index) of a map gave \(result)")
            }
        } else {
            problems.append("\(context): a map did not end within 30 s")
            pool.terminate()
        }
        pool.close()
        if (try? await withinBound(.seconds(20), { await pool.join() })) == nil {
            problems.append("\(context): join after close did not end within 20 s")
        }
        return problems
    }
}

/// The faults one after another: each case starts a runner, a pool of 2 or 3 workers and
/// often a fork server, and eight such cells at once (with the other rows) slowed the rest of
/// the suite past its time limits on the 2-core machine (1,000 round trips to one worker took
/// over 60 s).
@Suite("Fault matrix: ProcessPool", .serialized)
struct PoolFaultTests {
    /// One point, to look at a failing one again: `MP_POOL_POINT=<fault>:<index>`.
    @Test(.timeLimit(.minutes(2)), .enabled(if: getenv("MP_POOL_POINT") != nil))
    func onePoint() async throws {
        let parts = String(cString: getenv("MP_POOL_POINT")!).split(separator: ":")
        let fault = try #require(Fault(rawValue: String(parts[0])))
        let point = FaultPoint(object: PoolScenario.object, fault: fault, index: Int(parts[1])!, seed: FaultMatrix.seed)
        let outcome = try await ChildProcess.run(CaseRunner<PoolScenario>(), with: point, timeout: .seconds(90))
        print(
            "\(point): \(outcome.map { "lost \($0.lost), problems \($0.problems), leaks \($0.leaks), error \($0.errorSeen)" } ?? "HANG")"
        )
    }

    @Test("ProcessPool", .timeLimit(.minutes(10)), arguments: Fault.allCases)
    func pool(_ fault: Fault) async throws {
        try await FaultMatrix.check(PoolScenario.self, fault)
    }
}
