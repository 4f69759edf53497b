import Glibc
import Synchronization
import SystemPackage

/// A child process that runs a ``ProcessTarget`` (Python's `multiprocessing.Process`).
///
/// ```swift
/// let child = ChildProcess(Worker(id: 1), name: "worker-1")
/// try child.start()
/// try child.join()   // throws ChildProcessError if the worker threw, crashed or was killed
/// ```
///
/// - The child runs the same binary and is caught before `main`; the target travels as a
///   Codable value, with any connection ends in its properties.
/// - Every child ends when this process ends, even by SIGKILL. When this process exits
///   normally, daemon children are terminated and the others are waited for, as in Python.
/// - Timed waits (`join(timeout:)`) return `false` when the time runs out; they throw only
///   when the child failed.
public final class ChildProcess: Sendable {
    /// The process's name, for messages and errors (Python's `name`).
    public let name: String
    /// Whether the process is ended (SIGTERM) rather than waited for when this process
    /// exits (Python's `daemon`).
    public let isDaemon: Bool
    /// How the process starts.
    public let startMethod: StartMethod

    /// Builds the start message and collects the handles inside the work (done at `start`).
    private let prepare: @Sendable () throws -> (message: StartMessage, outbox: DescriptorOutbox)
    /// Whether `start` checks, in this process, that the child will find the work's type.
    private let checksTypeName: Bool
    private let state = Mutex(State.notStarted)
    private static let counter = Atomic<Int>(0)

    private enum State {
        case notStarted
        case starting
        case running(Running)
        case finished(Running, Finished)
    }

    struct Running: Sendable {
        let pid: pid_t
        let process: ProcessDescriptor
        let channel: MessageStream
    }

    struct Finished: Sendable {
        let termination: Termination
        let outcome: ChildOutcome?
    }

    /// A process that will run `target` once ``start()`` is called.
    /// - Parameters:
    ///   - name: defaults to `Process-N`, N counting the processes made by this program.
    ///   - isDaemon: terminate the child at exit instead of waiting for it.
    ///   - startMethod: ``StartMethod/spawn`` (default) or ``StartMethod/forkserver``.
    public convenience init<Target: ProcessTarget>(
        _ target: Target, name: String? = nil, isDaemon: Bool = false, startMethod: StartMethod = .spawn
    ) {
        self.init(name: name, isDaemon: isDaemon, startMethod: startMethod) { processName in
            try Self.startMessage(running: target, named: processName) { _ in .target }
        }
    }

    convenience init<Function: ProcessFunction>(
        _ function: Function, input: Function.Input, name: String?, startMethod: StartMethod
    ) {
        self.init(name: name, isDaemon: false, startMethod: startMethod) { processName in
            try Self.startMessage(running: function, named: processName) { encoder in
                .function(input: try encoder.encode(input))
            }
        }
    }

    /// An internal door for tests: a child asked to run a type name that does not exist.
    convenience init(unresolvableTypeName: String) {
        self.init(name: nil, isDaemon: false, startMethod: .spawn, checksTypeName: false) { processName in
            let message = StartMessage(
                processName: processName, typeName: unresolvableTypeName, readableTypeName: unresolvableTypeName,
                payload: [], work: .target)
            return (message, DescriptorOutbox())
        }
    }

    private init(
        name: String?, isDaemon: Bool, startMethod: StartMethod, checksTypeName: Bool = true,
        prepare: @escaping @Sendable (_ processName: String) throws -> (StartMessage, DescriptorOutbox)
    ) {
        let processName = name ?? "Process-\(Self.counter.add(1, ordering: .relaxed).newValue)"
        self.name = processName
        self.isDaemon = isDaemon
        self.startMethod = startMethod
        self.checksTypeName = checksTypeName
        self.prepare = { try prepare(processName) }
    }

    /// The start message for `work`, and the handles found inside it (and inside a
    /// function's input, which `kind` encodes with the same encoder).
    private static func startMessage<Work: Encodable>(
        running work: Work, named processName: String, kind: (BinaryEncoder) throws -> StartMessage.Work
    ) throws -> (StartMessage, DescriptorOutbox) {
        let outbox = DescriptorOutbox()
        let encoder = BinaryEncoder(userInfo: [.descriptorOutbox: outbox])
        let payload = try encoder.encode(work)
        let message = StartMessage(
            processName: processName, typeName: _mangledTypeName(Work.self) ?? "",
            readableTypeName: String(reflecting: Work.self), payload: payload, work: try kind(encoder))
        return (message, outbox)
    }

    deinit {
        switch state.withLock({ $0 }) {
        case .notStarted, .starting: break
        case .running(let running):
            running.channel.close()
            // Dropped while running: reap it when it exits, so no zombie is left behind.
            ChildRegistry.shared.adopt(running.pid)
        case .finished(let running, _):
            running.process.close()
        }
    }

    // MARK: Starting

    /// Starts the child (Python's `start()`). Handles inside the target (connection ends)
    /// move to the child: this process's copies are closed once it has them.
    ///
    /// - Throws: ``WireError`` if the target cannot be encoded (nothing is started), or a
    ///   ``ConnectionError/system(_:during:)`` if the system refuses a new process.
    /// - Precondition: the process was not started before.
    public func start() throws {
        let claimed = state.withLock { state -> Bool in
            guard case .notStarted = state else { return false }
            state = .starting
            return true
        }
        precondition(claimed, "process \"\(name)\" was started twice; a ChildProcess starts once")
        do {
            let running = try launch()
            state.withLock { $0 = .running(running) }
        } catch {
            state.withLock { $0 = .notStarted }
            throw error
        }
    }

    /// Starts the child and hands it its work. Everything that can fail before the child
    /// exists (encoding, the type check) fails before anything is started.
    private func launch() throws -> Running {
        let (message, outbox) = try prepare()
        if checksTypeName { try Self.checkFindable(message) }
        var frame = try MessageStream.encodeFrame(message).frame
        let (parentEnd, childEnd) = try makeStreamPair(maximumMessageSize: Int(UInt32.max))
        defer { childEnd.close() }
        let pid: pid_t
        do {
            pid = try Launcher.launch(startMethod, socket: childEnd.rawDescriptor, typeName: message.typeName)
        } catch let error as Errno {
            parentEnd.close()
            throw ConnectionError.system(error, during: "starting process \"\(name)\"")
        } catch {
            parentEnd.close()
            throw error
        }
        let process: ProcessDescriptor
        do throws(Errno) {
            process = try ProcessDescriptor(child: pid)
        } catch {
            // Without a pidfd the child cannot be watched: end it and reap it by pid (it is
            // this process's own child, so the pid cannot have been reused).
            ProcessDescriptor.killAndReap(child: pid)
            parentEnd.close()
            throw ConnectionError.system(error, during: "watching process \"\(name)\" (pidfd_open)")
        }
        ChildRegistry.shared.register(pid: pid, process: process, isDaemon: isDaemon, object: self)
        do {
            try parentEnd.send(frame: &frame, descriptors: outbox.descriptors)
        } catch ConnectionError.peerGone {
            // The child died before reading its work; join() reports how it ended.
        } catch {
            // The child never gets its work: closing the channel makes it exit (status 1).
            parentEnd.close()
            throw error
        }
        outbox.closeMoved()
        return Running(pid: pid, process: process, channel: parentEnd)
    }

    /// Fails early, in this process, for a type the child could never find by name: a
    /// type declared inside a function has a mangled name that points into this process's
    /// memory ("unknown context at $…"), which means nothing in another process.
    private static func checkFindable(_ message: StartMessage) throws {
        if message.typeName.isEmpty || message.typeName.contains("$") || _typeByName(message.typeName) == nil {
            throw WireError.unencodable(
                "\(message.readableTypeName) cannot be found by name in another process: declare it at file "
                    + "scope or inside a named type, not inside a function", codingPath: "")
        }
    }

    // MARK: Facts

    /// The process id, once started (Python's `pid`).
    public var pid: pid_t? {
        switch state.withLock({ $0 }) {
        case .notStarted, .starting: nil
        case .running(let running), .finished(let running, _): running.pid
        }
    }

    /// Whether the process has started and not yet ended (Python's `is_alive()`).
    public var isAlive: Bool {
        guard case .running(let running) = state.withLock({ $0 }) else { return false }
        return (try? finishIfExited(running, wait: false)) == nil
    }

    /// How the process ended, or `nil` while it runs or before it starts.
    public var termination: Termination? {
        if case .running(let running) = state.withLock({ $0 }) { _ = try? finishIfExited(running, wait: false) }
        if case .finished(_, let finished) = state.withLock({ $0 }) { return finished.termination }
        return nil
    }

    /// Python's `exitcode`: the exit status, minus the signal number for a signal, or `nil`
    /// while the process runs.
    public var exitCode: Int32? { termination?.exitCode }

    /// Why the process failed, once it has ended; `nil` while it runs or when it succeeded.
    public var error: ChildProcessError? {
        guard termination != nil, case .finished(let running, let finished) = state.withLock({ $0 }) else {
            return nil
        }
        return failure(running, finished)
    }

    // MARK: Signals

    /// Sends SIGTERM (Python's `terminate()`): the child may clean up, or ignore it.
    public func terminate() { send(signal: .terminate) }
    /// Sends SIGKILL (Python's `kill()`): the child ends at once.
    public func kill() { send(signal: .kill) }

    /// Sends `signal` to the running child; does nothing once it has ended.
    public func send(signal: ProcessSignal) {
        guard case .running(let running) = state.withLock({ $0 }) else { return }
        try? running.process.send(signal: signal.rawValue)
    }

    // MARK: Joining

    /// Waits for the process to end (Python's `join()`).
    /// - Throws: ``ChildProcessError`` when the target threw, the process crashed or was
    ///   killed, or it could not start its work.
    public func join() throws {
        _ = try join(deadline: nil)
    }

    /// Waits up to `timeout` for the process to end. Returns `false` if it is still running.
    /// - Throws: ``ChildProcessError`` when the process ended and did not succeed.
    @discardableResult
    public func join(timeout: Duration) throws -> Bool {
        try join(deadline: Optional(timeout).deadline)
    }

    /// Waits for the process to end without blocking a thread.
    public func join() async throws {
        _ = try await join(deadline: nil)
    }

    /// Waits up to `timeout` without blocking a thread. Returns `false` if still running.
    @discardableResult
    public func join(timeout: Duration) async throws -> Bool {
        try await join(deadline: Optional(timeout).deadline)
    }

    private func join(deadline: Deadline?) throws -> Bool {
        let running = try runningOrFinished()
        guard let running else { return try checkFinished() }
        while try finishIfExited(running, wait: false) == nil {
            guard try running.process.descriptor.waitReadable(deadline: deadline) else { return false }
        }
        return try checkFinished()
    }

    private func join(deadline: Deadline?) async throws -> Bool {
        let running = try runningOrFinished()
        guard let running else { return try checkFinished() }
        while try finishIfExited(running, wait: false) == nil {
            guard try await Reactor.shared.waitReadable(running.process.descriptor, deadline: deadline) else {
                return false
            }
        }
        return try checkFinished()
    }

    /// The running child, `nil` once finished.
    private func runningOrFinished() throws -> Running? {
        switch state.withLock({ $0 }) {
        case .notStarted, .starting: preconditionFailure("process \"\(name)\" was joined before it was started")
        case .running(let running): return running
        case .finished: return nil
        }
    }

    private func checkFinished() throws -> Bool {
        guard case .finished(let running, let finished) = state.withLock({ $0 }) else { return false }
        if let failure = failure(running, finished) { throw failure }
        return true
    }

    /// Reaps the child if it has exited and collects what it reported.
    /// Returns `nil` while it runs.
    @discardableResult
    func finishIfExited(_ running: Running, wait: Bool, outcome: ChildOutcome? = nil) throws -> Finished? {
        try state.withLock { state throws -> Finished? in
            if case .finished(_, let finished) = state { return finished }
            let reaped: Termination?
            do throws(Errno) {
                reaped = try running.process.reap(wait: wait).map(Termination.init)
            } catch {
                throw ConnectionError.system(error, during: "waiting for process \"\(name)\"")
            }
            guard let termination = reaped else { return nil }
            ChildRegistry.shared.forget(pid: running.pid)
            // The report was written before the child exited, so it is already here.
            let report = outcome ?? (try? running.channel.receiveValue(deadline: .now) as ChildOutcome?) ?? nil
            running.channel.close()
            let finished = Finished(termination: termination, outcome: report)
            state = .finished(running, finished)
            return finished
        }
    }

    private func failure(_ running: Running, _ finished: Finished) -> ChildProcessError? {
        func error(_ reason: ChildProcessError.Reason) -> ChildProcessError {
            ChildProcessError(processName: name, pid: running.pid, reason: reason, termination: finished.termination)
        }
        switch finished.outcome {
        case .succeeded where finished.termination.isSuccess: return nil
        case .threw(let report): return error(.threw(RemoteError(report)))
        case .couldNotStart(let reason): return error(.couldNotStart(reason))
        case .succeeded, nil:
            return finished.termination.isSuccess ? nil : error(.terminated(finished.termination))
        }
    }

    // MARK: Functions

    /// Runs `function` with `input` in a new child process and returns its output, blocking
    /// the calling thread until it is done.
    /// - Throws: ``ChildProcessError`` when the function threw or the child crashed.
    public static func run<Function: ProcessFunction>(
        _ function: Function, with input: Function.Input, startMethod: StartMethod = .spawn
    ) throws -> Function.Output {
        try call(function, with: input, deadline: nil, startMethod: startMethod)!
    }

    /// Runs `function` with `input` in a new child process and returns its output.
    ///
    /// Cancelling the calling task kills the child: the work really stops.
    /// - Throws: ``ChildProcessError`` when the function threw or the child crashed;
    ///   `CancellationError` when the task was cancelled.
    public static func run<Function: ProcessFunction>(
        _ function: Function, with input: Function.Input, startMethod: StartMethod = .spawn
    ) async throws -> Function.Output {
        try await call(function, with: input, deadline: nil, startMethod: startMethod)!
    }

    /// Runs `function` in a new child process, giving it `timeout` to finish: returns `nil`
    /// when it did not, after killing the child (the work really stops).
    /// - Throws: ``ChildProcessError`` when the function threw or the child crashed.
    public static func run<Function: ProcessFunction>(
        _ function: Function, with input: Function.Input, timeout: Duration, startMethod: StartMethod = .spawn
    ) throws -> Function.Output? {
        try call(function, with: input, deadline: Optional(timeout).deadline, startMethod: startMethod)
    }

    /// Runs `function` in a new child process without blocking a thread, giving it
    /// `timeout` to finish: returns `nil` when it did not, after killing the child.
    /// Cancelling the calling task kills the child too.
    public static func run<Function: ProcessFunction>(
        _ function: Function, with input: Function.Input, timeout: Duration, startMethod: StartMethod = .spawn
    ) async throws -> Function.Output? {
        try await call(function, with: input, deadline: Optional(timeout).deadline, startMethod: startMethod)
    }

    /// Starts the child, reads its report (before waiting for the exit: a large output must
    /// not fill the socket while the child waits for it to drain), reaps it, and decodes
    /// the output. `nil` when the deadline passed first; the child is killed then.
    private static func call<Function: ProcessFunction>(
        _ function: Function, with input: Function.Input, deadline: Deadline?, startMethod: StartMethod
    ) throws -> Function.Output? {
        let (child, running) = try startFunction(function, with: input, startMethod: startMethod)
        let outcome: ChildOutcome?
        do {
            guard let report = try running.channel.receiveValue(deadline: deadline) as ChildOutcome? else {
                child.kill()
                _ = try? child.join()
                return nil
            }
            outcome = report
        } catch {
            outcome = nil  // the child ended without a report: how it ended says why
        }
        while try child.finishIfExited(running, wait: false, outcome: outcome) == nil {
            _ = try running.process.descriptor.waitReadable(deadline: nil)
        }
        return try child.output(of: Function.self, from: outcome, running)
    }

    private static func call<Function: ProcessFunction>(
        _ function: Function, with input: Function.Input, deadline: Deadline?, startMethod: StartMethod
    ) async throws -> Function.Output? {
        let (child, running) = try startFunction(function, with: input, startMethod: startMethod)
        return try await withTaskCancellationHandler {
            let outcome: ChildOutcome?
            do {
                guard let report = try await running.channel.receiveValue(deadline: deadline) as ChildOutcome? else {
                    child.kill()
                    _ = try? await child.join()
                    return nil
                }
                outcome = report
            } catch {
                outcome = nil  // cancelled (the child is being killed), or it ended without a report
            }
            while try child.finishIfExited(running, wait: false, outcome: outcome) == nil {
                _ = try await Reactor.shared.waitReadable(running.process.descriptor, deadline: nil)
            }
            try Task.checkCancellation()
            return try child.output(of: Function.self, from: outcome, running)
        } onCancel: {
            child.kill()
        }
    }

    private static func startFunction<Function: ProcessFunction>(
        _ function: Function, with input: Function.Input, startMethod: StartMethod
    ) throws -> (ChildProcess, Running) {
        let child = ChildProcess(function, input: input, name: nil, startMethod: startMethod)
        try child.start()
        guard case .running(let running) = child.state.withLock({ $0 }) else {
            preconditionFailure("a started process is running or finished, never anything else")
        }
        return (child, running)
    }

    /// The function's output, once the child has ended; or why there is none.
    private func output<Function: ProcessFunction>(
        of function: Function.Type, from outcome: ChildOutcome?, _ running: Running
    ) throws -> Function.Output {
        _ = try checkFinished()
        guard case .succeeded(let output) = outcome else {
            // It ended with status 0 without reporting: the function called exit(0).
            throw ChildProcessError(
                processName: name, pid: running.pid, reason: .terminated(termination ?? .exited(0)),
                termination: termination ?? .exited(0))
        }
        return try BinaryDecoder().decode(Function.Output.self, from: output)
    }
}

extension ChildProcess: CustomStringConvertible {
    /// Like Python's repr: `ChildProcess "worker-1" (pid 4242, running)`.
    public var description: String {
        let stateText: String
        switch state.withLock({ $0 }) {
        case .notStarted, .starting: stateText = "not started"
        case .running(let running): stateText = "pid \(running.pid), running"
        case .finished(let running, let finished): stateText = "pid \(running.pid), \(finished.termination)"
        }
        return "ChildProcess \"\(name)\" (\(stateText)\(isDaemon ? ", daemon" : ""))"
    }
}
