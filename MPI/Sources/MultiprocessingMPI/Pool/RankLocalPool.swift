import Multiprocessing
import Synchronization

/// The local pool of a worker rank for ``MPIPool``s with the default settings (one worker
/// started from a fork server, no task budget, no retries, no initializer, no memory limit), started when
/// the rank is launched and shared by every such pool for the rank's life.
///
/// Starting a local pool costs the fork server's start (a process exec'd and its Swift
/// runtime loaded), a worker forked from it, and each process's first look-ups of the
/// function's type: most of the first pool's start (about 30 ms of it on the project's VM).
/// Done while the rank waits for its first order, it is not on the caller's path. A pool
/// with other settings starts a local pool of its own, as before, and ends it when it closes.
enum RankLocalPool {
    private static let shared = Mutex<Task<ProcessPool?, Never>?>(nil)

    /// Starts the shared pool, and warms it with one item (type look-ups, the worker's first
    /// task), on a task of its own.
    static func prepare() {
        shared.withLock { task in
            guard task == nil else { return }
            // Before the pool: its relay of the workers' records logs through the rank's
            // logging system, which holds them for rank 0.
            RankLogs.install()
            task = Task.detached {
                guard let pool = try? await ProcessPool(workers: 1, startMethod: .forkserver)
                else { return nil }
                _ = await pool.results(RankWarmUpFunction(), [0])
                return pool
            }
        }
    }

    /// The shared pool, when `service`'s settings are the defaults and it started.
    static func pool(for service: PoolService) async -> ProcessPool? {
        guard service.workers == 1, service.startMethod == .forkserver, service.maxTasksPerWorker == nil,
            service.retries == 0, service.initializer == nil, service.memoryLimit == nil
        else { return nil }
        guard let task = shared.withLock({ $0 }) else { return nil }
        return await task.value
    }
}

/// The warm-up item of ``RankLocalPool``: does nothing.
struct RankWarmUpFunction: ProcessFunction {
    func callAsFunction(_ input: Int) -> Int { input }
}
