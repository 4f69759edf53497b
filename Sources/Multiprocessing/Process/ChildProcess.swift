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
///   when the child failed. A child ended by this process's own ``terminate()`` or
///   ``kill()`` did not fail: `join` returns, and ``termination`` says which signal ended it.
/// - Any number of threads and tasks may look at one child at once (`join`, ``isAlive``,
///   ``CurrentProcess/activeChildren``): the child's report and its exit are each read
///   once and kept, so every observer sees the same outcome.
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
    /// The signal this process last sent with ``terminate()`` or ``kill()`` (0: none): a
    /// child that ended by it did not fail.
    private let requestedSignal = Atomic<Int32>(0)
    private static let counter = Atomic<Int>(0)

    private enum State {
        case notStarted
        case starting
        case running(Running, Progress)
        case finished(Running, Finished)
    }

    struct Running: Sendable {
        /// The child's entry in ``ChildRegistry``.
        let id: UInt64
        let pid: pid_t
        let process: ProcessDescriptor
        /// The child's end of it sends one message, its report, before it exits.
        let channel: MessageStream
    }

    /// What has been learnt of a running child so far. Each fact is read once, by whoever
    /// holds the state lock first, and kept.
    struct Progress: Sendable {
        var report: Report?
        var termination: Termination?
    }

    /// What the child said before it exited.
    enum Report: Sendable {
        case received(ChildOutcome)
        /// It ended without a report (a crash, a signal, `exit` called by the work).
        case none
        /// It sent something that is not a report, or one too large: refused, with why.
        case refused(String)
    }

    struct Finished: Sendable {
        let termination: Termination
        let report: Report
    }

    /// The most a child's report (a function's encoded output) may weigh, like any message
    /// on a connection: a crashed or hostile child cannot make this process allocate more.
    static let reportLimit = defaultMaximumMessageSize

    /// A process that will run `target` once `start()` is called.
    /// - Parameters:
    ///   - target: the work, a Codable value sent to the child.
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
        case .running(let running, _):
            running.channel.close()
            // Dropped while running: reap it when it exits, so no zombie is left behind.
            ChildRegistry.shared.adopt(running.id)
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
        try claimStart()
        do {
            let (message, outbox, frame, parentEnd, childEnd) = try prepareLaunch()
            defer { childEnd.close() }
            let pid: pid_t
            do {
                pid = try Launcher.launch(startMethod, socket: childEnd.rawDescriptor, typeName: message.typeName)
            } catch {
                parentEnd.close()
                throw error
            }
            let running = try watch(pid, channel: parentEnd)
            // The child exists and waits for its work: this process is all it has.
            FaultInjection.step("child.start.beforeHandOver")
            var start = frame
            do {
                try parentEnd.send(frame: &start, descriptors: outbox.descriptors, moving: outbox.moved)
            } catch {
                try handOverFailed(running, error)
            }
            state.withLock { $0 = .running(running, Progress()) }
        } catch {
            state.withLock { $0 = .notStarted }
            throw error
        }
    }

    /// Starts the child without blocking a thread: the calling task suspends while the
    /// process is created and its work is sent.
    ///
    /// - Throws: like the blocking `start()`.
    /// - Precondition: the process was not started before.
    public func start() async throws {
        try claimStart()
        do {
            let (message, outbox, frame, parentEnd, childEnd) = try prepareLaunch()
            defer { childEnd.close() }
            let pid: pid_t
            do {
                pid = try await Launcher.launch(startMethod, socket: childEnd.rawDescriptor, typeName: message.typeName)
            } catch {
                parentEnd.close()
                throw error
            }
            let running = try watch(pid, channel: parentEnd)
            FaultInjection.step("child.start.beforeHandOver")
            do {
                // Not cancellable once the child exists: it must get its work or be ended.
                try await Task { [frame] in
                    try await parentEnd.send(frame: frame, descriptors: outbox.descriptors, moving: outbox.moved)
                }.value
            } catch {
                try handOverFailed(running, error)
            }
            state.withLock { $0 = .running(running, Progress()) }
        } catch {
            state.withLock { $0 = .notStarted }
            throw error
        }
    }

    private func claimStart() throws {
        let claimed = state.withLock { state -> Bool in
            guard case .notStarted = state else { return false }
            state = .starting
            return true
        }
        precondition(claimed, "process \"\(name)\" was started twice; a ChildProcess starts once")
    }

    /// Everything that can fail before the child exists (encoding, the type check), done
    /// before anything is started; and the channel to it.
    private func prepareLaunch() throws -> (
        StartMessage, DescriptorOutbox, [UInt8], parentEnd: MessageStream, childEnd: MessageStream
    ) {
        let (message, outbox) = try prepare()
        if checksTypeName { try Self.checkFindable(message) }
        let frame = try MessageStream.encodeFrame(message).frame
        let (parentEnd, childEnd) = try makeStreamPair(maximumMessageSize: Self.reportLimit)
        return (message, outbox, frame, parentEnd, childEnd)
    }

    /// Opens the new child's pidfd and registers it.
    private func watch(_ pid: pid_t, channel: MessageStream) throws -> Running {
        let process: ProcessDescriptor
        do throws(Errno) {
            process = try ProcessDescriptor(child: pid)
        } catch {
            // Without a pidfd the child cannot be watched: end it and reap it by pid (it is
            // this process's own child, not yet reaped, so the pid cannot have been reused).
            ProcessDescriptor.killAndReap(child: pid)
            channel.close()
            throw ConnectionError.system(error, during: "watching process \"\(name)\" (pidfd_open)")
        }
        let id = ChildRegistry.shared.register(process: process, isDaemon: isDaemon, object: self)
        return Running(id: id, pid: pid, process: process, channel: channel)
    }

    /// The child exists but its work could not be sent. A child that already died is
    /// `join`'s to report; otherwise the child is ended (it would wait for work forever),
    /// reaped in the background, and the error thrown.
    private func handOverFailed(_ running: Running, _ error: any Error) throws {
        if case ConnectionError.peerGone = error { return }
        try? running.process.send(signal: SIGKILL)
        running.channel.close()
        ChildRegistry.shared.adopt(running.id)
        throw error
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
        case .running(let running, _), .finished(let running, _): running.pid
        }
    }

    /// Whether the process has started and not yet ended (Python's `is_alive()`).
    public var isAlive: Bool {
        guard case .running = state.withLock({ $0 }) else { return false }
        return (try? advance()) == nil
    }

    /// How the process ended, or `nil` while it runs or before it starts.
    public var termination: Termination? {
        switch state.withLock({ $0 }) {
        case .notStarted, .starting: return nil
        case .finished(_, let finished): return finished.termination
        case .running: return (try? advance())?.termination
        }
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
    /// A child that ends by it has not failed: `join` returns normally.
    public func terminate() { send(signal: .terminate) }
    /// Sends SIGKILL (Python's `kill()`): the child ends at once, and `join` returns normally.
    public func kill() { send(signal: .kill) }

    /// Sends `signal` to the running child; does nothing once it has ended.
    public func send(signal: ProcessSignal) {
        guard case .running(let running, _) = state.withLock({ $0 }) else { return }
        requestedSignal.store(signal.rawValue, ordering: .releasing)
        try? running.process.send(signal: signal.rawValue)
    }

    // MARK: Joining

    /// Waits for the process to end (Python's `join()`).
    /// - Throws: ``ChildProcessError`` when the target threw, the process crashed or was
    ///   killed by someone else, or it could not start its work.
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
        guard let finished = try waitForEnd(deadline: deadline) else { return false }
        if let failure = failure(finished.running, finished.finished) { throw failure }
        return true
    }

    private func join(deadline: Deadline?) async throws -> Bool {
        guard let finished = try await waitForEnd(deadline: deadline) else { return false }
        if let failure = failure(finished.running, finished.finished) { throw failure }
        return true
    }

    /// Waits, blocking the thread, for the child to end and its report to be read; `nil`
    /// when the deadline passes first. The report is read while waiting (a large one must
    /// not fill the socket while the child waits for it to drain).
    private func waitForEnd(deadline: Deadline?) throws -> (running: Running, finished: Finished)? {
        while true {
            let (running, reportPending) = try runningState()
            if let finished = try advance() { return (running, finished) }
            let woken: Bool
            if reportPending,
                let waited = try? running.channel.usingDescriptor({ channel in
                    try pollAny(
                        [(running.process.descriptor, Int16(POLLIN)), (channel, Int16(POLLIN))], deadline: deadline)
                })
            {
                woken = waited
            } else {
                do throws(Errno) {
                    woken = try pollAny([(running.process.descriptor, Int16(POLLIN))], deadline: deadline)
                } catch {
                    throw ConnectionError.system(error, during: "waiting for process \"\(name)\"")
                }
            }
            if !woken && deadline.hasPassed { return try advance().map { (running, $0) } }
        }
    }

    /// Waits for the child to end without blocking a thread; see the blocking form.
    private func waitForEnd(deadline: Deadline?, cancellable: Bool = true) async throws -> (
        running: Running, finished: Finished
    )? {
        while true {
            let (running, reportPending) = try runningState()
            if let finished = try advance() { return (running, finished) }
            let woken: Bool
            if reportPending,
                let waited = try? await running.channel.usingDescriptor({ channel in
                    try await Reactor.shared.wait(
                        for: [(running.process.descriptor, .readable), (channel, .readable)], deadline: deadline,
                        cancellable: cancellable)
                })
            {
                woken = waited
            } else {
                if cancellable { try Task.checkCancellation() }
                woken = try await Reactor.shared.wait(
                    for: [(running.process.descriptor, .readable)], deadline: deadline, cancellable: cancellable)
            }
            if !woken && deadline.hasPassed { return try advance().map { (running, $0) } }
        }
    }

    /// For waits over many objects: whether the child has ended (reading what it sent
    /// meanwhile), and if not, what to watch: its pidfd, and its channel while the report
    /// is still to come (retained: the caller releases it).
    func waitState() -> (ended: Bool, process: FileDescriptor?, channel: MessageStream?) {
        guard case .running(let running, let progress) = state.withLock({ $0 }) else {
            if case .finished = state.withLock({ $0 }) { return (true, nil, nil) }
            preconditionFailure("process \"\(name)\" was waited on before it was started")
        }
        if (try? advance()) != nil { return (true, nil, nil) }
        let channel = progress.report == nil && running.channel.retainDescriptor() != nil ? running.channel : nil
        return (false, running.process.descriptor, channel)
    }

    /// The started child, and whether its report is still to come.
    private func runningState() throws -> (Running, Bool) {
        switch state.withLock({ $0 }) {
        case .notStarted, .starting: preconditionFailure("process \"\(name)\" was joined before it was started")
        case .running(let running, let progress): return (running, progress.report == nil)
        case .finished(let running, _): return (running, false)
        }
    }

    /// Takes one look at the child, without waiting: reads its report if it has come,
    /// reaps it if it has exited. Returns how it ended once both are known.
    ///
    /// This is the only place a child's channel is read or its exit collected, and it runs
    /// under the state lock, so each happens once and every observer sees the result.
    @discardableResult
    func advance() throws -> Finished? {
        try state.withLock { state throws -> Finished? in
            guard case .running(let running, var progress) = state else {
                if case .finished(_, let finished) = state { return finished }
                return nil
            }
            if progress.report == nil { progress.report = Self.readReport(running.channel, afterExit: false) }
            if progress.termination == nil {
                do throws(Errno) {
                    progress.termination = try running.process.reap(wait: false).map(Termination.init)
                } catch {
                    state = .running(running, progress)
                    throw ConnectionError.system(error, during: "waiting for process \"\(name)\"")
                }
            }
            if let termination = progress.termination {
                // Whatever the child wrote, it wrote before it exited: it is all here now.
                let report = progress.report ?? Self.readReport(running.channel, afterExit: true) ?? .none
                running.channel.close()
                ChildRegistry.shared.forget(running.id)
                let finished = Finished(termination: termination, report: report)
                state = .finished(running, finished)
                return finished
            }
            // Once the report is in, nothing else may come: closing the channel means a
            // child that writes more gets an error instead of blocking forever.
            if progress.report != nil { running.channel.close() }
            state = .running(running, progress)
            return nil
        }
    }

    /// The child's report, if a whole one is here; `nil` if it is still coming. After the
    /// child exited, an incomplete report counts as none.
    private static func readReport(_ channel: MessageStream, afterExit: Bool) -> Report? {
        do {
            guard let frame = try channel.receiveNow() else { return afterExit ? Report.none : nil }
            for descriptor in frame.descriptors { descriptor.closeIgnoringErrors() }
            do {
                return .received(try BinaryDecoder().decode(ChildOutcome.self, from: frame.payload))
            } catch {
                return .refused("its report could not be decoded (\(error))")
            }
        } catch WireError.oversized(let size, let limit) {
            return .refused("its report of \(size) bytes is larger than the \(limit) bytes a child may send")
        } catch let error as WireError {
            return .refused("it wrote something other than a report on its channel (\(error))")
        } catch {
            // End of stream, a report cut short by the child's death, a closed channel:
            // how the child ended says why there is no report.
            return Report.none
        }
    }

    private func failure(_ running: Running, _ finished: Finished) -> ChildProcessError? {
        func error(_ reason: ChildProcessError.Reason) -> ChildProcessError {
            ChildProcessError(processName: name, pid: running.pid, reason: reason, termination: finished.termination)
        }
        switch finished.report {
        case .received(.threw(let report)): return error(.threw(RemoteError(report)))
        case .received(.couldNotStart(let reason)): return error(.couldNotStart(reason))
        case .refused(let why): return error(.refusedReport(why))
        case .received(.succeeded), .none:
            if finished.termination.isSuccess { return nil }
            // Ended by the signal this process sent it: what the caller asked for.
            if case .signaled(let signal) = finished.termination,
                signal.rawValue == requestedSignal.load(ordering: .acquiring)
            {
                return nil
            }
            return error(.terminated(finished.termination))
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

    /// Starts the child, waits for its report and its exit, and decodes the output. `nil`
    /// when the deadline passed first; the child is killed and reaped then.
    private static func call<Function: ProcessFunction>(
        _ function: Function, with input: Function.Input, deadline: Deadline?, startMethod: StartMethod
    ) throws -> Function.Output? {
        let child = ChildProcess(function, input: input, name: nil, startMethod: startMethod)
        try child.start()
        guard let (running, finished) = try child.waitForEnd(deadline: deadline) else {
            child.kill()
            _ = try child.waitForEnd(deadline: nil)
            return nil
        }
        return try child.output(of: Function.self, running, finished)
    }

    private static func call<Function: ProcessFunction>(
        _ function: Function, with input: Function.Input, deadline: Deadline?, startMethod: StartMethod
    ) async throws -> Function.Output? {
        let child = ChildProcess(function, input: input, name: nil, startMethod: startMethod)
        try await child.start()
        let ended = try await withTaskCancellationHandler {
            do {
                return try await child.waitForEnd(deadline: deadline)
            } catch is CancellationError {
                return nil  // the handler is killing the child
            }
        } onCancel: {
            child.kill()
        }
        guard let (running, finished) = ended else {
            child.kill()
            _ = try await child.waitForEnd(deadline: nil, cancellable: false)
            try Task.checkCancellation()
            return nil
        }
        try Task.checkCancellation()
        return try child.output(of: Function.self, running, finished)
    }

    /// The function's output, once the child has ended; or why there is none.
    private func output<Function: ProcessFunction>(
        of function: Function.Type, _ running: Running, _ finished: Finished
    ) throws -> Function.Output {
        // The output arrived: it is the answer, however the process went on to end.
        if case .received(.succeeded(let output)) = finished.report {
            return try BinaryDecoder().decode(Function.Output.self, from: output)
        }
        if let failure = failure(running, finished) { throw failure }
        // It ended with status 0 without reporting: the function called exit(0).
        throw ChildProcessError(
            processName: name, pid: running.pid, reason: .terminated(finished.termination),
            termination: finished.termination)
    }
}

extension ChildProcess: CustomStringConvertible {
    /// Like Python's repr: `ChildProcess "worker-1" (pid 4242, running)`.
    public var description: String {
        let stateText: String
        switch state.withLock({ $0 }) {
        case .notStarted, .starting: stateText = "not started"
        case .running(let running, _): stateText = "pid \(running.pid), running"
        case .finished(let running, let finished): stateText = "pid \(running.pid), \(finished.termination)"
        }
        return "ChildProcess \"\(name)\" (\(stateText)\(isDaemon ? ", daemon" : ""))"
    }
}
