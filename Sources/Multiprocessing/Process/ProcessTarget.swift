/// Work for a child process: a Codable value whose stored properties are its arguments
/// (Python's `Process(target=f, args=...)`).
///
/// The value is encoded in this process and decoded in the child, which finds the type by
/// its mangled name: nothing to register, no `if __name__ == "__main__"` guard. Handles such
/// as ``Connection`` ends may be stored in the properties; they travel with the value.
///
/// ```swift
/// struct Greeter: ProcessTarget {
///     var name: String
///     func run() throws { print("hello from \(name)") }
/// }
/// let child = ChildProcess(Greeter(name: "worker 1"))
/// try child.start()
/// try child.join()
/// ```
///
/// `run` may be synchronous or `async`; an error it throws comes back to the parent as a
/// ``ChildProcessError`` from `ChildProcess.join()`. It runs on a thread of its own in the
/// child, and so do its child tasks; the child's main thread serves the main actor, so
/// `MainActor.run` and `@MainActor` functions work there (see <doc:DesignDecisions>).
public protocol ProcessTarget: Codable, Sendable {
    /// The work done in the child process.
    func run() async throws
}

/// A function run in a child process: a Codable value called with a Codable input, whose
/// Codable output comes back to the caller (the unit of work of `ChildProcess.run(_:with:startMethod:)`
/// and of the process pool).
///
/// ```swift
/// struct Square: ProcessFunction {
///     func callAsFunction(_ x: Int) -> Int { x * x }
/// }
/// let nine = try await ChildProcess.run(Square(), with: 3)
/// ```
public protocol ProcessFunction: Codable, Sendable {
    /// What the function takes.
    associatedtype Input: Codable & Sendable
    /// What the function returns.
    associatedtype Output: Codable & Sendable
    /// The work done in the child process; synchronous or `async`.
    func callAsFunction(_ input: Input) async throws -> Output

    /// The library's loop over a chunk of inputs in a pool worker; do not implement it.
    ///
    /// The default implementation is inlined into the module that declares the conforming
    /// type, where `Self` is concrete: a synchronous `callAsFunction` is then a direct call,
    /// with no suspension point and no generic metadata look-ups per input (called through
    /// the protocol from generic code, each call cost an executor switch).
    func _callEach(
        _ inputs: [Input], starting: (Int) -> Void, failed: (Int, any Error) -> Void
    ) async -> [Output]
}

extension ProcessFunction {
    /// Calls the function on each input in order: `starting(offset)` before each call,
    /// `failed(offset, error)` for each that throws; returns the outputs of the others.
    @inlinable
    public func _callEach(
        _ inputs: [Input], starting: (Int) -> Void, failed: (Int, any Error) -> Void
    ) async -> [Output] {
        var outputs: [Output] = []
        outputs.reserveCapacity(inputs.count)
        for offset in inputs.indices {
            starting(offset)
            do {
                outputs.append(try await self(inputs[offset]))
            } catch {
                failed(offset, error)
            }
        }
        return outputs
    }
}
