@_spi(MPI) import Multiprocessing

/// The streams: outputs as they are ready, inputs pulled only as fast as the ranks take them.
/// A `Sequence` and an `AsyncSequence` of inputs go through one dispatch (a `Sequence` is read
/// through ``SequenceInputs``).
extension MPIPool {
    /// Calls `function` on every input of `inputs` (any `Sequence`, pulled only as fast as the
    /// ranks take its items) and gives the outputs in input order, as they are ready.
    ///
    /// The stream ends with the first failed item's ``MPIPoolError`` (in input order: the
    /// outputs before it come first); the items still running are then ended.
    public func mapStream<Function: ProcessFunction, Inputs: Sequence<Function.Input> & Sendable>(
        _ function: Function, _ inputs: Inputs, chunkSize: Int = 1, timeout: Duration? = nil
    ) -> MPIPoolStream<Function.Output> {
        stream(function, SequenceInputs(base: inputs), ordered: true, chunkSize: chunkSize, timeout: timeout)
    }

    /// Calls `function` on every element of an `AsyncSequence` and gives the outputs in input
    /// order, as they are ready (Python's `Pool.imap` over a generator that waits).
    ///
    /// Elements are pulled only as fast as the ranks take them, within the same bound as
    /// ``mapStream(_:_:chunkSize:timeout:)-(_,Inputs,_,_)``'s: an endless sequence is fine. A
    /// request is sent once it holds `chunkSize` inputs or the sequence ends, so with a
    /// `chunkSize` above 1 a slow sequence's elements wait for the rest of their request. An
    /// error the sequence throws ends the stream with that error, once the items already
    /// pulled are done and their outputs given (a failed item among them ends it first).
    /// - Parameters:
    ///   - function: the function, a Codable value sent to the ranks with each request.
    ///   - inputs: the inputs: any `AsyncSequence`, read lazily.
    ///   - chunkSize: inputs sent to a rank at once (default 1).
    ///   - timeout: the longest one item may run (its local worker is then killed and replaced).
    public func mapStream<Function: ProcessFunction, AsyncInputs: AsyncSequence & Sendable>(
        _ function: Function, _ inputs: AsyncInputs, chunkSize: Int = 1, timeout: Duration? = nil
    ) -> MPIPoolStream<Function.Output> where AsyncInputs.Element == Function.Input {
        stream(function, inputs, ordered: true, chunkSize: chunkSize, timeout: timeout)
    }

    /// Calls `function` on every element of an `AsyncSequence` and gives each output as soon
    /// as its item is done, in no particular order (Python's `Pool.imap_unordered` over a
    /// generator).
    ///
    /// Pulled as ``mapStream(_:_:chunkSize:timeout:)-(_,AsyncInputs,_,_)`` pulls. Ends with the
    /// first failure to arrive; an error the sequence throws ends the stream with that error,
    /// once the items already pulled are done.
    /// - Parameters:
    ///   - function: the function, a Codable value sent to the ranks with each request.
    ///   - inputs: the inputs: any `AsyncSequence`, read lazily.
    ///   - chunkSize: inputs sent to a rank at once (default 1).
    ///   - timeout: the longest one item may run (its local worker is then killed and replaced).
    public func mapUnordered<Function: ProcessFunction, AsyncInputs: AsyncSequence & Sendable>(
        _ function: Function, _ inputs: AsyncInputs, chunkSize: Int = 1, timeout: Duration? = nil
    ) -> MPIPoolStream<Function.Output> where AsyncInputs.Element == Function.Input {
        stream(function, inputs, ordered: false, chunkSize: chunkSize, timeout: timeout)
    }

    /// Calls `function` on every input and gives each output as soon as its item is done,
    /// in no particular order. Ends with the first failure to arrive.
    public func mapUnordered<Function: ProcessFunction, Inputs: Sequence<Function.Input> & Sendable>(
        _ function: Function, _ inputs: Inputs, chunkSize: Int = 1, timeout: Duration? = nil
    ) -> MPIPoolStream<Function.Output> {
        stream(function, SequenceInputs(base: inputs), ordered: false, chunkSize: chunkSize, timeout: timeout)
    }

    /// Every stream's dispatch: each rank has `2 × workersPerRank` requests in flight; a slot
    /// that answers takes the next `chunkSize` inputs, so inputs are pulled only as requests
    /// end and outputs are taken (the buffer holds a bounded number).
    ///
    /// With `progress`, the call begins when the stream starts, counts each output handed to
    /// the consumer and the failure that ends the stream, and ends with the stream; `total`
    /// is the inputs' count when known.
    func stream<Function: ProcessFunction, AsyncInputs: AsyncSequence & Sendable>(
        _ function: Function, _ inputs: AsyncInputs, ordered: Bool, chunkSize: Int, timeout: Duration?,
        progress: PoolProgressReporter? = nil, total: Int? = nil
    ) -> MPIPoolStream<Function.Output> where AsyncInputs.Element == Function.Input {
        precondition(chunkSize > 0, "chunkSize must be positive")
        let slotsPerRank = 2 * workersPerRank
        return MPIPoolStream(capacity: links.count * slotsPerRank * chunkSize) { buffer in
            let (typeName, encodedFunction) = try self.beginCall(function)
            defer { self.endCall() }
            progress?.begin(total: total)
            defer { progress?.end() }
            var iterator = inputs.makeAsyncIterator()
            // A sender slot per request in flight: `slotsPerRank` for each rank still there.
            var free: [RankLink] = self.links.filter { !$0.isGone }.flatMap {
                Array(repeating: $0, count: slotsPerRank)
            }
            var nextIndex = 0
            var nextRequest = 0
            var nextToGive = 0
            var finished: [Int: [(Int, Result<Function.Output, MPIPoolError>)]] = [:]
            var exhausted = false
            // The inputs' own failure: the requests already sent finish (their items are not
            // ended for it), then the stream throws it.
            var inputError: (any Error)?
            try await withThrowingTaskGroup(of: (Int, RankLink, [(Int, Result<Function.Output, MPIPoolError>)]).self) {
                group in
                var running = 0
                while true {
                    // Fill every free slot of a rank still there with the next inputs.
                    while !exhausted, let slot = free.popLast() {
                        if slot.isGone { continue }
                        var chunk: [Function.Input] = []
                        do {
                            while chunk.count < chunkSize, let input = try await iterator.next() { chunk.append(input) }
                            if chunk.count < chunkSize { exhausted = true }
                        } catch {
                            // Inputs pulled before the error still run: none is silently lost.
                            inputError = error
                            exhausted = true
                        }
                        if chunk.isEmpty { break }
                        let (request, first) = (nextRequest, nextIndex)
                        nextRequest += 1
                        nextIndex += chunk.count
                        running += 1
                        group.addTask {
                            let results = try await self.runChunk(
                                typeName: typeName, function: encodedFunction, chunk: chunk, firstIndex: first,
                                chunkSize: chunkSize, timeout: timeout, on: slot, outputs: Function.Output.self)
                            return (request, slot, results)
                        }
                    }
                    if running == 0 {
                        if !exhausted { throw MPIPoolError(index: nextIndex, reason: self.noRankReason) }
                        if let inputError { throw inputError }
                        return
                    }
                    guard let done = try await group.next() else { return }
                    let (request, slot, results) = done
                    running -= 1
                    free.append(slot)
                    if ordered {
                        finished[request] = results
                        while let ready = finished.removeValue(forKey: nextToGive) {
                            nextToGive += 1
                            for (_, result) in ready { try await Self.give(result, to: buffer, progress: progress) }
                        }
                    } else {
                        for (_, result) in results { try await Self.give(result, to: buffer, progress: progress) }
                    }
                }
            }
        }
    }

    /// Hands one item's output to the stream's consumer, or throws its failure (which ends
    /// the stream), counting it in `progress`.
    private static func give<Output: Sendable>(
        _ result: Result<Output, MPIPoolError>, to buffer: StreamBuffer<Output>, progress: PoolProgressReporter?
    ) async throws {
        switch result {
        case .success(let output):
            progress?.record(succeeded: 1, failed: 0)
            try await buffer.push(output)
        case .failure(let error):
            progress?.record(succeeded: 0, failed: 1)
            throw error
        }
    }
}

/// A `Sequence` read as an `AsyncSequence` (its iterator never suspends), so that the streams
/// pull both kinds of inputs through one dispatch.
struct SequenceInputs<Base: Sequence & Sendable>: AsyncSequence, Sendable {
    typealias Element = Base.Element
    let base: Base

    func makeAsyncIterator() -> Iterator { Iterator(base: base.makeIterator()) }

    struct Iterator: AsyncIteratorProtocol {
        var base: Base.Iterator
        mutating func next() async -> Base.Element? { base.next() }
    }
}
