import Glibc
import Logging

/// What a pool worker sets up before it serves, for the pool's options: it ignores SIGINT,
/// forwards its logs to the pool, and watches its memory.
///
/// Carried by the worker's target (``ServePool``), so its queue and shared memory travel
/// as descriptors; ``install()`` is the one call the worker makes for all of it.
struct PoolWorkerExtras: Codable, Sendable {
    /// The queue of the pool's ``WorkerLogs``; `nil`: the worker's logging is left alone.
    var logs: Queue<WorkerLogRecord>?
    /// The level the worker's loggers start at.
    var logLevel: Logger.Level = .info
    /// The ``MemoryCeiling``'s limit and notes, if the pool has one.
    var memoryLimit: Int?
    var memoryNotes: SharedArray<Int>?

    /// Sets the worker up (at the start of ``ServePool/run()``).
    func install() {
        // Ctrl-C in a terminal signals the whole foreground process group, workers
        // included: only the parent decides what it means. A parent that dies of it takes
        // its workers with it (their parent-death signal); one that handles it keeps them.
        signal(SIGINT, SIG_IGN)
        if let logs { WorkerLogs.install(queue: logs, level: logLevel) }
        if let memoryLimit, let memoryNotes { MemoryCeiling.watch(limit: memoryLimit, notes: memoryNotes) }
    }
}
