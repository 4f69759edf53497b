import Glibc
import Synchronization

/// A pool of persistent worker processes that run ``ProcessFunction``s (Python's
/// `multiprocessing.Pool`).
///
/// ```swift
/// struct Square: ProcessFunction {
///     func callAsFunction(_ x: Int) -> Int { x * x }
/// }
/// let squares = try await withProcessPool(workers: 3) { pool in
///     try await pool.map(Square(), [1, 2, 3, 4, 5])
/// }
/// // [1, 4, 9, 16, 25]
/// ```
///
/// - Each worker takes many tasks, for any function type, over its channel.
/// - A worker that crashes, is killed or calls `exit` fails only the item it was running
///   (a ``ProcessPoolError`` names the item and how the worker ended); the pool starts a
///   new worker and finishes the other items; with `retries:` the item runs again on a new
///   worker, up to that many more times. A per-item `timeout:` kills and replaces the
///   worker running an item that overruns. Cancelling the task that awaits a call kills the
///   workers running its items (they are replaced) and throws `CancellationError`.
/// - Chunks of quick items are sent a few ahead to each worker, so a worker does not idle
///   a round trip between them; which item a worker that dies was running is still known
///   exactly.
/// - Any number of tasks may use one pool at once; workers go to whoever waits first (a
///   call keeps a worker while it has chunks ready for it, as Python's queue of tasks
///   serves a map before the calls made after it).
/// - End it with ``close()`` then ``join()``, or ``terminate()``; ``withProcessPool(workers:startMethod:maxTasksPerWorker:retries:initializer:memoryLimit:forwardsLogs:_:)``
///   always does. A pool released without either lets its workers go: their channels
///   close, and each exits after its current item.
/// - Progress: each call takes a `progress:` closure or ``PoolProgressReporter``
///   (``map(_:_:chunkSize:timeout:progress:)-(_,_,_,_,PoolProgressReporter)``).
/// - The workers' swift-log records are logged again in this process, tagged with the
///   worker's name and pid; a `memoryLimit:` fails the item during which a worker passed
///   it; workers ignore SIGINT (the parent decides) and die with the parent.
/// - Streams: ``mapStream(_:_:chunkSize:timeout:)-(_,Inputs,_,_)`` (in order) and
///   ``mapUnordered(_:_:chunkSize:timeout:)-(_,Inputs,_,_)`` pull their inputs lazily, from a
///   `Sequence` or an `AsyncSequence`; ``submit(_:_:timeout:)``
///   returns a ``PoolTask`` to await or cancel.
public final class ProcessPool: Sendable {
    /// The number of workers the pool keeps.
    public let workerCount: Int
    /// How the workers start.
    public let startMethod: StartMethod
    /// After this many tasks (chunks) a worker is replaced by a new one; `nil`: never.
    public let maxTasksPerWorker: Int?
    /// How many more times an item is run when its worker dies while running it (a crash,
    /// a signal, `exit`); 0 (the default) fails it at once. See ``init(workers:startMethod:maxTasksPerWorker:retries:initializer:memoryLimit:forwardsLogs:)``.
    public let retries: Int
    /// The most resident memory a worker may use, in bytes; `nil`: no limit.
    public let memoryLimit: Int?
    private let initializer: EncodedTarget?
    /// What each worker sets up before serving (logs, memory watchdog).
    private let extras: PoolWorkerExtras
    private let logs: WorkerLogs?
    private let memoryCeiling: MemoryCeiling?
    private let state = Mutex(State())
    private let nextTaskID = Atomic<UInt64>(1)
    private static let workerCounter = Atomic<Int>(0)

    private struct State {
        /// Every worker that is started and not retired, busy or idle.
        var workers: [ObjectIdentifier: PoolWorker] = [:]
        var idle: [PoolWorker] = []
        var waiters: [(id: UInt64, continuation: CheckedContinuation<PoolWorker, any Error>)] = []
        /// Callers that have an id but have not yet looked for a worker, and those of
        /// them cancelled meanwhile.
        var unregistered: Set<UInt64> = []
        var cancelledEarly: Set<UInt64> = []
        var nextWaiter: UInt64 = 0
        /// Workers being started (replacements).
        var starting = 0
        /// Retired workers whose exit is still to be collected.
        var ending: [ObjectIdentifier: PoolWorker] = [:]
        /// Calls (map, apply, streams) under way.
        var activeCalls = 0
        var closed = false
        var lastStartError: String?
    }

    /// Starts a pool of `workers` processes.
    ///
    /// - Parameters:
    ///   - workers: how many worker processes; by default the CPUs this process may use.
    ///   - startMethod: ``StartMethod/spawn`` (default) or ``StartMethod/forkserver``.
    ///   - maxTasksPerWorker: replace a worker after this many tasks (Python's
    ///     `maxtasksperchild`); `nil` (default) keeps workers for the pool's life.
    ///   - retries: how many more times to run an item whose worker died while running it
    ///     (crashed, was killed by a signal, called `exit`), each time on a new worker; 0
    ///     (default) fails it at once, as Python's pool would have lost it. Only deaths are
    ///     retried: an item whose function threw, or that overran its `timeout`, or whose
    ///     call was cancelled, fails at once. An item whose every attempt died fails with
    ///     ``ProcessPoolError/attempts`` saying how many were made: a call always ends.
    ///   - initializer: a target run once in each worker before it serves (Python's
    ///     `initializer`). It is encoded on its own: handles stored in it do not travel.
    ///   - memoryLimit: the most resident memory (bytes) a worker may use. A worker that
    ///     passes it while running an item is killed at once; the item fails with
    ///     ``ProcessPoolError/Reason/memoryLimitExceeded(limit:resident:)`` and the worker is
    ///     replaced. Checked every few milliseconds by a thread in each worker. `nil`
    ///     (default): no limit.
    ///   - forwardsLogs: whether the workers' swift-log records are logged again in this
    ///     process (with metadata `worker` and `pid`), through this process's logging
    ///     system, which decides what is printed; workers start at its log level. Default
    ///     `true`. An initializer that bootstraps `LoggingSystem` itself needs `false`.
    /// - Throws: the error of a worker that could not start; the workers already started
    ///   are killed first, so none is left behind.
    public init(
        workers: Int = CurrentProcess.cpuCount, startMethod: StartMethod = .spawn, maxTasksPerWorker: Int? = nil,
        retries: Int = 0, initializer: (any ProcessTarget)? = nil, memoryLimit: Int? = nil, forwardsLogs: Bool = true
    ) async throws {
        precondition(workers > 0, "a process pool needs at least one worker")
        precondition(maxTasksPerWorker.map { $0 > 0 } ?? true, "maxTasksPerWorker must be positive")
        precondition(retries >= 0, "retries must not be negative")
        if let memoryLimit, memoryLimit <= 0 {
            throw ProcessPoolError(reason: .couldNotRun("memoryLimit must be positive, not \(memoryLimit)"))
        }
        workerCount = workers
        self.retries = retries
        self.startMethod = startMethod
        self.maxTasksPerWorker = maxTasksPerWorker
        self.memoryLimit = memoryLimit
        self.initializer = try initializer.map { try EncodedTarget($0) }
        let logs = forwardsLogs ? try WorkerLogs() : nil
        let ceiling = try memoryLimit.map { try MemoryCeiling(limit: $0) }
        self.logs = logs
        memoryCeiling = ceiling
        extras = PoolWorkerExtras(
            logs: logs?.queue, logLevel: logs?.level ?? .info, memoryLimit: memoryLimit, memoryNotes: ceiling?.notes)
        let started: [PoolWorker]
        do {
            started = try await Self.startAll(workers) { try await self.startWorker() }
        } catch {
            logs?.close()
            ceiling?.retire()
            throw error
        }
        state.withLock { state in
            for worker in started { state.workers[ObjectIdentifier(worker)] = worker }
            state.idle = started
        }
    }

    /// Starts `count` workers with `start`, all at once (each start mostly waits for its
    /// process to come up); if one fails, kills and reaps every one that started, then
    /// throws its error: a pool that cannot start leaves no process behind.
    static func startAll(
        _ count: Int, _ start: @escaping @Sendable () async throws -> PoolWorker
    ) async throws -> [PoolWorker] {
        let (started, failure) = await withTaskGroup(of: Result<PoolWorker, any Error>.self) { group in
            for _ in 0..<count {
                group.addTask {
                    do {
                        return .success(try await start())
                    } catch {
                        return .failure(error)
                    }
                }
            }
            var started: [PoolWorker] = []
            var failure: (any Error)?
            for await result in group {
                switch result {
                case .success(let worker): started.append(worker)
                case .failure(let error): failure = failure ?? error
                }
            }
            return (started, failure)
        }
        if let failure {
            for worker in started { worker.kill() }
            for worker in started { _ = await worker.termination() }
            throw failure
        }
        return started
    }

    private func startWorker() async throws -> PoolWorker {
        let number = Self.workerCounter.add(1, ordering: .relaxed).newValue
        return try await PoolWorker.start(
            name: "PoolWorker-\(number)", startMethod: startMethod, initializer: initializer, extras: extras)
    }

    /// The pids of the pool's current workers (for tests and diagnostics).
    var workerPIDs: [pid_t] { state.withLock { $0.workers.values.map(\.pid) } }

    func makeTaskID() -> UInt64 { nextTaskID.add(1, ordering: .relaxed).oldValue }

    // MARK: Calls

    /// Marks the start of a call; throws if the pool is closed.
    func beginCall() throws {
        let missing = try state.withLock { state -> Int in
            if state.closed { throw ProcessPoolError(reason: .closed) }
            state.activeCalls += 1
            // Replacements that could not start (descriptors or processes exhausted for a
            // while) are tried again, once per call: a pool left with no worker would
            // otherwise fail every call for good, though the limit is long gone (the fault
            // matrix found it), and trying only when asked cannot spin.
            let missing = max(0, workerCount - state.workers.count - state.starting)
            state.starting += missing
            return missing
        }
        for _ in 0..<missing { Task { await self.startReplacement() } }
    }

    /// Marks the end of a call; the last call of a closed pool lets the idle workers go.
    func endCall() {
        let leaving = state.withLock { state -> [PoolWorker] in
            state.activeCalls = max(0, state.activeCalls - 1)  // terminate() zeroes it
            return state.closed && state.activeCalls == 0 ? Self.dismissIdle(&state) : []
        }
        for worker in leaving { worker.close() }
    }

    // MARK: Workers

    /// Takes an idle worker, waiting for one if all are busy.
    /// - Throws: `CancellationError`, or ``ProcessPoolError`` when no worker is left.
    func acquire() async throws -> PoolWorker {
        while true {
            let worker = try await takeWorker()
            if worker.process.isAlive { return worker }
            // It died while idle (killed from outside): replace it and look again.
            retire(worker, kill: false)
        }
    }

    private func takeWorker() async throws -> PoolWorker {
        let id = state.withLock { state -> UInt64 in
            defer { state.nextWaiter += 1 }
            state.unregistered.insert(state.nextWaiter)
            return state.nextWaiter
        }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<PoolWorker, any Error>) in
                enum Action {
                    case resume(PoolWorker)
                    case fail(any Error)
                    case wait
                }
                let action = state.withLock { state -> Action in
                    state.unregistered.remove(id)
                    if state.cancelledEarly.remove(id) != nil { return .fail(CancellationError()) }
                    if let worker = state.idle.popLast() { return .resume(worker) }
                    if state.workers.isEmpty && state.starting == 0 {
                        if state.closed { return .fail(ProcessPoolError(reason: .closed)) }
                        return .fail(ProcessPoolError(reason: .noWorkers(state.lastStartError ?? "all were retired")))
                    }
                    state.waiters.append((id, continuation))
                    return .wait
                }
                switch action {
                case .resume(let worker): continuation.resume(returning: worker)
                case .fail(let error): continuation.resume(throwing: error)
                case .wait: break
                }
            }
        } onCancel: {
            let waiter = state.withLock { state -> CheckedContinuation<PoolWorker, any Error>? in
                guard let index = state.waiters.firstIndex(where: { $0.id == id }) else {
                    // Not waiting yet: the registration will see the mark. Already served:
                    // nothing to do (the caller checks for cancellation before using it).
                    if state.unregistered.contains(id) { state.cancelledEarly.insert(id) }
                    return nil
                }
                return state.waiters.remove(at: index).continuation
            }
            waiter?.resume(throwing: CancellationError())
        }
    }

    /// Gives a worker back after a task: to the first waiter, to the idle list, or (its
    /// task budget spent) to retirement with a replacement.
    ///
    /// The driver counted each task as its answer came (`finishedTask`): counting here too
    /// made a worker with a budget of n serve n / 2 calls of `apply`.
    func release(_ worker: PoolWorker) {
        let served = worker.tasksServed.load(ordering: .relaxed)
        if let limit = maxTasksPerWorker, served >= limit {
            retire(worker, kill: false)
            return
        }
        offer(worker)
    }

    /// Hands a ready worker to a waiter, or keeps it idle (or lets it go if the pool is
    /// closed and no call needs it).
    func offer(_ worker: PoolWorker) {
        enum Action {
            case give(CheckedContinuation<PoolWorker, any Error>)
            case dismiss
            case keep
        }
        let action = state.withLock { state -> Action in
            // Taken out meanwhile (terminate): it is already on its way out.
            guard state.workers[ObjectIdentifier(worker)] != nil else { return .keep }
            if !state.waiters.isEmpty { return .give(state.waiters.removeFirst().continuation) }
            if state.closed && state.activeCalls == 0 {
                state.workers[ObjectIdentifier(worker)] = nil
                state.ending[ObjectIdentifier(worker)] = worker
                return .dismiss
            }
            state.idle.append(worker)
            return .keep
        }
        switch action {
        case .give(let continuation): continuation.resume(returning: worker)
        case .dismiss: worker.close()
        case .keep: break
        }
    }

    /// Takes a worker out of the pool (killing it if asked) and starts a replacement,
    /// unless the pool is closed.
    func retire(_ worker: PoolWorker, kill: Bool) {
        let replace = state.withLock { state -> Bool in
            state.workers[ObjectIdentifier(worker)] = nil
            state.idle.removeAll { $0 === worker }
            state.ending[ObjectIdentifier(worker)] = worker
            let replace = !state.closed || state.activeCalls > 0
            if replace { state.starting += 1 }
            return replace
        }
        if kill { worker.kill() } else { worker.close() }
        // Collect its exit on a task of its own: the caller may be cancelled.
        Task {
            _ = await worker.termination()
            _ = state.withLock { $0.ending.removeValue(forKey: ObjectIdentifier(worker)) }
        }
        if replace {
            Task { await self.startReplacement() }
        }
    }

    private func startReplacement() async {
        do {
            let worker = try await startWorker()
            let keep = state.withLock { state -> Bool in
                state.starting -= 1
                guard !state.closed || state.activeCalls > 0 else { return false }
                state.workers[ObjectIdentifier(worker)] = worker
                return true
            }
            if keep {
                offer(worker)
            } else {
                worker.close()
                _ = await worker.termination()
            }
        } catch {
            let stranded = state.withLock { state -> [CheckedContinuation<PoolWorker, any Error>] in
                state.starting -= 1
                state.lastStartError = "a new worker could not start: \(error)"
                guard state.workers.isEmpty && state.starting == 0 else { return [] }
                defer { state.waiters.removeAll() }
                return state.waiters.map(\.continuation)
            }
            for waiter in stranded {
                waiter.resume(throwing: ProcessPoolError(reason: .noWorkers("a new worker could not start: \(error)")))
            }
        }
    }

    private static func dismissIdle(_ state: inout State) -> [PoolWorker] {
        let leaving = state.idle
        state.idle.removeAll()
        for worker in leaving {
            state.workers[ObjectIdentifier(worker)] = nil
            state.ending[ObjectIdentifier(worker)] = worker
        }
        return leaving
    }

    // MARK: Ending

    /// Takes no more calls; the workers exit once the calls under way are done (Python's
    /// `close()`). Wait for them with ``join()``.
    public func close() {
        let leaving = state.withLock { state -> [PoolWorker] in
            state.closed = true
            return state.activeCalls == 0 ? Self.dismissIdle(&state) : []
        }
        for worker in leaving { worker.close() }
    }

    /// Kills every worker now (Python's `terminate()`): calls under way fail. Wait for the
    /// workers' exits with ``join()``.
    public func terminate() {
        let (all, waiters) = state.withLock { state -> ([PoolWorker], [CheckedContinuation<PoolWorker, any Error>]) in
            state.closed = true
            state.activeCalls = 0
            let all = Array(state.workers.values) + Array(state.ending.values)
            for worker in state.workers.values { state.ending[ObjectIdentifier(worker)] = worker }
            state.workers.removeAll()
            state.idle.removeAll()
            defer { state.waiters.removeAll() }
            return (all, state.waiters.map(\.continuation))
        }
        for worker in all { worker.kill() }
        for waiter in waiters { waiter.resume(throwing: ProcessPoolError(reason: .closed)) }
    }

    /// Waits until every worker has exited (Python's `join()`). Closes the pool first if
    /// ``close()`` or ``terminate()`` was not called, so it cannot wait forever on workers
    /// that would never be told to leave.
    public func join() async {
        close()
        while true {
            let (workers, starting) = state.withLock { state in
                (Array(state.workers.values) + Array(state.ending.values), state.starting)
            }
            if workers.isEmpty && starting == 0 {
                // No worker is left to log: the relay logs what is queued, then ends.
                logs?.close()
                return
            }
            for worker in workers {
                _ = await worker.termination()
                _ = state.withLock { $0.ending.removeValue(forKey: ObjectIdentifier(worker)) }
            }
            if starting > 0 || workers.isEmpty {
                // A task of its own: in a cancelled task `Task.sleep` throws at once, and this
                // loop spun on a CPU until the starting workers were done (seen under load).
                await Task { try? await Task.sleep(for: .milliseconds(5)) }.value
            }
        }
    }

    deinit {
        logs?.close()
        memoryCeiling?.retire()
    }
}

/// Runs `body` with a new pool and always ends the pool's workers afterwards: closed and
/// joined when `body` returns, terminated when it throws (Python's `with Pool() as pool:`).
///
/// ```swift
/// let lengths = try await withProcessPool(workers: 4) { pool in
///     try await pool.map(CountWords(), files)
/// }
/// ```
///
/// The parameters are those of ``ProcessPool/init(workers:startMethod:maxTasksPerWorker:retries:initializer:memoryLimit:forwardsLogs:)``.
public func withProcessPool<Value>(
    workers: Int = CurrentProcess.cpuCount, startMethod: StartMethod = .spawn, maxTasksPerWorker: Int? = nil,
    retries: Int = 0, initializer: (any ProcessTarget)? = nil, memoryLimit: Int? = nil, forwardsLogs: Bool = true,
    _ body: (ProcessPool) async throws -> Value
) async throws -> Value {
    let pool = try await ProcessPool(
        workers: workers, startMethod: startMethod, maxTasksPerWorker: maxTasksPerWorker, retries: retries,
        initializer: initializer, memoryLimit: memoryLimit, forwardsLogs: forwardsLogs)
    do {
        let result = try await body(pool)
        await pool.join()
        return result
    } catch {
        pool.terminate()
        await pool.join()
        throw error
    }
}
