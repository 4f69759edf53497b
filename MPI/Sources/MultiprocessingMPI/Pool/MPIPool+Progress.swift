@_spi(MPI) import Multiprocessing

/// The pool's calls with progress, as ``Multiprocessing/ProcessPool``'s: each takes a
/// ``Multiprocessing/PoolProgressReporter`` (whose `updates` are an `AsyncSequence`), or a
/// closure called with each ``Multiprocessing/PoolProgress``.
///
/// Counts rise as the ranks answer requests (a request's items at once), at most one update
/// per reporter interval and always a final one. The closure is called from one of the
/// call's tasks (not the calling task, as on one machine: the requests to the ranks are
/// awaited by tasks of their own), one update at a time and in order: keep it quick.
extension MPIPool {
    /// ``map(_:_:chunkSize:timeout:)``, reporting its progress to `progress`.
    ///
    /// ```swift
    /// let reporter = PoolProgressReporter()
    /// Task { for await update in reporter.updates { print(update) } }
    /// let outputs = try await pool.map(Render(), pages, progress: reporter)
    /// ```
    /// - Parameters:
    ///   - function: the function, a Codable value sent to the ranks with each request.
    ///   - inputs: the inputs.
    ///   - chunkSize: as for ``map(_:_:chunkSize:timeout:)``.
    ///   - timeout: the longest one item may run; its local worker is then killed and replaced.
    ///   - progress: receives the call's updates; the final one counts every item.
    /// - Throws: as ``map(_:_:chunkSize:timeout:)``.
    public func map<Function: ProcessFunction>(
        _ function: Function, _ inputs: [Function.Input], chunkSize: Int? = nil, timeout: Duration? = nil,
        progress: PoolProgressReporter
    ) async throws -> [Function.Output] {
        try await run(function, inputs, chunkSize: chunkSize, timeout: timeout, progress: progress).map { try $0.get() }
    }

    /// ``map(_:_:chunkSize:timeout:)``, calling `progress` with its updates (at most one
    /// per 100 ms, and a final one).
    ///
    /// ```swift
    /// let outputs = try await pool.map(Render(), pages) { progress in print(progress) }
    /// ```
    /// - Parameters:
    ///   - function: the function, a Codable value sent to the ranks with each request.
    ///   - inputs: the inputs.
    ///   - chunkSize: as for ``map(_:_:chunkSize:timeout:)``.
    ///   - timeout: the longest one item may run; its local worker is then killed and replaced.
    ///   - progress: called with each update, from one of the call's tasks.
    /// - Throws: as ``map(_:_:chunkSize:timeout:)``.
    public func map<Function: ProcessFunction>(
        _ function: Function, _ inputs: [Function.Input], chunkSize: Int? = nil, timeout: Duration? = nil,
        progress: @escaping @Sendable (PoolProgress) -> Void
    ) async throws -> [Function.Output] {
        let reporter = PoolProgressReporter(handler: progress)
        return try await map(function, inputs, chunkSize: chunkSize, timeout: timeout, progress: reporter)
    }

    /// ``results(_:_:chunkSize:timeout:)``, reporting its progress to `progress` (failed items
    /// are counted in ``Multiprocessing/PoolProgress/failed``).
    /// - Parameters:
    ///   - function: the function, a Codable value sent to the ranks with each request.
    ///   - inputs: the inputs.
    ///   - chunkSize: as for ``map(_:_:chunkSize:timeout:)``.
    ///   - timeout: the longest one item may run; its local worker is then killed and replaced.
    ///   - progress: receives the call's updates.
    public func results<Function: ProcessFunction>(
        _ function: Function, _ inputs: [Function.Input], chunkSize: Int? = nil, timeout: Duration? = nil,
        progress: PoolProgressReporter
    ) async -> [Result<Function.Output, MPIPoolError>] {
        await results(function, inputs, chunkSize: chunkSize, timeout: timeout, reportingTo: progress)
    }

    /// ``results(_:_:chunkSize:timeout:)``, calling `progress` with its updates.
    /// - Parameters:
    ///   - function: the function, a Codable value sent to the ranks with each request.
    ///   - inputs: the inputs.
    ///   - chunkSize: as for ``map(_:_:chunkSize:timeout:)``.
    ///   - timeout: the longest one item may run; its local worker is then killed and replaced.
    ///   - progress: called with each update, from one of the call's tasks.
    public func results<Function: ProcessFunction>(
        _ function: Function, _ inputs: [Function.Input], chunkSize: Int? = nil, timeout: Duration? = nil,
        progress: @escaping @Sendable (PoolProgress) -> Void
    ) async -> [Result<Function.Output, MPIPoolError>] {
        let reporter = PoolProgressReporter(handler: progress)
        return await results(function, inputs, chunkSize: chunkSize, timeout: timeout, reportingTo: reporter)
    }

    /// ``mapStream(_:_:chunkSize:timeout:)-(_,Inputs,_,_)``, reporting its progress to `progress`.
    ///
    /// The counts are those of the outputs handed to the stream (and the failure that ends
    /// it); the total is the inputs' count when they are a `Collection`, else unknown. The
    /// call begins when the stream is first iterated.
    /// - Parameters:
    ///   - function: the function, a Codable value sent to the ranks with each request.
    ///   - inputs: the inputs: any `Sequence`, read lazily.
    ///   - chunkSize: inputs sent to a rank at once (default 1).
    ///   - timeout: the longest one item may run (its local worker is then killed and replaced).
    ///   - progress: receives the call's updates.
    public func mapStream<Function: ProcessFunction, Inputs: Sequence<Function.Input> & Sendable>(
        _ function: Function, _ inputs: Inputs, chunkSize: Int = 1, timeout: Duration? = nil,
        progress: PoolProgressReporter
    ) -> MPIPoolStream<Function.Output> {
        reportingStream(function, inputs, ordered: true, chunkSize: chunkSize, timeout: timeout, progress: progress)
    }

    /// ``mapStream(_:_:chunkSize:timeout:)-(_,Inputs,_,_)``, calling `progress` with its updates.
    /// - Parameters:
    ///   - function: the function, a Codable value sent to the ranks with each request.
    ///   - inputs: the inputs: any `Sequence`, read lazily.
    ///   - chunkSize: inputs sent to a rank at once (default 1).
    ///   - timeout: the longest one item may run (its local worker is then killed and replaced).
    ///   - progress: called with each update, in the task that produces the stream.
    public func mapStream<Function: ProcessFunction, Inputs: Sequence<Function.Input> & Sendable>(
        _ function: Function, _ inputs: Inputs, chunkSize: Int = 1, timeout: Duration? = nil,
        progress: @escaping @Sendable (PoolProgress) -> Void
    ) -> MPIPoolStream<Function.Output> {
        reportingStream(
            function, inputs, ordered: true, chunkSize: chunkSize, timeout: timeout,
            progress: PoolProgressReporter(handler: progress))
    }

    /// ``mapUnordered(_:_:chunkSize:timeout:)-(_,Inputs,_,_)``, calling `progress` with its updates.
    /// - Parameters:
    ///   - function: the function, a Codable value sent to the ranks with each request.
    ///   - inputs: the inputs: any `Sequence`, read lazily.
    ///   - chunkSize: inputs sent to a rank at once (default 1).
    ///   - timeout: the longest one item may run (its local worker is then killed and replaced).
    ///   - progress: called with each update, in the task that produces the stream.
    public func mapUnordered<Function: ProcessFunction, Inputs: Sequence<Function.Input> & Sendable>(
        _ function: Function, _ inputs: Inputs, chunkSize: Int = 1, timeout: Duration? = nil,
        progress: @escaping @Sendable (PoolProgress) -> Void
    ) -> MPIPoolStream<Function.Output> {
        reportingStream(
            function, inputs, ordered: false, chunkSize: chunkSize, timeout: timeout,
            progress: PoolProgressReporter(handler: progress))
    }

    /// ``mapUnordered(_:_:chunkSize:timeout:)-(_,Inputs,_,_)``, reporting its progress to `progress`.
    ///
    /// The counts are those of the outputs handed to the stream (and the failure that ends
    /// it); the total is the inputs' count when they are a `Collection`, else unknown. The
    /// call begins when the stream is first iterated.
    /// - Parameters:
    ///   - function: the function, a Codable value sent to the ranks with each request.
    ///   - inputs: the inputs: any `Sequence`, read lazily.
    ///   - chunkSize: inputs sent to a rank at once (default 1).
    ///   - timeout: the longest one item may run (its local worker is then killed and replaced).
    ///   - progress: receives the call's updates.
    public func mapUnordered<Function: ProcessFunction, Inputs: Sequence<Function.Input> & Sendable>(
        _ function: Function, _ inputs: Inputs, chunkSize: Int = 1, timeout: Duration? = nil,
        progress: PoolProgressReporter
    ) -> MPIPoolStream<Function.Output> {
        reportingStream(function, inputs, ordered: false, chunkSize: chunkSize, timeout: timeout, progress: progress)
    }

    /// A stream over a `Sequence`, reporting to `progress`; the total is the inputs' count
    /// when they are a `Collection` (counted without reading them).
    private func reportingStream<Function: ProcessFunction, Inputs: Sequence<Function.Input> & Sendable>(
        _ function: Function, _ inputs: Inputs, ordered: Bool, chunkSize: Int, timeout: Duration?,
        progress: PoolProgressReporter
    ) -> MPIPoolStream<Function.Output> {
        stream(
            function, SequenceInputs(base: inputs), ordered: ordered, chunkSize: chunkSize, timeout: timeout,
            progress: progress, total: (inputs as? any Collection)?.count)
    }
}
