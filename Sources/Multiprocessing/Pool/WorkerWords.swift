import Atomics

/// The two words a pool worker shares with its pool, in one shared region: which input it
/// is running, and the claim on a task sent to it ahead.
///
/// **Running.** The worker writes the task and the offset of the input it is about to call
/// (see ``PoolWorker/Running``); the pool reads it when the worker dies, to name the input
/// at fault.
///
/// **Ahead.** A task sent while the worker still runs another may be taken back by an idle
/// driver of the same call (a slow item should not wait behind another worker's item while
/// a worker is free). Exactly one side must run it, so it is claimed in this word: the pool
/// writes the task's key before sending it; the worker, about to start a task, swaps the
/// key for 0 (``claim(_:)``); a driver taking it back swaps the key for its negation
/// (``steal(_:)``). Whichever swap comes first wins, and the worker answers a stolen task
/// with ``PoolMessage/skipped(id:)`` instead of running it, clearing the mark. The mark
/// must outlive the next offer: an offer over it (the next task sent ahead before the
/// worker came to the stolen one) would have the worker run the stolen task too, so an
/// offer is refused while a mark stands (``offerAhead(_:)``), and that task goes as an
/// ordinary one.
struct WorkerWords: Sendable, Codable {
    /// The shared region's layout: two machine words.
    struct Layout: BitwiseCopyable {
        var running: Int
        var ahead: Int
    }

    private let region: SharedValue<Layout>

    init() throws {
        region = try SharedValue(Layout(running: -1, ahead: 0))
    }

    /// The word at `index` (0: running, 1: ahead) of the region, as an atomic.
    private func word(_ index: UInt) -> UnsafeAtomic<Int> {
        // The address of a live mapping (kept by `region`): never zero; the value starts
        // at least 8-byte aligned.
        UnsafeAtomic(at: UnsafeMutablePointer(bitPattern: region.address + index * 8).unsafelyUnwrapped)
    }

    /// The last ``PoolWorker/Running`` word the worker wrote (-1: none yet).
    var running: Int { word(0).load(ordering: .sequentiallyConsistent) }

    /// Written by the worker before each input, and once past the last (-1 by the pool
    /// when it takes the worker for a call).
    func setRunning(_ value: Int) {
        word(0).store(value, ordering: .sequentiallyConsistent)
    }

    /// A task id as kept in the ahead word: positive, so that its negation marks it stolen.
    private static func key(_ id: UInt64) -> Int { Int(truncatingIfNeeded: id & 0x0fff_ffff_ffff_ffff) + 1 }

    /// The pool: task `id`, about to be sent ahead, may be claimed or stolen from now on;
    /// `false` (and nothing changed) while a task stolen from this worker is not yet skipped.
    ///
    /// A task offered before and not yet claimed is no longer offered: nothing steals it,
    /// and the worker runs it.
    func offerAhead(_ id: UInt64) -> Bool {
        var found = word(1).load(ordering: .sequentiallyConsistent)
        while found >= 0 {
            let (exchanged, original) = word(1).compareExchange(
                expected: found, desired: Self.key(id), ordering: .sequentiallyConsistent)
            if exchanged { return true }
            found = original
        }
        return false
    }

    /// The worker, about to start task `id`: whether it may run it (`false`: an idle
    /// driver took it back; the mark is cleared). A task not offered is always the worker's,
    /// and so is one whose offer a later offer replaced.
    ///
    /// A failed swap is looked at again, not taken for a steal: the word may have changed
    /// from this task's key to the next task's (the pool offering that one while this one
    /// was not yet claimed), and then this task is the worker's. Taking every failed swap
    /// for a steal skipped such a task that nobody had taken, and its call waited forever
    /// for it (found under AddressSanitizer, where a worker is often descheduled between
    /// its look and its swap).
    func claim(_ id: UInt64) -> Bool {
        let key = Self.key(id)
        var found = word(1).load(ordering: .sequentiallyConsistent)
        while found == key {
            let (exchanged, original) = word(1).compareExchange(
                expected: key, desired: 0, ordering: .sequentiallyConsistent)
            if exchanged { return true }
            found = original
        }
        guard found == -key else { return true }
        // Stolen. Only the worker clears a mark (an offer over it is refused, and a steal
        // needs a key), so the swap cannot fail.
        _ = word(1).compareExchange(expected: -key, desired: 0, ordering: .sequentiallyConsistent)
        return false
    }

    /// The pool: takes task `id` back if the worker has not started it; `true` if taken.
    func steal(_ id: UInt64) -> Bool {
        let key = Self.key(id)
        return word(1).compareExchange(expected: key, desired: -key, ordering: .sequentiallyConsistent).exchanged
    }
}
