/// How a call's inputs reach the workers: cut into chunks, each encoded as one array, at most one chunk
/// per worker in flight, the input pulled only as fast as chunks are taken.
extension ProcessPool {
    /// One item's outcome.
    typealias ItemResult<Output> = (index: Int, result: Result<Output, ProcessPoolError>)

    /// Runs `function` on every input and calls `body` (in the calling task) with each
    /// chunk's results as the chunk completes.
    ///
    /// At most `workerCount` chunks are in flight, so at most `workerCount × chunkSize`
    /// inputs have been pulled and not yet answered. With a `window`, no input is sent
    /// while it is `window` or more past the oldest unanswered one: a caller that
    /// reorders results (an ordered stream) then holds at most `window` of them, however
    /// long one slow item keeps the others waiting. Cancelling the calling task kills the
    /// workers running its items and throws `CancellationError`.
    func dispatch<Function: ProcessFunction, Inputs: Sequence<Function.Input>>(
        _ function: Function, _ inputs: Inputs, chunkSize: Int, timeout: Duration?, window: Int? = nil,
        _ body: ([ItemResult<Function.Output>]) async throws -> Void
    ) async throws {
        precondition(chunkSize > 0, "chunkSize must be positive")
        try beginCall()
        defer { endCall() }
        guard let typeName = _mangledTypeName(Function.self) else {
            throw ProcessPoolError(reason: .couldNotRun("\(String(reflecting: Function.self)) has no mangled name"))
        }
        let encodedFunction = try BinaryEncoder().encode(function)
        try await withThrowingTaskGroup(of: (start: Int, results: [ItemResult<Function.Output>]).self) { group in
            var iterator = inputs.makeIterator()
            var index = 0
            // The first index of each chunk in flight.
            var outstanding: Set<Int> = []
            while true {
                try Task.checkCancellation()
                var chunk: [(index: Int, input: Function.Input)] = []
                while chunk.count < chunkSize, let input = iterator.next() {
                    chunk.append((index, input))
                    index += 1
                }
                guard let start = chunk.first?.index else { break }
                func mustWait() -> Bool {
                    if outstanding.count >= workerCount { return true }
                    guard let window, let oldest = outstanding.min() else { return false }
                    return index - oldest > window
                }
                while mustWait(), let done = try await group.next() {
                    outstanding.remove(done.start)
                    try await body(done.results)
                }
                let items = chunk
                group.addTask {
                    let results = try await self.run(
                        Function.Output.self, typeName: typeName, function: encodedFunction, items: items,
                        timeout: timeout)
                    return (start, results)
                }
                outstanding.insert(start)
            }
            while let done = try await group.next() { try await body(done.results) }
        }
    }

    /// Runs one chunk to the end: every item gets a result, whatever happens to the workers.
    ///
    /// Without a timeout the worker answers the whole chunk in one message. If it dies
    /// first, the shared slot it writes says which item it was running: that item fails, and
    /// the others (those done before it died with it) go to another worker. With a timeout
    /// the worker answers item by item, so each item's clock starts at the previous answer.
    private func run<Input: Encodable, Output: Decodable>(
        _: Output.Type, typeName: String, function: [UInt8], items: [(index: Int, input: Input)],
        timeout: Duration?
    ) async throws -> [ItemResult<Output>] {
        var results: [ItemResult<Output>] = []
        results.reserveCapacity(items.count)
        var pending = items
        let eachInput = timeout != nil
        // Workers that die before answering anything (not the item's fault, most likely)
        // are replaced and the chunk retried, a few times.
        var silentDeaths = 0
        while let first = pending.first {
            let inputs = try BinaryEncoder().encode(pending.map(\.input))
            let worker = try await acquire()
            if Task.isCancelled {
                offer(worker)  // untouched: it goes back as it came
                throw CancellationError()
            }
            worker.running.store(-1)  // idle: the worker writes it only while serving a task
            let sent = await worker.send(
                .task(
                    id: makeTaskID(), typeName: typeName, function: function, inputs: inputs, count: pending.count,
                    eachInput: eachInput))
            if !sent {
                retire(worker, kill: true)
                silentDeaths += 1
                if silentDeaths < 3 { continue }
                let termination = await worker.termination()
                results.append(
                    (
                        first.index,
                        .failure(
                            ProcessPoolError(index: first.index, worker: worker, reason: .workerEnded(termination)))
                    ))
                pending.removeFirst()
                continue
            }
            if !eachInput {
                let event: PoolWorker.Event
                do {
                    event = try await worker.next(timeout: nil)
                } catch {
                    retire(worker, kill: true)  // cancelled: the items must really stop
                    throw error
                }
                if let answered = Self.collect(event, Output.self, pending: pending, worker: worker) {
                    results.append(contentsOf: answered)
                    pending.removeAll()
                    release(worker)
                    continue
                }
                let termination: Termination
                if case .ended(let ended) = event {
                    retire(worker, kill: false)
                    termination = ended
                } else {
                    // Answered out of turn, which only a broken worker does.
                    retire(worker, kill: true)
                    termination = await worker.termination()
                }
                let offset = max(worker.running.load(), 0)
                guard offset < pending.count else {
                    // Past its last item: none of them is at fault; all are sent again.
                    silentDeaths += 1
                    if silentDeaths < 3 { continue }
                    results.append(
                        (
                            first.index,
                            .failure(
                                ProcessPoolError(index: first.index, worker: worker, reason: .workerEnded(termination)))
                        ))
                    pending.removeFirst()
                    continue
                }
                let item = pending.remove(at: offset)
                let error = ProcessPoolError(index: item.index, worker: worker, reason: .workerEnded(termination))
                results.append((item.index, .failure(error)))
                continue
            }
            var healthy = true
            while healthy, let item = pending.first {
                let event: PoolWorker.Event
                do {
                    event = try await worker.next(timeout: timeout)
                } catch {
                    // Cancelled: the item must really stop, so its worker goes.
                    retire(worker, kill: true)
                    throw error
                }
                switch event {
                case .reply(_, let outcome):
                    results.append((item.index, Self.decode(outcome, Output.self, index: item.index, worker: worker)))
                case .ended(let termination):
                    healthy = false
                    retire(worker, kill: false)
                    let error = ProcessPoolError(index: item.index, worker: worker, reason: .workerEnded(termination))
                    results.append((item.index, .failure(error)))
                case .timedOut:
                    healthy = false
                    retire(worker, kill: true)
                    let error = ProcessPoolError(index: item.index, worker: worker, reason: .timedOut(timeout ?? .zero))
                    results.append((item.index, .failure(error)))
                case .replies, .outputs:
                    healthy = false  // answered out of turn: a broken worker
                    retire(worker, kill: true)
                    let termination = await worker.termination()
                    let error = ProcessPoolError(index: item.index, worker: worker, reason: .workerEnded(termination))
                    results.append((item.index, .failure(error)))
                }
                pending.removeFirst()
            }
            if healthy { release(worker) }
        }
        return results
    }

    /// The results of a whole chunk answered in one message; `nil` if `event` is not such an
    /// answer for `pending`.
    private static func collect<Input, Output: Decodable>(
        _ event: PoolWorker.Event, _: Output.Type, pending: [(index: Int, input: Input)], worker: PoolWorker
    ) -> [ItemResult<Output>]? {
        switch event {
        case .replies(let outcomes) where outcomes.count == pending.count:
            return zip(pending, outcomes).map { item, outcome in
                (item.index, decode(outcome, Output.self, index: item.index, worker: worker))
            }
        case .outputs(let bytes, let failures):
            var failed: [Int: ChildOutcome] = [:]
            for failure in failures where pending.indices.contains(failure.offset) {
                failed[failure.offset] = failure.outcome
            }
            guard failed.count == failures.count else { return nil }
            let outputs: [Output]
            do {
                outputs = try BinaryDecoder().decode([Output].self, from: bytes)
            } catch {
                return pending.enumerated().map { offset, item in
                    if let outcome = failed[offset] {
                        return (item.index, decode(outcome, Output.self, index: item.index, worker: worker))
                    }
                    let reason = ProcessPoolError.Reason.couldNotRun("its output could not be decoded: \(error)")
                    return (item.index, .failure(ProcessPoolError(index: item.index, worker: worker, reason: reason)))
                }
            }
            guard outputs.count + failed.count == pending.count else { return nil }
            var succeeded = outputs.makeIterator()
            return pending.enumerated().map { offset, item in
                if let outcome = failed[offset] {
                    return (item.index, decode(outcome, Output.self, index: item.index, worker: worker))
                }
                return (item.index, .success(succeeded.next()!))
            }
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
