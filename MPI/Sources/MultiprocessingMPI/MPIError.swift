/// Why an MPI operation failed.
///
/// Every failure of the MPI library itself (the transport runs with `MPI_ERRORS_RETURN`, so
/// none aborts the job) and every failure of a rank comes back as one of these, thrown from
/// the call that waited for it. The ``description`` reads as a sentence and names the rank.
public enum MPIError: Error, Sendable, CustomStringConvertible {
    /// The program was not launched by an MPI launcher (`mpirun`, `srun`): no rank was found
    /// in the environment (`OMPI_COMM_WORLD_RANK`, `PMIX_RANK`, `PMI_RANK`).
    case notStartedByMPIRun

    /// An MPI call returned an error: the function, its error code and MPI's own explanation
    /// (`MPI_Error_string`).
    case call(function: String, code: Int32, explanation: String)

    /// Nothing came from `rank` (no message, no heartbeat) for `silentFor`, longer than the
    /// configured bound: the rank is considered dead, and every wait on it fails with this.
    case rankLost(rank: Int, silentFor: Duration)

    /// The value cannot leave this machine: it holds a handle (a connection end, shared
    /// memory, a queue, a lock...) that only means something to processes of one machine.
    case notSendableToAnotherRank(type: String, codingPath: String, reason: String)

    /// A job was sent to `rank` whose type is not in the program there.
    case unknownJobType(rank: Int, typeName: String)

    /// The job on `rank` threw, or could not be decoded; `description` is its error's.
    case jobFailed(rank: Int, description: String)

    /// The job on `rank` ended: the channel will carry no more messages from it.
    case jobEnded(rank: Int)

    /// A rank number outside the world (`0..<worldSize`), or one that cannot take a job.
    case invalidRank(Int, worldSize: Int)

    /// A tag that the transport reserves for itself or that MPI does not accept.
    case invalidTag(Int, reason: String)

    /// A message larger than MPI's `int` count of bytes (2 GiB - 1).
    case messageTooLarge(byteCount: Int)

    /// A message of `byteCount` bytes cannot be an array of elements of `elementSize` bytes.
    case sizeMismatch(byteCount: Int, elementType: String, elementSize: Int)

    /// The operation is only possible on rank 0 (starting jobs) or only on a worker rank.
    case wrongRank(operation: String, rank: Int)

    /// The transport has been shut down (`MPI_Finalize` was called, or is under way).
    case shutDown

    /// A one-sentence explanation suitable for logs and test failures.
    public var description: String {
        switch self {
        case .notStartedByMPIRun:
            return "MPI is not available: the program was not started by mpirun (or srun); no rank "
                + "(OMPI_COMM_WORLD_RANK, PMIX_RANK, PMI_RANK) is in the environment"
        case .call(let function, let code, let explanation):
            return "\(function) failed with MPI error \(code): \(explanation)"
        case .rankLost(let rank, let silentFor):
            return "rank \(rank) is lost: nothing came from it for \(silentFor)"
        case .notSendableToAnotherRank(let type, let codingPath, let reason):
            let location = codingPath.isEmpty ? "" : " at \(codingPath)"
            return "\(type) cannot be sent to another rank: it holds a handle that only makes sense on one "
                + "machine\(location) (\(reason))"
        case .unknownJobType(let rank, let typeName):
            return "rank \(rank) refused the job: the type \(typeName) is not in its program"
        case .jobFailed(let rank, let description):
            return "the job on rank \(rank) failed: \(description)"
        case .jobEnded(let rank):
            return "the job on rank \(rank) has ended: no more messages will come from it"
        case .invalidRank(let rank, let worldSize):
            return "rank \(rank) is not a worker rank of this world of \(worldSize) ranks"
        case .invalidTag(let tag, let reason):
            return "tag \(tag) cannot be used: \(reason)"
        case .messageTooLarge(let byteCount):
            return "a message of \(byteCount) bytes is larger than MPI's limit of \(Int32.max) bytes"
        case .sizeMismatch(let byteCount, let elementType, let elementSize):
            return "a message of \(byteCount) bytes is not an array of \(elementType) (\(elementSize) bytes each)"
        case .wrongRank(let operation, let rank):
            return "\(operation) is not possible on rank \(rank)"
        case .shutDown:
            return "the MPI transport has been shut down"
        }
    }
}
