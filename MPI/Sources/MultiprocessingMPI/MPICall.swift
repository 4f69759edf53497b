import CMPI

/// Every MPI call passes through here: a return code other than `MPI_SUCCESS` becomes a
/// thrown ``MPIError/call(function:code:explanation:)`` with MPI's own explanation. The
/// world runs with `MPI_ERRORS_RETURN`, so codes come back instead of aborting the job.
@inline(__always)
func mpiCheck(_ code: Int32, _ function: StaticString) throws(MPIError) {
    if code != cmpi_success() { throw mpiError(code, function) }
}

/// The error for `code`, explained by `MPI_Error_string`.
func mpiError(_ code: Int32, _ function: StaticString) -> MPIError {
    var buffer = [CChar](repeating: 0, count: Int(cmpi_max_error_string()) + 1)
    var length: Int32 = 0
    let explanation: String
    if MPI_Error_string(code, &buffer, &length) == cmpi_success(), length > 0 {
        explanation = buffer.withUnsafeBufferPointer { pointer in
            String(decoding: UnsafeRawBufferPointer(start: pointer.baseAddress, count: Int(length)), as: UTF8.self)
        }
    } else {
        explanation = "unknown MPI error"
    }
    return .call(function: "\(function)", code: code, explanation: explanation)
}
