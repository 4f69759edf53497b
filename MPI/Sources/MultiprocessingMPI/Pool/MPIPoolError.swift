/// Why an item of an ``MPIPool`` call failed, or why the pool could not take the call.
///
/// Every item failure names the item's index in the inputs and the rank that ran it;
/// `description` reads as a sentence: `item 17 failed on rank 2: the function threw
/// ParseError: ...`, or `item 17 failed: rank 3 was lost (no message for 2.0 seconds) while
/// it held the item`.
public struct MPIPoolError: Error, Sendable, CustomStringConvertible {
    /// What happened to an item on its rank (as ``Multiprocessing/ProcessPoolError/Reason``
    /// says on one machine).
    public enum Kind: String, Codable, Sendable {
        /// The function threw; the detail names the error's type and says it.
        case threw
        /// The local worker process running the item ended (a crash, a signal, `exit`);
        /// the rank replaced it.
        case workerEnded
        /// The item ran past the call's timeout; its local worker was killed and replaced.
        case timedOut
        /// The rank could not run the function (its type is not in the program, or the
        /// function or an input did not decode there).
        case couldNotRun
        /// The local worker passed the pool's memory limit.
        case memoryLimitExceeded
        /// The call was cancelled before the item finished (the non-throwing forms only).
        case cancelled
        /// Anything else the rank's pool reported.
        case other
    }

    /// What happened.
    public enum Reason: Sendable {
        /// The item failed on its rank (see ``Kind``); the detail says how.
        case item(Kind, String)
        /// The rank was lost (it died, or went silent past the liveness bound) while it held
        /// the item.
        case rankLost(silentFor: Duration?)
        /// No worker rank is left to run the item.
        case noRanks
        /// The pool was closed before the call.
        case closed
        /// The call was cancelled before the item finished (the non-throwing forms only).
        case cancelled
        /// The pool could not start or could not send the call. Says why.
        case couldNotRun(String)
    }

    /// The index of the failed item in the call's inputs; `nil` for a failure of the pool itself.
    public let index: Int?
    /// The worker rank that held the item, when one did.
    public let rank: Int?
    /// What happened.
    public let reason: Reason

    init(index: Int? = nil, rank: Int? = nil, reason: Reason) {
        self.index = index
        self.rank = rank
        self.reason = reason
    }

    /// A sentence: which item, which rank, and what happened.
    public var description: String {
        let item = index.map { "item \($0) failed" } ?? "the call failed"
        let on = rank.map { " on rank \($0)" } ?? ""
        switch reason {
        case .item(_, let detail): return "\(item)\(on): \(detail)"
        case .rankLost(let silence):
            let quiet = silence.map { " (no message for \($0))" } ?? ""
            return "\(item): rank \(rank.map(String.init) ?? "?") was lost\(quiet) while it held the item"
        case .noRanks: return "\(item): the MPI pool has no worker rank left"
        case .closed: return "\(item): the MPI pool is closed"
        case .cancelled: return "\(item): the call was cancelled"
        case .couldNotRun(let why): return "\(item)\(on): \(why)"
        }
    }
}
