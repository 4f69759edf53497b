/// What travels between the pool and one of its workers, in both directions.
///
/// A task names its function by type (the worker resolves each name once) and carries the
/// function's encoded value and a chunk of inputs, encoded together as one array. The worker
/// answers the whole chunk in one message (the outputs, again as one array), and keeps the offset of the input it is running in a slot shared with the
/// pool, so the pool still knows which input a worker that dies was running. A task with a
/// timeout is answered input by input instead (each answer restarts the item's clock).
enum PoolMessage: Codable, Sendable {
    /// Call the function (`typeName`, `function`) with each of the `count` inputs (an
    /// encoded `[Input]`), in order; answer each input at once when `eachInput`, else the
    /// whole chunk in one message.
    case task(id: UInt64, typeName: String, function: [UInt8], inputs: [UInt8], count: Int, eachInput: Bool)
    /// The outcome of the input at `offset` in task `id`.
    case result(id: UInt64, offset: Int, outcome: ChildOutcome)
    /// The outcomes of every input of task `id`, in order (when some output could not be
    /// encoded with the others).
    case results(id: UInt64, outcomes: [ChildOutcome])
    /// The answer to task `id`: the outputs of the inputs that did not fail (an encoded
    /// `[Output]`, in order), and the failures.
    case outputs(id: UInt64, outputs: [UInt8], failures: [PoolItemFailure])
}

/// An input of a task that failed: its offset in the task, and how.
struct PoolItemFailure: Codable, Sendable {
    var offset: Int
    var outcome: ChildOutcome
}

/// A ``ProcessTarget`` encoded on its own, to be run in a worker before it serves (a pool's
/// initializer).
struct EncodedTarget: Codable, Sendable {
    var typeName: String
    var readableTypeName: String
    var payload: [UInt8]

    init<Target: ProcessTarget>(_ target: Target) throws {
        guard let name = _mangledTypeName(Target.self) else {
            throw ProcessPoolError(reason: .couldNotRun("\(String(reflecting: Target.self)) has no mangled name"))
        }
        typeName = name
        readableTypeName = String(reflecting: Target.self)
        payload = try BinaryEncoder().encode(target)
    }

    /// Finds the type here and runs the value.
    func run() async throws {
        guard let type = _typeByName(typeName) as? any ProcessTarget.Type else {
            throw ProcessPoolError(reason: .couldNotRun("the initializer \(readableTypeName) is not in this program"))
        }
        try await Self.run(type, payload)
    }

    private static func run<Target: ProcessTarget>(_ type: Target.Type, _ payload: [UInt8]) async throws {
        try await BinaryDecoder().decode(Target.self, from: payload).run()
    }
}
