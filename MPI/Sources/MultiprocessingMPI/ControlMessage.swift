/// What rank 0 and a worker rank say to each other on ``ReservedTag/control``.
enum ControlMessage: Codable, Sendable {
    /// Rank 0 to a worker rank: run the job of type `typeName` (mangled), decoded from
    /// `payload`, with a channel on `tag`.
    case start(tag: Int32, typeName: String, readableTypeName: String, payload: [UInt8])
    /// Rank 0 to a worker rank: finish (MPI_Finalize) and exit.
    case stop
    /// A worker rank to rank 0: the job on `tag` ended after sending `messagesSent`
    /// messages on its channel, with `failure` if it did not end well.
    case jobEnded(rank: Int, tag: Int32, messagesSent: Int, failure: JobFailure?)
}

/// How a job on a worker rank failed.
enum JobFailure: Codable, Sendable {
    /// Its type is not in the worker's program.
    case unknownType(String)
    /// It could not be decoded, or it threw: the error's description.
    case failed(String)

    func error(rank: Int) -> MPIError {
        switch self {
        case .unknownType(let name): .unknownJobType(rank: rank, typeName: name)
        case .failed(let description): .jobFailed(rank: rank, description: description)
        }
    }
}
