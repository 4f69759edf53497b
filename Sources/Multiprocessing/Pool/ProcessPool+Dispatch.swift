/// How a call's inputs reach the workers: the calling task cuts them into chunks and posts
/// them on a ``PoolBoard``; one driver per worker takes them, sends them (several ahead to a
/// worker that answers quickly, small ones in batches of one message), and delivers each
/// chunk's outcome back.
extension ProcessPool {
    /// A function encoded once for a call.
    struct EncodedFunction: Sendable {
        var typeName: String
        var bytes: [UInt8]

        init<Function: ProcessFunction>(_ function: Function) throws {
            guard let name = _mangledTypeName(Function.self) else {
                throw ProcessPoolError(reason: .couldNotRun("\(String(reflecting: Function.self)) has no mangled name"))
            }
            typeName = name
            bytes = try BinaryEncoder().encode(function)
            // A later pool's workers, forked by the fork server, find the function looked up.
            ForkServer.prepare(function: name)
        }
    }

    /// More chunks are sent to a worker before the first is answered only when its last
    /// chunk came back within this time: for quick chunks the round trip is what leaves a
    /// worker idle, for slow ones it is negligible, and holding the chunk back lets
    /// whichever worker is free first take it (CPU-bound chunks of uneven cost stay
    /// balanced).
    static let quickChunk = Duration.milliseconds(2)
    /// ... and only while the encoded inputs sent and unanswered stay under this size, so
    /// that they fit in the socket's buffer at once: a send that waited for the worker to
    /// read could deadlock with the worker waiting for its answer to an earlier chunk to be
    /// read.
    static let pipelinedBytes = 32 * 1024

    /// Runs `function` on every input and calls `body` (in the calling task) with the
    /// outcomes of chunks (or parts of chunks) as they complete.
    ///
    /// `nextInputs(n)` gives the next up to `n` inputs, or `nil` at the end. At most five
    /// chunks per worker are outstanding (four sent, one cut and waiting; two with a
    /// timeout), so at most `5 × workers × chunkSize` inputs have been pulled and not yet
    /// answered; with `inMemory` (the inputs are an array already, so pulling them ahead
    /// holds nothing more) chunks under ``smallChunk`` inputs go 32 per worker. With a `window`, no input is cut while it
    /// is `window` or more past the oldest unanswered one: a caller that reorders results
    /// (an ordered stream) then holds at most about `window` of them, however long one
    /// slow item keeps the others waiting. Cancelling the calling task kills the workers
    /// running its items and throws `CancellationError`. An error `nextInputs` throws is
    /// thrown once the chunks already cut are done. Without `promptly` (a caller that only
    /// keeps the outcomes until the end), `body` is called once all the inputs have been
    /// cut with the outcomes of all of them together.
    func dispatch<Function: ProcessFunction>(
        _ function: Function, chunkSize: Int, timeout: Duration?, window: Int? = nil, inMemory: Bool = false,
        promptly: Bool = true, nextInputs: (Int) async throws -> [Function.Input]?,
        _ body: ([PoolChunkOutcome<Function.Output>]) async throws -> Void
    ) async throws {
        precondition(chunkSize > 0, "chunkSize must be positive")
        try beginCall()
        defer { endCall() }
        let encoded = try EncodedFunction(function)
        let board = PoolBoard<Function.Input, Function.Output>()
        let small = inMemory && chunkSize < Self.smallChunk && timeout == nil && maxTasksPerWorker == nil
        let depth = pipelineDepth(timeout: timeout, small: small)
        // Small chunks are cut several at a time (one entry on the board for about 16
        // inputs): the call's own cost per chunk (cutting, posting, collecting) was most of
        // a small chunk's cost. A driver splits them again as its worker's pace says.
        let chunksPerCut = small ? max(1, Self.groupInputs / chunkSize) : 1
        try await withThrowingTaskGroup(of: Void.self) { group in
            defer { board.finish() }
            // Inputs not yet answered, by the index of their chunk's first input.
            var unanswered: [Int: Int] = [:]
            var index = 0
            var exhausted = false
            var drivers = 0
            var inputError: (any Error)?
            while true {
                try Task.checkCancellation()
                while !exhausted && unanswered.count < workerCount * (depth + 1) {
                    if let window, let oldest = unanswered.keys.min(), index - oldest >= window { break }
                    let inputs: [Function.Input]?
                    do {
                        inputs = try await nextInputs(chunkSize * chunksPerCut)
                    } catch {
                        // The inputs' own failure: the chunks sent still finish (their
                        // workers are not killed for it), then the call throws it.
                        inputError = error
                        inputs = nil
                    }
                    guard let inputs, !inputs.isEmpty else {
                        exhausted = true
                        board.finish()
                        break
                    }
                    unanswered[index] = inputs.count
                    board.post(
                        PoolChunk(origin: index, start: index, inputs: inputs, unit: chunksPerCut > 1 ? chunkSize : nil)
                    )
                    index += inputs.count
                    // A driver per chunk posted, up to one per worker (a group counts as
                    // its chunks: its drivers share it).
                    let chunksPosted = (inputs.count + chunkSize - 1) / chunkSize
                    for _ in 0..<max(0, min(workerCount - drivers, chunksPosted)) {
                        drivers += 1
                        group.addTask {
                            await self.drive(board, encoded, timeout: timeout, depth: depth, paced: small)
                        }
                    }
                }
                if unanswered.isEmpty { break }
                // Once every input is on the board, a caller that is not told of each
                // outcome as it comes has nothing to do before the last: it sleeps until then.
                let outcomes = try await board.collect(
                    inputs: exhausted && !promptly ? unanswered.values.reduce(0, +) : 1)
                for outcome in outcomes {
                    let left = (unanswered[outcome.origin] ?? 0) - outcome.count
                    unanswered[outcome.origin] = left > 0 ? left : nil
                }
                try await body(outcomes)
            }
            if let inputError { throw inputError }
        }
    }

    /// `dispatch` over an array: chunks are slices, copied at once.
    func dispatch<Function: ProcessFunction>(
        _ function: Function, _ inputs: [Function.Input], chunkSize: Int, timeout: Duration?, promptly: Bool,
        _ body: ([PoolChunkOutcome<Function.Output>]) async throws -> Void
    ) async throws {
        var next = 0
        try await dispatch(function, chunkSize: chunkSize, timeout: timeout, inMemory: true, promptly: promptly) {
            size in
            guard next < inputs.count else { return nil }
            let end = min(inputs.count, next + size)
            defer { next = end }
            return Array(inputs[next..<end])
        } _: { outcomes in
            try await body(outcomes)
        }
    }

    /// Runs one input in the calling task (``apply(_:_:timeout:)``), without a task group.
    func runOne<Function: ProcessFunction>(
        _ function: Function, _ input: Function.Input, timeout: Duration?
    ) async throws -> Function.Output {
        try beginCall()
        defer { endCall() }
        let board = PoolBoard<Function.Input, Function.Output>()
        board.post(PoolChunk(origin: 0, start: 0, inputs: [input]))
        board.finish()
        await drive(board, try EncodedFunction(function), timeout: timeout, depth: 1)
        guard let outcome = try await board.collect().first, let result = outcome.result(at: 0) else {
            throw ProcessPoolError(index: 0, reason: .couldNotRun("the worker gave no answer"))
        }
        return try result.get()
    }

    /// Chunks sent to a worker at most: 4 where a chunk's answer comes in one message and
    /// the worker's task budget does not count chunks (a worker retired mid-pipeline would
    /// take the chunks behind with it); 1 with a timeout (each input's clock starts at the
    /// previous answer, which a queued chunk would skew). The call keeps one more chunk per
    /// worker cut and waiting on the board, so a driver never waits for the call to cut one.
    /// 32 for `small` chunks of inputs in memory: their cost is the messages, which batches
    /// of 16 chunks share.
    private func pipelineDepth(timeout: Duration?, small: Bool) -> Int {
        guard timeout == nil && maxTasksPerWorker == nil else { return 1 }
        return small ? 32 : 4
    }

    /// Chunks of fewer inputs are sent ahead 32 at a time per worker rather than 4: their
    /// cost is the messages, which batches of 16 share.
    static let smallChunk = 64
    /// About how many inputs of small chunks are cut as one group.
    static let groupInputs = 16
    /// The most inputs sent to a worker and not yet answered (with the bytes and the depth).
    static let aheadInputs = 256

    // MARK: The driver

    /// A chunk sent to the driver's worker and not yet answered.
    private struct Sent<Input: Sendable> {
        var id: UInt64
        var chunk: PoolChunk<Input>
        var at: ContinuousClock.Instant
        var bytes: Int
        /// Sent ahead, behind a slow chunk: registered on the board, where an idle driver
        /// may take it back (see ``WorkerWords``).
        var ahead = false
    }

    /// Takes chunks from `board` and runs them on a worker it acquires (and releases while
    /// the board has none ready), until the board is finished and every chunk it took has
    /// an outcome. Every input of a chunk taken gets an outcome, whatever happens to the
    /// workers; a failure of the call itself (no worker, pool closed, cancelled) goes to
    /// the board.
    private func drive<Input: Sendable & Encodable, Output: Sendable & Decodable>(
        _ board: PoolBoard<Input, Output>, _ function: EncodedFunction, timeout: Duration?, depth: Int,
        paced: Bool = false
    ) async {
        var worker: PoolWorker?
        var sent: [Sent<Input>] = []
        // Runs to do again (their worker died), before new chunks.
        var redo: [PoolChunk<Input>] = []
        var quick = false
        // With `paced`, the inputs whose work fits in `quickChunk` by the last answer's pace:
        // a batch carries half of them, and goes once no more than half are unanswered, so
        // the worker finds the next batch waiting when it ends one. 0 while not quick.
        var ahead = 0
        do {
            loop: while true {
                // More is sent once half of what was sent ahead is answered (and no answer
                // from a batch is still to be read, so answers are taken before sending):
                // the worker always has the next batch when it ends one, and each write
                // carries half the depth.
                // A slow chunk: one more goes ahead while it runs, so that the worker starts
                // it the moment it answers (the answer's round trip through this task left
                // each worker idle 1-4% of a CPU-bound map); only while the board keeps a
                // chunk for every other driver (see ``PoolBoard/tryTake(budget:leaving:)``).
                let sendsAhead =
                    !quick && depth > 1 && sent.count == 1 && redo.isEmpty && sent[0].bytes < Self.pipelinedBytes
                if sent.isEmpty || sendsAhead
                    || (quick && sent.count <= depth / 2 && !(worker?.hasBufferedAnswers ?? false)
                        && sent.reduce(0, { $0 + $1.bytes }) < Self.pipelinedBytes
                        && sent.reduce(0, { $0 + $1.chunk.inputs.count }) <= ahead / 2)
                {
                    var next: PoolChunk<Input>?
                    var fromRedo = false
                    if !redo.isEmpty {
                        next = redo.removeFirst()
                        fromRedo = true
                    } else {
                        let budget = quick ? ahead / 2 : 0
                        switch board.tryTake(budget: budget, leaving: sendsAhead ? workerCount - 1 : 0) {
                        case .chunk(let chunk): next = chunk
                        case .finished:
                            // Nothing left on the board: a chunk queued behind another
                            // worker's slow one runs here instead, if not yet started.
                            if sent.isEmpty { next = board.stealAhead() }
                        case .empty:
                            if sent.isEmpty {
                                if let stolen = board.stealAhead() {
                                    next = stolen
                                } else {
                                    // Nothing to do for now: the worker goes back to the pool.
                                    if let idle = worker { release(idle) }
                                    worker = nil
                                    next = await board.take(budget: budget)
                                    if next == nil { next = board.stealAhead() }
                                }
                            }
                        }
                        if next == nil && sent.isEmpty { break loop }
                    }
                    if var first = next {
                        let current: PoolWorker
                        if let worker {
                            current = worker
                        } else {
                            current = try await acquire()
                            if Task.isCancelled {
                                offer(current)  // untouched: it goes back as it came
                                throw CancellationError()
                            }
                            current.words.setRunning(-1)
                            worker = current
                        }
                        // The chunks ready now, up to half the depth, go in one message: one
                        // write (and one answer) for many small chunks.
                        var batch: [PoolMessage] = []
                        var bytes = sent.reduce(0, { $0 + $1.bytes })
                        var batchInputs = 0
                        // A group is sent as far as the worker's pace allows, the rest left
                        // for whichever driver is free first (slow items stay balanced): the
                        // board splits the groups it hands out; a group to run again is split
                        // here, its rest run again first.
                        func fitRedo(_ chunk: inout PoolChunk<Input>) {
                            let (taken, rest) = chunk.fitted(to: (quick ? ahead / 2 : 0) - batchInputs)
                            chunk = taken
                            if let rest { redo.insert(rest, at: 0) }
                        }
                        if fromRedo { fitRedo(&first) }
                        var chunk = first
                        while true {
                            let id = makeTaskID()
                            let inputs = try BinaryEncoder().encode(chunk.inputs)
                            batch.append(
                                .task(
                                    id: id, typeName: function.typeName, function: function.bytes, inputs: inputs,
                                    count: chunk.inputs.count, eachInput: timeout != nil))
                            // Registered before it is sent: the worker may claim it at once.
                            let goesAhead = sendsAhead && board.sendingAhead(chunk, id: id, words: current.words)
                            sent.append(Sent(id: id, chunk: chunk, at: .now, bytes: inputs.count, ahead: goesAhead))
                            bytes += inputs.count
                            batchInputs += chunk.inputs.count
                            guard quick, batch.count < max(1, depth / 2), bytes < Self.pipelinedBytes,
                                batchInputs < ahead / 2
                            else { break }
                            if !redo.isEmpty {
                                chunk = redo.removeFirst()
                                fitRedo(&chunk)
                            } else if case .chunk(let more) = board.tryTake(
                                budget: (quick ? ahead / 2 : 0) - batchInputs)
                            {
                                chunk = more
                            } else {
                                break
                            }
                        }
                        let delivered = await current.send(batch.count == 1 ? batch[0] : .batch(batch))
                        if !delivered {
                            let termination = await retired(current, kill: true)
                            redo += attribute(settled(sent, board), to: current, termination, board: board)
                            (worker, sent, quick, ahead) = (nil, [], false, 0)
                        }
                        continue
                    }
                }
                guard let current = worker, let head = sent.first else { continue }
                if timeout != nil {
                    let healthy = try await readEachInput(
                        head, from: current, timeout: timeout, board: board, redo: &redo)
                    sent.removeAll()
                    if healthy {
                        finishedTask(on: current, worker: &worker)
                    } else {
                        worker = nil
                    }
                    continue
                }
                // Cancelled: throws, and the worker is killed below (the items must really stop).
                let event = try await current.next(timeout: nil)
                if case .skipped(let id) = event, id == head.id, head.ahead {
                    // Taken back by an idle driver, which answers for it. One skipped that
                    // no driver took back runs again here: a chunk must never be lost,
                    // whatever the claim word said (it cannot, by `WorkerWords.claim`).
                    let stolen = board.settleAhead(id)
                    sent.removeFirst()
                    if !stolen { redo.append(head.chunk) }
                    continue
                }
                if let outcome = Self.outcome(of: event, for: head, Output.self, worker: current) {
                    sent.removeFirst()
                    if head.ahead { _ = board.settleAhead(head.id) }
                    let elapsed = ContinuousClock.now - head.at
                    quick = elapsed < Self.quickChunk && head.bytes <= Self.pipelinedBytes
                    if !quick {
                        ahead = 0
                    } else if paced {
                        let fits = Double(head.chunk.inputs.count) * (Self.quickChunk / elapsed)
                        ahead = Int(min(Double(Self.aheadInputs), fits))
                    } else {
                        ahead = .max
                    }
                    board.deliver(outcome)
                    finishedTask(on: current, worker: &worker)
                    if worker == nil {
                        // Retired for its task budget (depth 1: nothing else was sent to it).
                        (quick, ahead) = (false, 0)
                    }
                    continue
                }
                let termination: Termination
                if case .ended(let ended) = event {
                    termination = await retired(current, kill: false, ended: ended)
                } else {
                    // Answered out of turn, which only a broken worker does.
                    termination = await retired(current, kill: true)
                }
                redo += attribute(settled(sent, board), to: current, termination, board: board)
                (worker, sent, quick, ahead) = (nil, [], false, 0)
            }
            if let worker { release(worker) }
        } catch {
            // A worker with a chunk sent cannot serve anyone else: its answer would come
            // to them. (Cancelled, or an input that cannot be encoded.)
            _ = settled(sent, board)
            if let worker {
                if sent.isEmpty { release(worker) } else { retire(worker, kill: true) }
            }
            board.fail(error)
        }
    }

    /// The chunks of `sent` still this driver's, once its worker is gone: a chunk sent ahead
    /// and taken back by another driver is that driver's to answer (see ``WorkerWords``).
    private func settled<Input, Output>(_ sent: [Sent<Input>], _ board: PoolBoard<Input, Output>) -> [Sent<Input>] {
        sent.filter { !$0.ahead || !board.settleAhead($0.id) }
    }

    /// Counts a task done on `current`; it goes back (`worker` nil) when its budget is spent.
    private func finishedTask(on current: PoolWorker, worker: inout PoolWorker?) {
        let served = current.tasksServed.add(1, ordering: .relaxed).newValue
        if let limit = maxTasksPerWorker, served >= limit {
            retire(current, kill: false)
            worker = nil
        }
    }

    /// Retires a worker that died or must die, and returns how it ended.
    private func retired(_ worker: PoolWorker, kill: Bool, ended: Termination? = nil) async -> Termination {
        retire(worker, kill: kill)
        if let ended { return ended }
        return await worker.termination()
    }

    /// After `worker` died with `sent` unanswered: the input it was running fails (or runs
    /// again, by the pool's `retries`); the other inputs are returned, to run again.
    ///
    /// The shared `running` word names the task and the offset, so with several chunks sent
    /// the one at fault is known exactly. A chunk none of whose inputs was at fault (the
    /// worker died between inputs, or before taking it) runs again; after three such deaths
    /// its first input fails, so that a worker that dies on anything cannot loop forever.
    private func attribute<Input: Sendable, Output: Sendable>(
        _ sent: [Sent<Input>], to worker: PoolWorker, _ termination: Termination, board: PoolBoard<Input, Output>
    ) -> [PoolChunk<Input>] {
        let running = PoolWorker.Running(worker.words.running)
        var again: [PoolChunk<Input>] = []
        let blamed = sent.contains { entry in
            guard let running, running.isTask(entry.id) else { return false }
            return running.offset < entry.chunk.inputs.count
        }
        for entry in sent {
            var chunk = entry.chunk
            var offset: Int?
            if let running, running.isTask(entry.id), running.offset < chunk.inputs.count {
                offset = running.offset
            } else if !blamed {
                chunk.silentDeaths += 1
                if chunk.silentDeaths >= 3 { offset = 0 }
            }
            guard let offset else {
                again.append(chunk)
                continue
            }
            // Before and after the input at fault: not theirs, run again as they were.
            if offset > 0 {
                again.append(
                    PoolChunk(origin: chunk.origin, start: chunk.start, inputs: Array(chunk.inputs[..<offset])))
            }
            if offset + 1 < chunk.inputs.count {
                again.append(
                    PoolChunk(
                        origin: chunk.origin, start: chunk.start + offset + 1,
                        inputs: Array(chunk.inputs[(offset + 1)...])))
            }
            let index = chunk.start + offset
            // pool-extras hook: a worker that passed its memory limit would pass it again.
            if chunk.attempt <= retries && chunk.silentDeaths < 3 && !MemoryCeiling.noted(worker.process.pid) {
                again.append(
                    PoolChunk(
                        origin: chunk.origin, start: index, inputs: [chunk.inputs[offset]], attempt: chunk.attempt + 1))
            } else {
                let error = ProcessPoolError(
                    index: index, worker: worker, reason: .workerEnded(termination), attempts: chunk.attempt)
                board.deliver(
                    PoolChunkOutcome(origin: chunk.origin, start: index, count: 1, outputs: [], failures: [(0, error)]))
            }
        }
        return again
    }

    /// Reads a chunk sent with a timeout, answered input by input (each input's clock
    /// starts at the previous answer). Delivers what was answered; returns whether the
    /// worker is still usable.
    private func readEachInput<Input: Sendable, Output: Sendable & Decodable>(
        _ head: Sent<Input>, from worker: PoolWorker, timeout: Duration?, board: PoolBoard<Input, Output>,
        redo: inout [PoolChunk<Input>]
    ) async throws -> Bool {
        let chunk = head.chunk
        var outcome = PoolChunkOutcome<Output>(origin: chunk.origin, start: chunk.start, count: 0, outputs: [])
        defer { if outcome.count > 0 { board.deliver(outcome) } }
        while outcome.count < chunk.inputs.count {
            let offset = outcome.count
            let index = chunk.start + offset
            // Cancelled: throws, and the driver kills the worker (the item must really stop).
            let event = try await worker.next(timeout: timeout)
            let failure: ProcessPoolError
            switch event {
            case .reply(let id, let replied, let reply) where id == head.id && replied == offset:
                outcome.count += 1
                switch Self.decode(reply, Output.self, index: index, worker: worker) {
                case .success(let output): outcome.outputs.append(output)
                case .failure(let error): outcome.failures.append((offset, error))
                }
                continue
            case .timedOut:
                retire(worker, kill: true)
                failure = ProcessPoolError(index: index, worker: worker, reason: .timedOut(timeout ?? .zero))
            case .ended(let termination):
                retire(worker, kill: false)
                // The worker may have died before it started this input (the task received,
                // not yet run) or after answering the one before: then the input is not at
                // fault, and runs again as it is, as `attribute` does for whole chunks (the
                // fault matrix failed an input no worker had started). After three such
                // deaths it fails, so that a worker that dies on anything cannot loop.
                let running = PoolWorker.Running(worker.words.running)
                if running != PoolWorker.Running(task: head.id, offset: offset) && chunk.silentDeaths < 2 {
                    var rest = chunk
                    rest.start = index
                    rest.inputs = Array(chunk.inputs[offset...])
                    rest.silentDeaths += 1
                    redo.append(rest)
                    return false
                }
                if chunk.attempt <= retries && !MemoryCeiling.noted(worker.process.pid) {  // pool-extras hook
                    // Runs again on its own, on another worker; the outcome so far is delivered.
                    redo.append(
                        PoolChunk(
                            origin: chunk.origin, start: index, inputs: [chunk.inputs[offset]],
                            attempt: chunk.attempt + 1))
                    redoRest(of: chunk, after: offset, into: &redo)
                    return false
                }
                failure = ProcessPoolError(
                    index: index, worker: worker, reason: .workerEnded(termination), attempts: chunk.attempt)
            default:
                // Answered out of turn: a broken worker.
                retire(worker, kill: true)
                failure = ProcessPoolError(
                    index: index, worker: worker, reason: .workerEnded(await worker.termination()))
            }
            outcome.count += 1
            outcome.failures.append((offset, failure))
            redoRest(of: chunk, after: offset, into: &redo)
            return false
        }
        return true
    }

    /// The inputs of `chunk` after `offset`, to run again on another worker.
    private func redoRest<Input>(of chunk: PoolChunk<Input>, after offset: Int, into redo: inout [PoolChunk<Input>]) {
        guard offset + 1 < chunk.inputs.count else { return }
        redo.append(
            PoolChunk(
                origin: chunk.origin, start: chunk.start + offset + 1, inputs: Array(chunk.inputs[(offset + 1)...])))
    }

    /// The outcome of a whole chunk answered in one message; `nil` if `event` is not such an
    /// answer to `head`.
    private static func outcome<Input, Output: Decodable>(
        of event: PoolWorker.Event, for head: Sent<Input>, _: Output.Type, worker: PoolWorker
    ) -> PoolChunkOutcome<Output>? {
        let chunk = head.chunk
        let count = chunk.inputs.count
        var outcome = PoolChunkOutcome<Output>(origin: chunk.origin, start: chunk.start, count: count, outputs: [])
        switch event {
        case .replies(let id, let replies) where id == head.id && replies.count == count:
            for (offset, reply) in replies.enumerated() {
                switch decode(reply, Output.self, index: chunk.start + offset, worker: worker) {
                case .success(let output): outcome.outputs.append(output)
                case .failure(let error): outcome.failures.append((offset, error))
                }
            }
            return outcome
        case .outputs(let id, let bytes, let failures) where id == head.id:
            var failed: [(offset: Int, error: ProcessPoolError)] = []
            for failure in failures {
                let previous = failed.last?.offset ?? -1
                guard failure.offset > previous && failure.offset < count else {
                    return nil
                }
                let index = chunk.start + failure.offset
                guard case .failure(let error) = decode(failure.outcome, Output.self, index: index, worker: worker)
                else { return nil }
                failed.append((failure.offset, error))
            }
            do {
                outcome.outputs = try BinaryDecoder().decode([Output].self, from: bytes)
            } catch {
                let reason = ProcessPoolError.Reason.couldNotRun("its output could not be decoded: \(error)")
                var failedAt = failed.makeIterator()
                var nextFailed = failedAt.next()
                for offset in 0..<count {
                    if let failure = nextFailed, failure.offset == offset {
                        outcome.failures.append(failure)
                        nextFailed = failedAt.next()
                    } else {
                        let itemError = ProcessPoolError(index: chunk.start + offset, worker: worker, reason: reason)
                        outcome.failures.append((offset, itemError))
                    }
                }
                return outcome
            }
            guard outcome.outputs.count + failed.count == count else { return nil }
            outcome.failures = failed
            return outcome
        default:
            return nil
        }
    }

    private static func decode<Output: Decodable>(
        _ outcome: ChildOutcome, _: Output.Type, index: Int, worker: PoolWorker
    ) -> Result<Output, ProcessPoolError> {
        switch outcome {
        case .succeeded(let bytes):
            do {
                return .success(try BinaryDecoder().decode(Output.self, from: bytes))
            } catch {
                return .failure(
                    ProcessPoolError(
                        index: index, worker: worker, reason: .couldNotRun("its output could not be decoded: \(error)"))
                )
            }
        case .threw(let report):
            return .failure(ProcessPoolError(index: index, worker: worker, reason: .threw(RemoteError(report))))
        case .couldNotStart(let reason):
            return .failure(ProcessPoolError(index: index, worker: worker, reason: .couldNotRun(reason)))
        }
    }

    /// Python's automatic chunk size for `count` inputs: `count / (4 × workers)`, rounded up, at least 1.
    func automaticChunkSize(for count: Int) -> Int {
        let (quotient, remainder) = count.quotientAndRemainder(dividingBy: 4 * workerCount)
        return max(1, quotient + (remainder > 0 ? 1 : 0))
    }
}

extension PoolChunkOutcome {
    /// The result of the input at `offset`, if the outcome covers it.
    func result(at offset: Int) -> Result<Output, ProcessPoolError>? {
        var found: Result<Output, ProcessPoolError>?
        forEach { index, result in
            if index == start + offset { found = result }
        }
        return found
    }
}
