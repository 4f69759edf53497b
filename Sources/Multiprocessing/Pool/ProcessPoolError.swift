import Glibc

/// Why an item of a ``ProcessPool`` call failed, or why the pool could not take the call.
///
/// Every item failure names the item's index in the inputs; `description` reads as a
/// sentence: `item 17 failed: worker "PoolWorker-3" (pid 41213) was killed by SIGKILL while
/// running it`.
public struct ProcessPoolError: Error, Sendable, CustomStringConvertible {
    /// What happened.
    public enum Reason: Sendable {
        /// The function threw this error in the worker. When the error type is `Codable`,
        /// ``RemoteError/underlying`` is the error itself.
        case threw(RemoteError)
        /// The worker ended while running the item: a crash, a signal, or `exit` called by
        /// the function. The pool replaced it.
        case workerEnded(Termination)
        /// The item ran longer than the call's timeout; its worker was killed and replaced.
        case timedOut(Duration)
        /// The worker could not run the function at all (its type is not in the program, or
        /// the function or the input could not be decoded there). Says why.
        case couldNotRun(String)
        /// The pool was closed or terminated before the call.
        case closed
        /// The call was cancelled before the item finished (the non-throwing forms only).
        case cancelled
        /// The pool has no worker left and could not start one. Says why.
        case noWorkers(String)
        /// The worker's resident memory passed the pool's `memoryLimit` (bytes) while it ran
        /// the item: it was `resident` bytes when the worker was killed. The pool replaced it.
        case memoryLimitExceeded(limit: Int, resident: Int)
    }

    /// The index of the failed item in the call's inputs; `nil` for a failure of the pool
    /// itself (``Reason/closed``, ``Reason/noWorkers(_:)``).
    public let index: Int?
    /// The worker that was running the item, when one was.
    public let workerName: String?
    /// The pid of that worker.
    public let workerPID: pid_t?
    /// What happened.
    public let reason: Reason
    /// How many times the item ran: more than 1 when its workers died and the pool's
    /// ``ProcessPool/retries`` ran it again (the error is the last attempt's).
    public let attempts: Int

    init(index: Int? = nil, worker: PoolWorker? = nil, reason: Reason, attempts: Int = 1) {
        self.index = index
        self.workerName = worker?.process.name
        self.workerPID = worker?.process.pid
        // A worker killed by SIGKILL may have killed itself for passing its memory limit.
        self.reason = MemoryCeiling.explain(reason, pid: worker?.process.pid)
        self.attempts = attempts
    }

    /// The error the function threw, if that is why the item failed.
    public var remoteError: RemoteError? {
        if case .threw(let error) = reason { return error }
        return nil
    }

    /// A sentence: which item, which worker, and what happened.
    public var description: String {
        let item = index.map { "item \($0) failed: " } ?? ""
        let worker = workerName.map { "worker \"\($0)\" (pid \(workerPID ?? 0))" } ?? "its worker"
        switch reason {
        case .threw(let error): return "\(item)the function threw \(error)"
        case .workerEnded(let termination):
            let tries = attempts > 1 ? " (attempt \(attempts) of \(attempts); each one's worker died)" : ""
            return "\(item)\(worker) \(termination) while running it\(tries)"
        case .timedOut(let limit): return "\(item)it ran longer than \(limit); \(worker) was killed"
        case .couldNotRun(let why): return "\(item)\(worker) could not run it: \(why)"
        case .closed: return "\(item)the process pool is closed"
        case .cancelled: return "\(item)the call was cancelled"
        case .noWorkers(let why): return "\(item)the process pool has no worker left: \(why)"
        case .memoryLimitExceeded(let limit, let resident):
            return
                "\(item)\(worker) exceeded the memory limit of \(limit) bytes (resident \(resident) bytes) and was killed"
        }
    }
}
