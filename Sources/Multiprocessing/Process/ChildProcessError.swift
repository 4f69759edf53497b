import Glibc

/// An error thrown by Swift code in another process, as it arrived here.
///
/// It keeps the error's type name and description; when the error type is `Codable` and
/// exists in this program too, ``underlying`` is the error value itself, so
/// `catch let error as ChildProcessError where error.remoteError?.underlying is MyError`
/// works across the process boundary.
public struct RemoteError: Error, Sendable, CustomStringConvertible {
    /// The error's type, as `String(reflecting:)` wrote it in the child (`MyApp.ParseError`).
    public let typeName: String
    /// The error's description in the child (`String(describing:)`).
    public let message: String
    /// The error itself, rebuilt here, when its type is Codable and known to this program.
    public let underlying: (any Error)?

    init(_ report: ErrorReport) {
        typeName = report.typeName
        message = report.description
        underlying = report.rebuild()
    }

    /// `TypeName: message`, as Python prints an exception.
    public var description: String { "\(typeName): \(message)" }
}

/// Why a child process did not succeed: it threw, it crashed or was killed, or it never
/// got to run its work. Thrown by `ChildProcess.join()`.
///
/// Every case names the process and its pid; `description` reads as a sentence, e.g.
/// `process "worker-2" (pid 41213) threw MyApp.JobError: disk full`.
public struct ChildProcessError: Error, Sendable, CustomStringConvertible {
    /// What happened.
    public enum Reason: Sendable {
        /// The target threw this error.
        case threw(RemoteError)
        /// The process ended without reporting a result: a crash, a signal, or `exit` called
        /// by the work itself. `.signaled(.kill)` when it was killed; `.exited(0)` when a
        /// function's process exited with success before its output came (no output, so
        /// `ChildProcess.run` cannot succeed).
        case terminated(Termination)
        /// The child could not run the work: its type is not in the child's binary, or the
        /// work could not be decoded there. Says which type.
        case couldNotStart(String)
        /// The child sent something this process refused to read as its report: a
        /// function's output larger than the limit (256 MiB), or bytes that are not a
        /// report at all (a child that wrote on the library's channel). Says what.
        case refusedReport(String)
    }

    /// The process's ``ChildProcess/name``.
    public let processName: String
    /// The process's id.
    public let pid: pid_t
    /// What happened.
    public let reason: Reason
    /// How the process ended.
    public let termination: Termination

    /// The error the child threw, if that is why it failed.
    public var remoteError: RemoteError? {
        if case .threw(let error) = reason { return error }
        return nil
    }

    /// A sentence: which process, and what happened to it.
    public var description: String {
        let who = "process \"\(processName)\" (pid \(pid))"
        switch reason {
        case .threw(let error): return "\(who) threw \(error)"
        case .terminated(let termination) where termination.isSuccess:
            // Only a function's run throws this: a target that exits 0 succeeded, as in Python.
            return "\(who) exited with status 0 before reporting its output (the work called exit?)"
        case .terminated(let termination): return "\(who) \(termination)"
        case .couldNotStart(let why): return "\(who) could not start: \(why)"
        case .refusedReport(let why): return "\(who) \(termination); its report was refused: \(why)"
        }
    }
}
