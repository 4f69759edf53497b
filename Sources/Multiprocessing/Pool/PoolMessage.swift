/// What travels between the pool and one of its workers, in both directions.
///
/// A task names its function by type (the worker resolves each name once) and carries the
/// function's encoded value and a chunk of inputs, encoded together as one array. The worker
/// answers the whole chunk in one message (the outputs, again as one array), and keeps the offset of the input it is running in a slot shared with the
/// pool, so the pool still knows which input a worker that dies was running. A task with a
/// timeout is answered input by input instead (each answer restarts the item's clock).
/// Small chunks go several in one ``batch(_:)``, answered by one batch.
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
    /// Task `id` was not run: it had been sent ahead and an idle driver took it back first
    /// (see ``WorkerWords``).
    case skipped(id: UInt64)
    /// Several messages in one: tasks sent ahead together (one write for many small
    /// chunks), or the answers to them (one write back). Never nested.
    case batch([PoolMessage])
}

extension PoolMessage {
    // Coded by hand, as a tag then the fields in one unkeyed container: the synthesized
    // coding of an enum with payloads goes through nested keyed containers, whose generic
    // metadata lookups cost more than a small task itself (one per item with chunk size 1).
    fileprivate enum Tag: UInt8 {
        case task, result, results, outputs, batch, skipped
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.unkeyedContainer()
        switch self {
        case .task(let id, let typeName, let function, let inputs, let count, let eachInput):
            try container.encode(Tag.task.rawValue)
            try container.encode(id)
            try container.encode(typeName)
            try container.encode(function)
            try container.encode(inputs)
            try container.encode(count)
            try container.encode(eachInput)
        case .result(let id, let offset, let outcome):
            try container.encode(Tag.result.rawValue)
            try container.encode(id)
            try container.encode(offset)
            try container.encode(outcome)
        case .results(let id, let outcomes):
            try container.encode(Tag.results.rawValue)
            try container.encode(id)
            try container.encode(outcomes)
        case .outputs(let id, let outputs, let failures):
            try container.encode(Tag.outputs.rawValue)
            try container.encode(id)
            try container.encode(outputs)
            try container.encode(failures)
        case .batch(let messages):
            try container.encode(Tag.batch.rawValue)
            try container.encode(messages)
        case .skipped(let id):
            try container.encode(Tag.skipped.rawValue)
            try container.encode(id)
        }
    }

    init(from decoder: any Decoder) throws {
        var container = try decoder.unkeyedContainer()
        guard let tag = Tag(rawValue: try container.decode(UInt8.self)) else {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "not a pool message")
        }
        switch tag {
        case .task:
            self = .task(
                id: try container.decode(UInt64.self), typeName: try container.decode(String.self),
                function: try container.decode([UInt8].self), inputs: try container.decode([UInt8].self),
                count: try container.decode(Int.self), eachInput: try container.decode(Bool.self))
        case .result:
            self = .result(
                id: try container.decode(UInt64.self), offset: try container.decode(Int.self),
                outcome: try container.decode(ChildOutcome.self))
        case .results:
            self = .results(id: try container.decode(UInt64.self), outcomes: try container.decode([ChildOutcome].self))
        case .outputs:
            self = .outputs(
                id: try container.decode(UInt64.self), outputs: try container.decode([UInt8].self),
                failures: try container.decode([PoolItemFailure].self))
        case .batch:
            self = .batch(try container.decode([PoolMessage].self))
        case .skipped:
            self = .skipped(id: try container.decode(UInt64.self))
        }
    }
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

// On the wire (the library's binary codec, which every connection uses) a pool message
// skips `Codable` altogether: the codec hands it to the methods below, which write the tag
// and the fields with the codec's own primitives. A message per small task went through
// the generic coding of each field (a metadata lookup per `[UInt8]`, per container), which
// cost more than the task. The `Codable` conformance above stays for other encoders.
extension PoolMessage: _BinaryEncodingSpecial, _BinaryDecodingSpecial {
    func _encodeBinary(into encoder: _BinaryEncoderImpl) throws {
        switch self {
        case .task(let id, let typeName, let function, let inputs, let count, let eachInput):
            encoder.writeByte(Tag.task.rawValue)
            encoder.writeFixed(id)
            encoder.writeString(typeName)
            try function._encodeBinary(into: encoder)
            try inputs._encodeBinary(into: encoder)
            encoder.writeFixed(Int64(count))
            encoder.writeByte(eachInput ? 1 : 0)
        case .result(let id, let offset, let outcome):
            encoder.writeByte(Tag.result.rawValue)
            encoder.writeFixed(id)
            encoder.writeFixed(Int64(offset))
            try encoder.encodeValue(outcome, at: encoder.currentSpot, appending: nil)
        case .results(let id, let outcomes):
            encoder.writeByte(Tag.results.rawValue)
            encoder.writeFixed(id)
            try encoder.encodeValue(outcomes, at: encoder.currentSpot, appending: nil)
        case .outputs(let id, let outputs, let failures):
            encoder.writeByte(Tag.outputs.rawValue)
            encoder.writeFixed(id)
            try outputs._encodeBinary(into: encoder)
            // Nearly always none: a count, and the failures only when there are some.
            encoder.writeFixed(UInt32(failures.count))
            if !failures.isEmpty { try encoder.encodeValue(failures, at: encoder.currentSpot, appending: nil) }
        case .batch(let messages):
            encoder.writeByte(Tag.batch.rawValue)
            encoder.writeFixed(UInt32(messages.count))
            for message in messages { try message._encodeBinary(into: encoder) }
        case .skipped(let id):
            encoder.writeByte(Tag.skipped.rawValue)
            encoder.writeFixed(id)
        }
    }

    static func _decodeBinary(from decoder: _BinaryDecoderImpl) throws -> PoolMessage {
        try decode(from: decoder, inBatch: false)
    }

    /// One message; in a batch, a batch tag is refused before anything under it is read
    /// (batches nested in crafted bytes would otherwise recurse as deep as they go).
    private static func decode(from decoder: _BinaryDecoderImpl, inBatch: Bool) throws -> PoolMessage {
        let path = "PoolMessage"
        let tag = try decoder.readFixed(UInt8.self, path)
        if inBatch && tag == Tag.batch.rawValue {
            throw WireError.invalidData("a pool batch inside a batch", codingPath: path)
        }
        switch Tag(rawValue: tag) {
        case .task:
            let id = try decoder.readFixed(UInt64.self, path)
            let typeName = try decoder.readString(path)
            let function = try [UInt8]._decodeBinary(from: decoder)
            let inputs = try [UInt8]._decodeBinary(from: decoder)
            let count = Int(try decoder.readFixed(Int64.self, path))
            let eachInput = try decoder.readBool(path)
            return .task(
                id: id, typeName: typeName, function: function, inputs: inputs, count: count, eachInput: eachInput)
        case .result:
            let id = try decoder.readFixed(UInt64.self, path)
            let offset = Int(try decoder.readFixed(Int64.self, path))
            let outcome = try decoder.decodeValue(ChildOutcome.self, at: decoder.currentSpot, appending: nil)
            return .result(id: id, offset: offset, outcome: outcome)
        case .results:
            let id = try decoder.readFixed(UInt64.self, path)
            let outcomes = try decoder.decodeValue([ChildOutcome].self, at: decoder.currentSpot, appending: nil)
            return .results(id: id, outcomes: outcomes)
        case .outputs:
            let id = try decoder.readFixed(UInt64.self, path)
            let outputs = try [UInt8]._decodeBinary(from: decoder)
            let failureCount = try decoder.readFixed(UInt32.self, path)
            let failures =
                failureCount == 0
                ? [] : try decoder.decodeValue([PoolItemFailure].self, at: decoder.currentSpot, appending: nil)
            return .outputs(id: id, outputs: outputs, failures: failures)
        case .batch:
            let count = try decoder.readFixed(UInt32.self, path)
            var messages: [PoolMessage] = []
            // Not reserved by the count read: a corrupt count must fail on the bytes, not
            // allocate.
            for _ in 0..<count { messages.append(try decode(from: decoder, inBatch: true)) }
            return .batch(messages)
        case .skipped:
            return .skipped(id: try decoder.readFixed(UInt64.self, path))
        case nil:
            throw WireError.invalidData("not a pool message (tag \(tag))", codingPath: path)
        }
    }
}
