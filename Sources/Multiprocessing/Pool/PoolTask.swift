/// A call submitted to a ``ProcessPool`` that runs on its own (Python's `apply_async`):
/// await its ``value``, or ``cancel()`` it.
///
/// ```swift
/// let task = pool.submit(Square(), 12)
/// print(try await task.value)   // 144
/// ```
public struct PoolTask<Output: Sendable>: Sendable {
    private let task: Task<Output, any Error>

    init(_ task: Task<Output, any Error>) { self.task = task }

    /// The output, once the call is done.
    /// - Throws: ``ProcessPoolError`` (the function threw, its worker died, it timed out),
    ///   or `CancellationError` after ``cancel()``. Cancelling the task that awaits `value`
    ///   does not cancel the call: ``cancel()`` does.
    public var value: Output {
        get async throws { try await task.value }
    }

    /// Stops the call: if it is running, its worker is killed (and replaced).
    public func cancel() { task.cancel() }

    /// Whether ``cancel()`` was called.
    public var isCancelled: Bool { task.isCancelled }
}

extension ProcessPool {
    /// Starts `function(input)` in a worker and returns at once with a handle to await or
    /// cancel (Python's `apply_async`).
    /// - Parameters:
    ///   - function: the function, a Codable value sent to the worker.
    ///   - input: its input.
    ///   - timeout: the longest the call may run (its worker is then killed and replaced).
    public func submit<Function: ProcessFunction>(
        _ function: Function, _ input: Function.Input, timeout: Duration? = nil
    ) -> PoolTask<Function.Output> {
        PoolTask(Task { try await self.apply(function, input, timeout: timeout) })
    }
}
