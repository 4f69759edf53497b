extension ProcessPool {
    /// Calls `function` on every input and streams the outputs in input order (Python's
    /// `Pool.imap`).
    ///
    /// Inputs are pulled only as fast as workers take them and the stream is read, so an
    /// endless or huge sequence is fine: the inputs pulled stay within
    /// `4 × workers × chunkSize` of the outputs read (no input is cut more than
    /// `2 × workers × chunkSize` past the oldest unanswered one, and at most
    /// `workers × chunkSize` outputs wait in the stream). The stream throws at the first
    /// failed item, after the outputs before it.
    ///
    /// ```swift
    /// for try await square in pool.mapStream(Square(), 1...1_000_000) { total += square }
    /// ```
    /// - Parameters:
    ///   - function: the function, a Codable value sent to the workers with each chunk.
    ///   - inputs: the inputs: any `Sequence`, read lazily.
    ///   - chunkSize: inputs sent to a worker at once (default 1, as Python's `imap`).
    ///   - timeout: the longest one item may run (its worker is then killed and replaced).
    public func mapStream<Function: ProcessFunction, Inputs: Sequence<Function.Input> & Sendable>(
        _ function: Function, _ inputs: Inputs, chunkSize: Int = 1, timeout: Duration? = nil
    ) -> PoolStream<Function.Output> {
        PoolStream(capacity: workerCount * chunkSize) { buffer in
            var iterator = inputs.makeIterator()
            try await self.streamInOrder(function, chunkSize: chunkSize, timeout: timeout, into: buffer) { size in
                var chunk: [Function.Input] = []
                while chunk.count < size, let input = iterator.next() { chunk.append(input) }
                return chunk
            }
        }
    }

    /// Calls `function` on every element of an `AsyncSequence` and streams the outputs in
    /// input order (Python's `Pool.imap` over a generator that waits).
    ///
    /// Elements are pulled only as fast as workers take them and the stream is read, within
    /// the same bound as ``mapStream(_:_:chunkSize:timeout:)-(_,Inputs,_,_)``'s: an endless sequence is
    /// fine. A chunk is sent once it is full or the sequence ends, so with a `chunkSize`
    /// above 1 a slow sequence's elements wait for the rest of their chunk. An error the
    /// sequence throws ends the stream with that error, after the outputs before it.
    /// - Parameters:
    ///   - function: the function, a Codable value sent to the workers with each chunk.
    ///   - inputs: the inputs: any `AsyncSequence`, read lazily.
    ///   - chunkSize: inputs sent to a worker at once (default 1).
    ///   - timeout: the longest one item may run (its worker is then killed and replaced).
    public func mapStream<Function: ProcessFunction, AsyncInputs: AsyncSequence & Sendable>(
        _ function: Function, _ inputs: AsyncInputs, chunkSize: Int = 1, timeout: Duration? = nil
    ) -> PoolStream<Function.Output> where AsyncInputs.Element == Function.Input {
        PoolStream(capacity: workerCount * chunkSize) { buffer in
            var iterator = inputs.makeAsyncIterator()
            try await self.streamInOrder(function, chunkSize: chunkSize, timeout: timeout, into: buffer) { size in
                var chunk: [Function.Input] = []
                while chunk.count < size, let input = try await iterator.next() { chunk.append(input) }
                return chunk
            }
        }
    }

    /// Calls `function` on every input and streams the outputs as they are done, in any
    /// order (Python's `Pool.imap_unordered`).
    ///
    /// Inputs are pulled only as fast as workers take them and the stream is read: the
    /// inputs pulled stay within `6 × workers × chunkSize + 1` of the outputs read (at most
    /// five chunks per worker unanswered, `workers × chunkSize` outputs waiting in the
    /// stream). The stream throws at the first failure to arrive (a ``ProcessPoolError``
    /// naming its index), after the outputs that arrived before it.
    /// - Parameters:
    ///   - function: the function, a Codable value sent to the workers with each chunk.
    ///   - inputs: the inputs: any `Sequence`, read lazily.
    ///   - chunkSize: inputs sent to a worker at once (default 1).
    ///   - timeout: the longest one item may run (its worker is then killed and replaced).
    public func mapUnordered<Function: ProcessFunction, Inputs: Sequence<Function.Input> & Sendable>(
        _ function: Function, _ inputs: Inputs, chunkSize: Int = 1, timeout: Duration? = nil
    ) -> PoolStream<Function.Output> {
        PoolStream(capacity: workerCount * chunkSize) { buffer in
            var iterator = inputs.makeIterator()
            try await self.streamAsDone(function, chunkSize: chunkSize, timeout: timeout, into: buffer) { size in
                var chunk: [Function.Input] = []
                while chunk.count < size, let input = iterator.next() { chunk.append(input) }
                return chunk
            }
        }
    }

    /// Calls `function` on every element of an `AsyncSequence` and streams the outputs as
    /// they are done, in any order (Python's `Pool.imap_unordered` over a generator).
    ///
    /// Pulled as ``mapUnordered(_:_:chunkSize:timeout:)-(_,Inputs,_,_)`` pulls a `Sequence`; a chunk is
    /// sent once it is full or the sequence ends. An error the sequence throws ends the
    /// stream with that error.
    /// - Parameters:
    ///   - function: the function, a Codable value sent to the workers with each chunk.
    ///   - inputs: the inputs: any `AsyncSequence`, read lazily.
    ///   - chunkSize: inputs sent to a worker at once (default 1).
    ///   - timeout: the longest one item may run (its worker is then killed and replaced).
    public func mapUnordered<Function: ProcessFunction, AsyncInputs: AsyncSequence & Sendable>(
        _ function: Function, _ inputs: AsyncInputs, chunkSize: Int = 1, timeout: Duration? = nil
    ) -> PoolStream<Function.Output> where AsyncInputs.Element == Function.Input {
        PoolStream(capacity: workerCount * chunkSize) { buffer in
            var iterator = inputs.makeAsyncIterator()
            try await self.streamAsDone(function, chunkSize: chunkSize, timeout: timeout, into: buffer) { size in
                var chunk: [Function.Input] = []
                while chunk.count < size, let input = try await iterator.next() { chunk.append(input) }
                return chunk
            }
        }
    }

    /// Runs a stream's call, putting outputs in input order.
    private func streamInOrder<Function: ProcessFunction>(
        _ function: Function, chunkSize: Int, timeout: Duration?, into buffer: PoolStreamBuffer<Function.Output>,
        nextInputs: (Int) async throws -> [Function.Input]
    ) async throws {
        var waiting: [Int: Result<Function.Output, ProcessPoolError>] = [:]
        var next = 0
        try await dispatch(
            function, chunkSize: chunkSize, timeout: timeout, window: 2 * workerCount * chunkSize,
            nextInputs: { try await nextInputs($0) }
        ) { outcomes in
            for outcome in outcomes {
                outcome.forEach { index, result in waiting[index] = result }
            }
            while let result = waiting.removeValue(forKey: next) {
                next += 1
                try await buffer.put(try result.get())
            }
        }
    }

    /// Runs a stream's call, putting outputs as they come.
    private func streamAsDone<Function: ProcessFunction>(
        _ function: Function, chunkSize: Int, timeout: Duration?, into buffer: PoolStreamBuffer<Function.Output>,
        nextInputs: (Int) async throws -> [Function.Input]
    ) async throws {
        try await dispatch(function, chunkSize: chunkSize, timeout: timeout, nextInputs: { try await nextInputs($0) }) {
            outcomes in
            for outcome in outcomes {
                var results: [Result<Function.Output, ProcessPoolError>] = []
                outcome.forEach { _, result in results.append(result) }
                for result in results { try await buffer.put(try result.get()) }
            }
        }
    }
}
