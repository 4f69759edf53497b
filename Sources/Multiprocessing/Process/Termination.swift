import Glibc

/// How a child process ended.
///
/// Python's `exitcode` folds both cases into one integer (negative for a signal); here they
/// are two cases, and ``exitCode`` gives the Python number when you want it.
public enum Termination: Sendable, Hashable, CustomStringConvertible {
    /// The process called `exit` with this status (0 is success).
    case exited(Int32)
    /// The process was ended by a signal: killed, or crashed (`SIGSEGV`, `SIGILL` from a
    /// Swift trap such as `fatalError`, `SIGABRT`).
    case signaled(ProcessSignal)

    init(_ exit: ProcessDescriptor.Exit) {
        switch exit {
        case .exited(let status): self = .exited(status)
        case .signaled(let signal): self = .signaled(ProcessSignal(rawValue: signal))
        }
    }

    /// Whether the process exited with status 0.
    public var isSuccess: Bool { self == .exited(0) }

    /// Python's `exitcode`: the exit status, or minus the signal number.
    public var exitCode: Int32 {
        switch self {
        case .exited(let status): status
        case .signaled(let signal): -signal.rawValue
        }
    }

    /// `exited with status 1`, `was killed by SIGKILL (killed)`.
    public var description: String {
        switch self {
        case .exited(let status): "exited with status \(status)"
        case .signaled(let signal): "was killed by \(signal)"
        }
    }
}

/// A Unix signal number with a readable name.
///
/// Named `ProcessSignal` rather than `Signal` so that it cannot clash with the `Signal` of
/// other process libraries (swift-subprocess) in a file that imports both.
public struct ProcessSignal: RawRepresentable, Sendable, Hashable, Codable, CustomStringConvertible {
    /// The signal number.
    public let rawValue: Int32
    /// The signal with this number.
    public init(rawValue: Int32) { self.rawValue = rawValue }

    /// Asks the process to end (`terminate()`); it may handle or ignore it.
    public static let terminate = ProcessSignal(rawValue: SIGTERM)
    /// Ends the process at once (`kill()`); it cannot be handled.
    public static let kill = ProcessSignal(rawValue: SIGKILL)
    /// Interrupt, as from Ctrl-C.
    public static let interrupt = ProcessSignal(rawValue: SIGINT)
    /// Segmentation fault: an invalid memory access.
    public static let segmentationFault = ProcessSignal(rawValue: SIGSEGV)
    /// Illegal instruction: how a Swift runtime trap (`fatalError`, overflow) ends on x86_64.
    public static let illegalInstruction = ProcessSignal(rawValue: SIGILL)
    /// Trace trap: how a Swift runtime trap ends on arm64.
    public static let trap = ProcessSignal(rawValue: SIGTRAP)
    /// Abort, from `abort()`.
    public static let abort = ProcessSignal(rawValue: SIGABRT)

    /// The conventional name, such as `SIGKILL`, or `signal 42` for one without a name.
    public var name: String {
        let names: [Int32: String] = [
            SIGHUP: "SIGHUP", SIGINT: "SIGINT", SIGQUIT: "SIGQUIT", SIGILL: "SIGILL", SIGTRAP: "SIGTRAP",
            SIGABRT: "SIGABRT", SIGBUS: "SIGBUS", SIGFPE: "SIGFPE", SIGKILL: "SIGKILL", SIGUSR1: "SIGUSR1",
            SIGSEGV: "SIGSEGV", SIGUSR2: "SIGUSR2", SIGPIPE: "SIGPIPE", SIGALRM: "SIGALRM", SIGTERM: "SIGTERM",
            SIGCHLD: "SIGCHLD", SIGCONT: "SIGCONT", SIGSTOP: "SIGSTOP", SIGTSTP: "SIGTSTP", SIGXCPU: "SIGXCPU",
            SIGXFSZ: "SIGXFSZ", SIGSYS: "SIGSYS",
        ]
        return names[rawValue] ?? "signal \(rawValue)"
    }

    /// The name and what it usually means, e.g. `SIGSEGV (segmentation fault)`.
    public var description: String {
        guard let meaning = String(validatingCString: strsignal(rawValue)), !name.hasPrefix("signal ") else {
            return name
        }
        return "\(name) (\(meaning.lowercased()))"
    }
}
