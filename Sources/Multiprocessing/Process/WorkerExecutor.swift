import Synchronization

/// Runs a worker's work on the worker's main thread.
///
/// The work (a target's `run()`, a function's call) is `async` by protocol, but most of it
/// is synchronous. Running it as a task that prefers this executor keeps it on the main
/// thread: no pool of threads is started just to run a synchronous body (a third of a
/// millisecond per forkserver worker), and code that insists on the main thread is happy.
/// Work that awaits something elsewhere (a sleep, another actor) comes back here.
final class WorkerExecutor: TaskExecutor, Sendable {
    private let jobs = Mutex<[UnownedJob]>([])
    private let wakeUp = ThreadSignal()
    private let finished = Atomic<Bool>(false)

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        jobs.withLock { $0.append(job) }
        wakeUp.fire()
    }

    /// Runs `work` to completion on the calling thread and returns its result.
    func run<Result: Sendable>(_ work: @escaping @Sendable () async -> Result) -> Result {
        let result = Mutex<Result?>(nil)
        Task(executorPreference: self) {
            let value = await work()
            result.withLock { $0 = value }
            self.finished.store(true, ordering: .releasing)
            self.wakeUp.fire()
        }
        while !finished.load(ordering: .acquiring) {
            wakeUp.wait()
            let ready = jobs.withLock { jobs -> [UnownedJob] in
                defer { jobs.removeAll(keepingCapacity: true) }
                return jobs
            }
            for job in ready { job.runSynchronously(on: asUnownedTaskExecutor()) }
        }
        return result.withLock { $0! }
    }
}
