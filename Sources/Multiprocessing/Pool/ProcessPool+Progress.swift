/// The pool's calls with progress: each takes a ``PoolProgressReporter`` (whose `updates`
/// are an `AsyncSequence`), or a closure called with each ``PoolProgress``.
extension ProcessPool {
    /// ``map(_:_:chunkSize:timeout:)``, reporting its progress to `progress`.
    ///
    /// ```swift
    /// let reporter = PoolProgressReporter()
    /// Task { for await update in reporter.updates { print(update) } }
    /// let outputs = try await pool.map(Render(), pages, progress: reporter)
    /// ```
    /// - Parameters:
    ///   - function: the function, a Codable value sent to the workers with each chunk.
    ///   - inputs: the inputs.
    ///   - chunkSize: as for ``map(_:_:chunkSize:timeout:)``.
    ///   - timeout: the longest one item may run; its worker is then killed and replaced.
    ///   - progress: receives the call's updates; the final one counts every item.
    /// - Throws: as ``map(_:_:chunkSize:timeout:)``.
    public func map<Function: ProcessFunction>(
        _ function: Function, _ inputs: [Function.Input], chunkSize: Int? = nil, timeout: Duration? = nil,
        progress: PoolProgressReporter
    ) async throws -> [Function.Output] {
        try await results(
            function, inputs, chunkSize: chunkSize, timeout: timeout, progress: progress, throwingCancellation: ()
        ).map { try $0.get() }
    }

    /// ``map(_:_:chunkSize:timeout:)``, calling `progress` with its updates (at most one
    /// per 100 ms, and a final one).
    ///
    /// ```swift
    /// let outputs = try await pool.map(Render(), pages) { progress in print(progress) }
    /// ```
    /// - Parameters:
    ///   - function: the function, a Codable value sent to the workers with each chunk.
    ///   - inputs: the inputs.
    ///   - chunkSize: as for ``map(_:_:chunkSize:timeout:)``.
    ///   - timeout: the longest one item may run; its worker is then killed and replaced.
    ///   - progress: called with each update, in the calling task.
    /// - Throws: as ``map(_:_:chunkSize:timeout:)``.
    public func map<Function: ProcessFunction>(
        _ function: Function, _ inputs: [Function.Input], chunkSize: Int? = nil, timeout: Duration? = nil,
        progress: @escaping @Sendable (PoolProgress) -> Void
    ) async throws -> [Function.Output] {
        try await map(
            function, inputs, chunkSize: chunkSize, timeout: timeout, progress: PoolProgressReporter(handler: progress))
    }

    /// ``results(_:_:chunkSize:timeout:)``, reporting its progress to `progress` (failed items
    /// are counted in ``PoolProgress/failed``).
    /// - Parameters:
    ///   - function: the function, a Codable value sent to the workers with each chunk.
    ///   - inputs: the inputs.
    ///   - chunkSize: as for ``map(_:_:chunkSize:timeout:)``.
    ///   - timeout: the longest one item may run; its worker is then killed and replaced.
    ///   - progress: receives the call's updates.
    public func results<Function: ProcessFunction>(
        _ function: Function, _ inputs: [Function.Input], chunkSize: Int? = nil, timeout: Duration? = nil,
        progress: PoolProgressReporter
    ) async -> [Result<Function.Output, ProcessPoolError>] {
        await results(function, inputs, chunkSize: chunkSize, timeout: timeout, progress: Optional(progress))
    }

    /// ``results(_:_:chunkSize:timeout:)``, calling `progress` with its updates.
    /// - Parameters:
    ///   - function: the function, a Codable value sent to the workers with each chunk.
    ///   - inputs: the inputs.
    ///   - chunkSize: as for ``map(_:_:chunkSize:timeout:)``.
    ///   - timeout: the longest one item may run; its worker is then killed and replaced.
    ///   - progress: called with each update, in the calling task.
    public func results<Function: ProcessFunction>(
        _ function: Function, _ inputs: [Function.Input], chunkSize: Int? = nil, timeout: Duration? = nil,
        progress: @escaping @Sendable (PoolProgress) -> Void
    ) async -> [Result<Function.Output, ProcessPoolError>] {
        await results(
            function, inputs, chunkSize: chunkSize, timeout: timeout,
            progress: Optional(PoolProgressReporter(handler: progress)))
    }

    /// ``mapStream(_:_:chunkSize:timeout:)-(_,Inputs,_,_)``, reporting its progress to `progress`.
    ///
    /// The counts are those of the outputs handed to the stream (and the failure that ends
    /// it); the total is the inputs' count when they are a `Collection`, else unknown.
    /// - Parameters:
    ///   - function: the function, a Codable value sent to the workers with each chunk.
    ///   - inputs: the inputs: any `Sequence`, read lazily.
    ///   - chunkSize: inputs sent to a worker at once (default 1).
    ///   - timeout: the longest one item may run (its worker is then killed and replaced).
    ///   - progress: receives the call's updates.
    public func mapStream<Function: ProcessFunction, Inputs: Sequence<Function.Input> & Sendable>(
        _ function: Function, _ inputs: Inputs, chunkSize: Int = 1, timeout: Duration? = nil,
        progress: PoolProgressReporter
    ) -> PoolStream<Function.Output> {
        Self.reporting(
            mapStream(function, inputs, chunkSize: chunkSize, timeout: timeout), total: Self.knownCount(of: inputs),
            to: progress)
    }

    /// ``mapStream(_:_:chunkSize:timeout:)-(_,Inputs,_,_)``, calling `progress` with its updates.
    /// - Parameters:
    ///   - function: the function, a Codable value sent to the workers with each chunk.
    ///   - inputs: the inputs: any `Sequence`, read lazily.
    ///   - chunkSize: inputs sent to a worker at once (default 1).
    ///   - timeout: the longest one item may run (its worker is then killed and replaced).
    ///   - progress: called with each update, in the task that produces the stream.
    public func mapStream<Function: ProcessFunction, Inputs: Sequence<Function.Input> & Sendable>(
        _ function: Function, _ inputs: Inputs, chunkSize: Int = 1, timeout: Duration? = nil,
        progress: @escaping @Sendable (PoolProgress) -> Void
    ) -> PoolStream<Function.Output> {
        mapStream(
            function, inputs, chunkSize: chunkSize, timeout: timeout, progress: PoolProgressReporter(handler: progress))
    }

    /// ``mapUnordered(_:_:chunkSize:timeout:)-(_,Inputs,_,_)``, reporting its progress to `progress`.
    ///
    /// The counts are those of the outputs handed to the stream (and the failure that ends
    /// it); the total is the inputs' count when they are a `Collection`, else unknown.
    /// - Parameters:
    ///   - function: the function, a Codable value sent to the workers with each chunk.
    ///   - inputs: the inputs: any `Sequence`, read lazily.
    ///   - chunkSize: inputs sent to a worker at once (default 1).
    ///   - timeout: the longest one item may run (its worker is then killed and replaced).
    ///   - progress: receives the call's updates.
    public func mapUnordered<Function: ProcessFunction, Inputs: Sequence<Function.Input> & Sendable>(
        _ function: Function, _ inputs: Inputs, chunkSize: Int = 1, timeout: Duration? = nil,
        progress: PoolProgressReporter
    ) -> PoolStream<Function.Output> {
        Self.reporting(
            mapUnordered(function, inputs, chunkSize: chunkSize, timeout: timeout), total: Self.knownCount(of: inputs),
            to: progress)
    }

    /// ``mapUnordered(_:_:chunkSize:timeout:)-(_,Inputs,_,_)``, calling `progress` with its updates.
    /// - Parameters:
    ///   - function: the function, a Codable value sent to the workers with each chunk.
    ///   - inputs: the inputs: any `Sequence`, read lazily.
    ///   - chunkSize: inputs sent to a worker at once (default 1).
    ///   - timeout: the longest one item may run (its worker is then killed and replaced).
    ///   - progress: called with each update, in the task that produces the stream.
    public func mapUnordered<Function: ProcessFunction, Inputs: Sequence<Function.Input> & Sendable>(
        _ function: Function, _ inputs: Inputs, chunkSize: Int = 1, timeout: Duration? = nil,
        progress: @escaping @Sendable (PoolProgress) -> Void
    ) -> PoolStream<Function.Output> {
        mapUnordered(
            function, inputs, chunkSize: chunkSize, timeout: timeout, progress: PoolProgressReporter(handler: progress))
    }

    /// A stream that passes `stream`'s results on, counting them: the streams' own code
    /// needs no hook, and a stream without progress pays nothing.
    private static func reporting<Element: Sendable>(
        _ stream: PoolStream<Element>, total: Int?, to progress: PoolProgressReporter
    ) -> PoolStream<Element> {
        progress.begin(total: total)
        return PoolStream(capacity: 1) { buffer in
            defer { progress.end() }
            var results = stream.makeAsyncIterator()
            while true {
                let element: Element?
                do {
                    element = try await results.next()
                } catch let error as ProcessPoolError where error.index != nil {
                    progress.record(succeeded: 0, failed: 1)  // the failed item that ends the stream
                    throw error
                }
                guard let element else { return }
                progress.record(succeeded: 1, failed: 0)
                try await buffer.put(element)
            }
        }
    }

    /// The number of inputs, when they can be counted without reading them: a `Collection`'s.
    private static func knownCount<Inputs: Sequence>(of inputs: Inputs) -> Int? {
        (inputs as? any Collection)?.count
    }
}
