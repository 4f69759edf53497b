/// How a child process comes to life (Python's start methods).
public enum StartMethod: String, Sendable, Hashable, CaseIterable, Codable {
    /// A fresh copy of this program's binary, started with `posix_spawn`: safe in any
    /// program, a few milliseconds per child. The default.
    case spawn
    /// A fork of a small server process that was itself spawned fresh and never starts a
    /// thread, so forking it is safe: well under a millisecond per child. The server is
    /// started on first use and ends with this process.
    case forkserver
}

/// A choice of start method and limits shared by the processes made from it (Python's
/// `get_context`).
///
/// ```swift
/// let fast = ProcessContext(startMethod: .forkserver)
/// let child = fast.process(MyTarget())
/// ```
public struct ProcessContext: Sendable, Hashable {
    /// How processes made from this context start.
    public var startMethod: StartMethod

    /// A context whose processes start with `startMethod`.
    public init(startMethod: StartMethod = .spawn) {
        self.startMethod = startMethod
    }

    /// Spawned processes (the default).
    public static let spawn = ProcessContext(startMethod: .spawn)
    /// Processes forked from the fork server.
    public static let forkserver = ProcessContext(startMethod: .forkserver)

    /// A process that will run `target`, not started yet.
    public func process<Target: ProcessTarget>(_ target: Target, name: String? = nil, isDaemon: Bool = false)
        -> ChildProcess
    {
        ChildProcess(target, name: name, isDaemon: isDaemon, startMethod: startMethod)
    }
}
