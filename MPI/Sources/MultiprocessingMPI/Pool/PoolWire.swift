import Multiprocessing

/// What rank 0 asks of a worker rank's ``PoolService``.
enum PoolRequest: Codable, Sendable {
    /// Runs the function (its mangled type name and encoded value) on the inputs (an encoded
    /// `[Input]`) in the rank's local pool with `chunkSize` (nil: the local pool's own),
    /// each within `timeout` if one is given; answered by ``PoolReply/done(id:outcomes:)``.
    case run(id: UInt64, typeName: String, function: [UInt8], inputs: [UInt8], chunkSize: Int?, timeout: Duration?)
    /// Rank 0 no longer waits for request `id`: its items still running are ended (their
    /// local workers killed).
    case cancel(id: UInt64)
    /// The pool is closing: the service ends once its requests are answered.
    case stop
    /// The pool is terminated: the service ends its requests at once (their local workers
    /// killed) and ends.
    case terminate
}

/// What a worker rank's ``PoolService`` sends rank 0.
enum PoolReply: Codable, Sendable {
    /// The service's local pool is up: the rank takes requests.
    case ready
    /// The outcomes of request `id`: an encoded ``PoolItemResults``.
    case done(id: UInt64, outcomes: [UInt8])
    /// Request `id` could not run at all: the function's type is not in this program, or the
    /// function or its inputs did not decode. Says why.
    case refused(id: UInt64, reason: String)
    /// Log records of the rank (an encoded ``RankLogBatch``), for rank 0's logging system.
    case logs([UInt8])
}

/// The outcomes of a request's items on a worker rank: the outputs of the items that
/// succeeded, in input order, and the failures by offset (nearly always none).
///
/// The outputs travel as one array, not an enum per item: decoding an enum per item went
/// through the generic decoder's metadata lookups each time, 2.6-5.5 µs an item on rank 0,
/// where an array of a trivial type decodes at memory speed (MPI/SCALING.md, "Where rank 0's
/// time goes").
struct PoolItemResults<Output: Codable & Sendable>: Codable, Sendable {
    var outputs: [Output]
    var failures: [PoolItemFailure]
}

/// An item that failed on a worker rank: its offset in the request, and how.
struct PoolItemFailure: Codable, Sendable {
    var offset: Int
    var kind: MPIPoolError.Kind
    var detail: String
}

/// A `ProcessTarget` on its way to the worker ranks (an ``MPIPool``'s initializer): its
/// mangled type name and its value on the library's binary wire. A rank finds the type by
/// its name (every rank runs the same program).
struct EncodedRankTarget: Codable, Sendable {
    var typeName: String
    var bytes: [UInt8]

    /// Encodes `target`; refuses one holding a one-machine handle (``RankWire``).
    init(_ target: any ProcessTarget) throws {
        guard let typeName = _mangledTypeName(type(of: target)) else {
            throw MPIPoolError(reason: .couldNotRun("\(type(of: target)) has no mangled name"))
        }
        self.typeName = typeName
        bytes = try RankWire.encode(target)
    }

    /// The target, on a worker rank.
    func decode() throws -> any ProcessTarget {
        guard let type = _typeByName(typeName) as? any ProcessTarget.Type else {
            throw MPIPoolError(
                reason: .couldNotRun("no ProcessTarget type with the mangled name \(typeName) in this program"))
        }
        return try Self.decode(type, from: bytes)
    }

    private static func decode<Target: ProcessTarget>(_ type: Target.Type, from bytes: [UInt8]) throws
        -> any ProcessTarget
    {
        try RankWire.decode(Target.self, from: bytes)
    }
}
