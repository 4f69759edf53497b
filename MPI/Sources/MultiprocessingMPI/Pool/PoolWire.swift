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
}

/// What a worker rank's ``PoolService`` sends rank 0.
enum PoolReply: Codable, Sendable {
    /// The service's local pool is up: the rank takes requests.
    case ready
    /// The outcomes of request `id`, in input order: an encoded `[PoolItemResult<Output>]`.
    case done(id: UInt64, outcomes: [UInt8])
    /// Request `id` could not run at all: the function's type is not in this program, or the
    /// function or its inputs did not decode. Says why.
    case refused(id: UInt64, reason: String)
}

/// One item's outcome on a worker rank.
enum PoolItemResult<Output: Codable & Sendable>: Codable, Sendable {
    case output(Output)
    case failure(kind: MPIPoolError.Kind, detail: String)
}
