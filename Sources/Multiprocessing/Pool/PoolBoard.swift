import Synchronization

/// A contiguous run of a call's inputs, sent to a worker as one task.
struct PoolChunk<Input: Sendable>: Sendable {
    /// The index, in the call's inputs, of the first input of the chunk this run was cut
    /// from: the key under which the call counts the chunk's unanswered inputs.
    var origin: Int
    /// The index of `inputs[0]` in the call's inputs.
    var start: Int
    var inputs: [Input]
    /// Which attempt this is (1 the first time): a run is attempted again only when its
    /// worker died while running it (see ``ProcessPool/retries``).
    var attempt = 1
    /// Workers that died with this run sent and none of its inputs at fault.
    var silentDeaths = 0
    /// The call's chunk size when this run is several of its chunks cut at once (small
    /// chunks of inputs in memory): a driver sends of it what its worker can run soon, in
    /// multiples of `unit`, and puts the rest back. `nil`: sent whole.
    var unit: Int?

    /// What a driver takes of this run when `budget` inputs fit in what it may send now:
    /// a whole chunk as it is; of a group, as many whole chunks (multiples of `unit`) as
    /// `budget` allows, at least one, and the rest (`nil` if nothing is left).
    func fitted(to budget: Int) -> (taken: PoolChunk, rest: PoolChunk?) {
        guard let unit else { return (self, nil) }
        let room = max(unit, budget / unit * unit)
        guard inputs.count > room else {
            var whole = self
            whole.unit = nil
            return (whole, nil)
        }
        let (head, rest) = split(at: room)
        return (head, rest)
    }

    /// The first `count` inputs, and the rest (to run later, still a group).
    func split(at count: Int) -> (PoolChunk, PoolChunk) {
        var head = self
        head.inputs = Array(inputs[..<count])
        head.unit = nil
        var rest = self
        rest.start = start + count
        rest.inputs = Array(inputs[count...])
        return (head, rest)
    }
}

/// What became of a run of inputs: the outputs of those that succeeded and the failures.
struct PoolChunkOutcome<Output: Sendable>: Sendable {
    /// See ``PoolChunk/origin``.
    var origin: Int
    /// The index of the run's first input.
    var start: Int
    var count: Int
    /// The outputs of the inputs that did not fail, in order.
    var outputs: [Output]
    /// The failures, by offset from `start`, in order.
    var failures: [(offset: Int, error: ProcessPoolError)] = []

    /// Calls `body` with each input's index and result, in order.
    func forEach(_ body: (Int, Result<Output, ProcessPoolError>) throws -> Void) rethrows {
        var failed = failures.makeIterator()
        var nextFailure = failed.next()
        var succeeded = outputs.makeIterator()
        for offset in 0..<count {
            if let failure = nextFailure, failure.offset == offset {
                try body(start + offset, .failure(failure.error))
                nextFailure = failed.next()
            } else if let output = succeeded.next() {
                try body(start + offset, .success(output))
            }
        }
    }
}

/// Where the task that runs a call meets the drivers that run its chunks on workers: the
/// call posts chunks, the drivers take them and deliver outcomes, the call collects them.
///
/// One driver per worker it holds, each with a few chunks sent to it: the board is
/// what lets the call cut chunks (it owns the inputs' iterator, which need not be
/// `Sendable`) while the drivers stay busy.
final class PoolBoard<Input: Sendable, Output: Sendable>: Sendable {
    private let state = Mutex(State())

    private struct State {
        var chunks: [PoolChunk<Input>] = []
        var head = 0
        /// No chunk will be posted any more.
        var finished = false
        var takers: [(budget: Int, continuation: CheckedContinuation<PoolChunk<Input>?, Never>)] = []
        var outcomes: [PoolChunkOutcome<Output>] = []
        /// The inputs the outcomes waiting to be collected cover.
        var outcomeInputs = 0
        var failure: (any Error)?
        var collector: CheckedContinuation<Void, any Error>?
        /// How many inputs' outcomes the waiting collector wants before it is woken.
        var collectorWants = 1
        var collectorCancelled = false
        /// Chunks sent ahead to a worker busy with another, by their task id.
        var ahead: [UInt64: Ahead] = [:]

        mutating func pop() -> PoolChunk<Input>? {
            guard head < chunks.count else { return nil }
            defer {
                head += 1
                if head == chunks.count {
                    chunks.removeAll(keepingCapacity: true)
                    head = 0
                }
            }
            return chunks[head]
        }

        /// The next chunk, of a group only what `budget` inputs allow (see
        /// ``PoolChunk/fitted(to:)``); the rest of the group stays first on the board. The
        /// split happens under the board's lock: a group is never off the board while
        /// another driver looks, so none of them can find the board finished while inputs
        /// are still to come back to it (they did: a 16-item map of slow items then ran on
        /// one worker while the other driver had ended).
        /// The chunks waiting, counted up to `limit` (a group counts as its chunks of `unit`).
        func waitingChunks(upTo limit: Int) -> Int {
            var count = 0
            for chunk in chunks[head...] where count < limit {
                count += chunk.unit.map { (chunk.inputs.count + $0 - 1) / $0 } ?? 1
            }
            return count
        }

        mutating func pop(budget: Int) -> PoolChunk<Input>? {
            guard let chunk = pop() else { return nil }
            let (taken, rest) = chunk.fitted(to: budget)
            if let rest { chunks.insert(rest, at: head) }
            return taken
        }
    }

    /// A chunk sent ahead (see ``WorkerWords``): an idle driver may take it back while its
    /// worker has not started it.
    private struct Ahead {
        var chunk: PoolChunk<Input>
        var words: WorkerWords
        /// Taken back by another driver; or seen started by its worker (no longer tried).
        var stolen = false
        var started = false
    }

    /// What ``tryTake()`` found.
    enum Take {
        case chunk(PoolChunk<Input>)
        /// None now; more may come.
        case empty
        case finished
    }

    /// Posts a chunk for the drivers.
    func post(_ chunk: PoolChunk<Input>) {
        let (taker, taken) = state.withLock {
            state -> (CheckedContinuation<PoolChunk<Input>?, Never>?, PoolChunk<Input>?) in
            guard !state.takers.isEmpty else {
                state.chunks.append(chunk)
                return (nil, nil)
            }
            let taker = state.takers.removeFirst()
            let (taken, rest) = chunk.fitted(to: taker.budget)
            if let rest { state.chunks.append(rest) }  // a taker waits only on an empty board
            return (taker.continuation, taken)
        }
        taker?.resume(returning: taken)
    }

    /// No more chunks: drivers waiting for one get `nil`. Idempotent.
    func finish() {
        let takers = state.withLock { state in
            state.finished = true
            defer { state.takers.removeAll() }
            return state.takers
        }
        for taker in takers { taker.continuation.resume(returning: nil) }
    }

    /// A chunk if one is waiting, without waiting; of a group, what `budget` inputs allow.
    ///
    /// With `leaving`, only if at least that many chunks (a group counting as the chunks it
    /// holds) stay on the board after it: a driver that takes a chunk to send ahead leaves
    /// one for every other driver, so no worker waits idle while the chunk it could run
    /// sits queued behind another worker's item.
    func tryTake(budget: Int, leaving: Int = 0) -> Take {
        state.withLock { state in
            if leaving > 0 && state.waitingChunks(upTo: leaving + 1) <= leaving {
                return state.finished && state.head == state.chunks.count ? .finished : .empty
            }
            if let chunk = state.pop(budget: budget) { return .chunk(chunk) }
            return state.finished ? .finished : .empty
        }
    }

    /// The next chunk (of a group, what `budget` inputs allow), waiting for one; `nil` once
    /// the call posts no more.
    func take(budget: Int) async -> PoolChunk<Input>? {
        await withCheckedContinuation { (continuation: CheckedContinuation<PoolChunk<Input>?, Never>) in
            let chunk = state.withLock { state -> PoolChunk<Input>?? in
                if let chunk = state.pop(budget: budget) { return .some(chunk) }
                if state.finished { return .some(nil) }
                state.takers.append((budget, continuation))
                return .none
            }
            if case .some(let chunk) = chunk { continuation.resume(returning: chunk) }
        }
    }

    /// Registers `chunk`, about to be sent ahead as task `id` to the worker sharing `words`
    /// (which marks it claimable first), so that an idle driver can take it back. `false`
    /// if the worker's word refused the offer (see ``WorkerWords/offerAhead(_:)``): the
    /// chunk goes as an ordinary one.
    func sendingAhead(_ chunk: PoolChunk<Input>, id: UInt64, words: WorkerWords) -> Bool {
        guard words.offerAhead(id) else { return false }
        state.withLock { $0.ahead[id] = Ahead(chunk: chunk, words: words) }
        return true
    }

    /// Task `id`, sent ahead, is answered, skipped or lost with its worker: forgets it, and
    /// says whether another driver took it back (then that driver answers for it; the
    /// sender must not run it again or deliver it).
    func settleAhead(_ id: UInt64) -> Bool {
        state.withLock { $0.ahead.removeValue(forKey: id)?.stolen ?? false }
    }

    /// A chunk sent ahead to a busy worker that has not started it, taken back for the
    /// calling driver, whose worker is idle; `nil` if none.
    ///
    /// Under the board's lock, so that a sender settling the chunk (its worker died) sees
    /// either the chunk stolen or its entry gone before any steal.
    func stealAhead() -> PoolChunk<Input>? {
        state.withLock { state in
            for (id, entry) in state.ahead where !entry.stolen && !entry.started {
                if entry.words.steal(id) {
                    state.ahead[id]?.stolen = true
                    return entry.chunk
                }
                state.ahead[id]?.started = true
            }
            return nil
        }
    }

    /// Hands an outcome to the call.
    func deliver(_ outcome: PoolChunkOutcome<Output>) {
        let collector = state.withLock { state -> CheckedContinuation<Void, any Error>? in
            state.outcomes.append(outcome)
            state.outcomeInputs += outcome.count
            guard state.outcomeInputs >= state.collectorWants else { return nil }
            defer { state.collector = nil }
            return state.collector
        }
        collector?.resume()
    }

    /// The call cannot go on (no worker left, the pool closed, an input that cannot be
    /// encoded): the call's next ``collect()`` throws `error`. The first failure wins.
    func fail(_ error: any Error) {
        let collector = state.withLock { state in
            if state.failure == nil { state.failure = error }
            defer { state.collector = nil }
            return state.collector
        }
        collector?.resume()
    }

    /// The outcomes delivered since the last call, waiting until they cover at least
    /// `inputs` inputs.
    ///
    /// A call that has nothing to do with an outcome before the others come (a `map` whose
    /// inputs are all on the board) waits for all of them at once: waking it for each one
    /// cost a thread's wake-up per answer, taken from the workers' CPUs.
    /// - Throws: a driver's failure, or `CancellationError` when the calling task is cancelled.
    func collect(inputs: Int = 1) async throws -> [PoolChunkOutcome<Output>] {
        let wanted = max(1, inputs)
        while true {
            let ready = try state.withLock { state -> [PoolChunkOutcome<Output>]? in
                if !state.outcomes.isEmpty && state.outcomeInputs >= wanted {
                    defer {
                        state.outcomes.removeAll(keepingCapacity: true)
                        state.outcomeInputs = 0
                    }
                    return state.outcomes
                }
                if let failure = state.failure { throw failure }
                if state.collectorCancelled { throw CancellationError() }
                return nil
            }
            if let ready { return ready }
            try await withTaskCancellationHandler {
                try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                    let wait = state.withLock { state -> Bool in
                        guard state.outcomeInputs < wanted, state.failure == nil, !state.collectorCancelled else {
                            return false
                        }
                        state.collector = continuation
                        state.collectorWants = wanted
                        return true
                    }
                    if !wait { continuation.resume() }
                }
            } onCancel: {
                let collector = state.withLock { state in
                    state.collectorCancelled = true
                    defer { state.collector = nil }
                    return state.collector
                }
                collector?.resume()
            }
        }
    }
}
