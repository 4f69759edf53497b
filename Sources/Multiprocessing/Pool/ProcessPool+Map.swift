extension ProcessPool {
    /// Calls `function` on every input in the workers and returns the outputs in input
    /// order (Python's `Pool.map`).
    ///
    /// ```swift
    /// let squares = try await pool.map(Square(), [1, 2, 3, 4, 5])   // [1, 4, 9, 16, 25]
    /// ```
    ///
    /// Every item runs, even when some fail; then the failure of the lowest index is thrown.
    /// - Parameters:
    ///   - function: the function, a Codable value sent to the workers with each chunk.
    ///   - inputs: the inputs.
    ///   - chunkSize: inputs sent to a worker at once; by default Python's rule,
    ///     `count / (4 × workers)` rounded up.
    ///   - timeout: the longest one item may run; its worker is then killed and replaced,
    ///     and the item fails with ``ProcessPoolError/Reason/timedOut(_:)``.
    /// - Throws: ``ProcessPoolError`` naming the first failed item (the function threw, its
    ///   worker died, it timed out); `CancellationError` when the calling task is cancelled.
    public func map<Function: ProcessFunction>(
        _ function: Function, _ inputs: [Function.Input], chunkSize: Int? = nil, timeout: Duration? = nil
    ) async throws -> [Function.Output] {
        var outcomes: [PoolChunkOutcome<Function.Output>] = []
        let size = chunkSize ?? automaticChunkSize(for: inputs.count)
        try await dispatch(function, inputs, chunkSize: size, timeout: timeout, promptly: false) { outcomes += $0 }
        // Each outcome covers a run of inputs of its own: in order of their starts, the
        // outputs are the call's, and the first failure is the lowest index's.
        outcomes.sort { $0.start < $1.start }
        if let failure = outcomes.lazy.compactMap(\.failures.first).first { throw failure.error }
        var outputs: [Function.Output] = []
        outputs.reserveCapacity(inputs.count)
        for outcome in outcomes { outputs.append(contentsOf: outcome.outputs) }
        return outputs
    }

    /// Calls `function` on every input and returns one `Result` per input, in input order:
    /// the failures in place instead of thrown.
    ///
    /// ```swift
    /// for (index, result) in await pool.results(Parse(), files).enumerated() {
    ///     if case .failure(let error) = result { print("file \(index): \(error)") }
    /// }
    /// ```
    ///
    /// When the call as a whole cannot finish (the calling task is cancelled, the pool is
    /// closed or has no worker left), every item fails with that reason
    /// (``ProcessPoolError/Reason/cancelled``, ``ProcessPoolError/Reason/closed``, ...).
    /// - Parameters:
    ///   - function: the function, a Codable value sent to the workers with each chunk.
    ///   - inputs: the inputs.
    ///   - chunkSize: as for ``map(_:_:chunkSize:timeout:)``.
    ///   - timeout: the longest one item may run; its worker is then killed and replaced.
    public func results<Function: ProcessFunction>(
        _ function: Function, _ inputs: [Function.Input], chunkSize: Int? = nil, timeout: Duration? = nil
    ) async -> [Result<Function.Output, ProcessPoolError>] {
        await results(function, inputs, chunkSize: chunkSize, timeout: timeout, progress: nil)
    }

    /// `results` with progress: failures in place, reported to `progress`.
    func results<Function: ProcessFunction>(
        _ function: Function, _ inputs: [Function.Input], chunkSize: Int?, timeout: Duration?,
        progress: PoolProgressReporter?
    ) async -> [Result<Function.Output, ProcessPoolError>] {
        do {
            return try await results(
                function, inputs, chunkSize: chunkSize, timeout: timeout, progress: progress, throwingCancellation: ())
        } catch {
            let failure: ProcessPoolError
            switch error {
            case let error as ProcessPoolError: failure = error
            case is CancellationError: failure = ProcessPoolError(reason: .cancelled)
            default: failure = ProcessPoolError(reason: .couldNotRun("\(error)"))  // an input that cannot be encoded
            }
            return inputs.indices.map { _ in .failure(failure) }
        }
    }

    /// The results of every input, in input order; reports to `progress` as chunks finish.
    func results<Function: ProcessFunction>(
        _ function: Function, _ inputs: [Function.Input], chunkSize: Int?, timeout: Duration?,
        progress: PoolProgressReporter? = nil, throwingCancellation: Void
    ) async throws -> [Result<Function.Output, ProcessPoolError>] {
        progress?.begin(total: inputs.count)
        defer { progress?.end() }
        var slots = [Result<Function.Output, ProcessPoolError>?](repeating: nil, count: inputs.count)
        let size = chunkSize ?? automaticChunkSize(for: inputs.count)
        try await dispatch(function, inputs, chunkSize: size, timeout: timeout, promptly: progress != nil) {
            outcomes in
            for outcome in outcomes {
                outcome.forEach { index, result in slots[index] = result }
                progress?.record(succeeded: outcome.count - outcome.failures.count, failed: outcome.failures.count)
            }
        }
        return slots.map { $0! }
    }

    /// Calls `function` on one input in a worker and returns its output (Python's
    /// `Pool.apply`).
    /// - Parameters:
    ///   - function: the function, a Codable value sent to the worker.
    ///   - input: its input.
    ///   - timeout: the longest the call may run; its worker is then killed and replaced.
    /// - Throws: ``ProcessPoolError`` when the function threw, its worker died or it timed
    ///   out; `CancellationError` when the calling task is cancelled.
    public func apply<Function: ProcessFunction>(
        _ function: Function, _ input: Function.Input, timeout: Duration? = nil
    ) async throws -> Function.Output {
        try await runOne(function, input, timeout: timeout)
    }
}
