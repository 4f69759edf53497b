extension ProcessPool {
    /// Calls `function` on every input and streams the outputs in input order (Python's
    /// `Pool.imap`).
    ///
    /// Inputs are pulled only as fast as workers take them (at most `workers × chunkSize`
    /// in flight, and none more than `2 × workers × chunkSize` past the oldest unanswered
    /// one), and only as fast as the stream is read, so an endless or huge sequence is fine. The stream throws at the first failed item, after the outputs before it.
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
            var waiting: [Int: Result<Function.Output, ProcessPoolError>] = [:]
            var next = 0
            let window = 2 * self.workerCount * chunkSize
            try await self.dispatch(function, inputs, chunkSize: chunkSize, timeout: timeout, window: window) {
                chunk in
                for item in chunk { waiting[item.index] = item.result }
                while let result = waiting.removeValue(forKey: next) {
                    next += 1
                    try await buffer.put(try result.get())
                }
            }
        }
    }

    /// Calls `function` on every input and streams the outputs as they are done, in any
    /// order (Python's `Pool.imap_unordered`).
    ///
    /// Inputs are pulled only as fast as workers take them and the stream is read. The
    /// stream throws at the first failure to arrive (a ``ProcessPoolError`` naming its
    /// index), after the outputs that arrived before it.
    /// - Parameters:
    ///   - function: the function, a Codable value sent to the workers with each chunk.
    ///   - inputs: the inputs: any `Sequence`, read lazily.
    ///   - chunkSize: inputs sent to a worker at once (default 1).
    ///   - timeout: the longest one item may run (its worker is then killed and replaced).
    public func mapUnordered<Function: ProcessFunction, Inputs: Sequence<Function.Input> & Sendable>(
        _ function: Function, _ inputs: Inputs, chunkSize: Int = 1, timeout: Duration? = nil
    ) -> PoolStream<Function.Output> {
        PoolStream(capacity: workerCount * chunkSize) { buffer in
            try await self.dispatch(function, inputs, chunkSize: chunkSize, timeout: timeout) { chunk in
                for item in chunk { try await buffer.put(try item.result.get()) }
            }
        }
    }
}
