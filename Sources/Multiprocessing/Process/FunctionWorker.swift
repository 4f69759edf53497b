import Glibc
import Synchronization

/// A child process that keeps running, calling one ``ProcessFunction`` for each input it is
/// sent: the persistent worker the process pool is built from.
///
/// One task at a time: ``call(_:)`` sends the input with a task id and waits for the reply
/// carrying the same id. If the worker dies in the middle of a task, the call fails with a
/// ``ChildProcessError`` saying how it ended (the pool then names the input and starts a
/// new worker). ``kill()`` ends it at once: a task's timeout or cancellation really stops
/// the work.
final class FunctionWorker<Function: ProcessFunction>: Sendable {
    let process: ChildProcess
    private let tasks: Connection<WorkerMessage>
    private let nextID = Atomic<UInt64>(1)

    /// Starts a worker for `function`.
    init(_ function: Function, name: String? = nil, startMethod: StartMethod = .spawn) async throws {
        let (mine, theirs) = try Connection<WorkerMessage>.pair()
        tasks = mine
        process = ChildProcess(ServeFunction(function: function, tasks: theirs), name: name, startMethod: startMethod)
        try await process.start()
    }

    /// Runs `function(input)` in the worker and returns its output.
    /// - Throws: ``ChildProcessError`` when the function threw (``ChildProcessError/Reason/threw(_:)``)
    ///   or the worker died during the call (``ChildProcessError/Reason/terminated(_:)``).
    func call(_ input: Function.Input) async throws -> Function.Output {
        let id = nextID.add(1, ordering: .relaxed).oldValue
        let reply: WorkerMessage
        do {
            try await tasks.send(.task(id: id, input: try BinaryEncoder().encode(input)))
            reply = try await tasks.receive()
        } catch is ConnectionError {
            // The worker is gone: how it ended is the error (join throws it).
            try await process.join()
            let termination = process.termination ?? .exited(0)
            throw ChildProcessError(
                processName: process.name, pid: process.pid ?? 0, reason: .terminated(termination),
                termination: termination)
        }
        guard case .result(id, let outcome) = reply else {
            throw WireError.invalidData("the worker answered a task it was not given", codingPath: "")
        }
        switch outcome {
        case .succeeded(let output): return try BinaryDecoder().decode(Function.Output.self, from: output)
        case .threw(let report):
            throw ChildProcessError(
                processName: process.name, pid: process.pid ?? 0, reason: .threw(RemoteError(report)),
                termination: .exited(0))
        case .couldNotStart(let reason):
            throw ChildProcessError(
                processName: process.name, pid: process.pid ?? 0, reason: .couldNotStart(reason),
                termination: .exited(0))
        }
    }

    /// Ends the worker at once.
    func kill() { process.kill() }

    /// Lets the worker finish (it exits when its task channel closes) and waits for it.
    func close() async throws {
        tasks.close()
        try await process.join()
    }
}

/// What travels between a ``FunctionWorker`` and its process.
enum WorkerMessage: Codable, Sendable {
    case task(id: UInt64, input: [UInt8])
    case result(id: UInt64, outcome: ChildOutcome)
}

/// The work of a persistent worker: answer tasks until the channel closes.
struct ServeFunction<Function: ProcessFunction>: ProcessTarget {
    let function: Function
    let tasks: Connection<WorkerMessage>

    func run() async throws {
        while true {
            let message: WorkerMessage
            do {
                message = try await tasks.receive()
            } catch ConnectionError.endOfStream {
                return  // the parent is done with this worker
            }
            guard case .task(let id, let input) = message else { continue }
            let outcome: ChildOutcome
            do {
                let argument = try BinaryDecoder().decode(Function.Input.self, from: input)
                outcome = .succeeded(output: try BinaryEncoder().encode(try await function(argument)))
            } catch {
                outcome = .threw(ErrorReport(error))
            }
            try await tasks.send(.result(id: id, outcome: outcome))
        }
    }
}
