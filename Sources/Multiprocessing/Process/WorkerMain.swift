import CMultiprocessing
import Glibc
import Synchronization
import SystemPackage

/// The entry point of every process the library starts, called by the C constructor
/// before `main` with the marker `"<mode>:<fd>:<parent pid>"`. Never returns.
@_cdecl("mp_swift_child_main")
func childMain(_ marker: UnsafePointer<CChar>) {
    let fields = String(cString: marker).split(separator: ":")
    guard fields.count == 3, let descriptor = Int32(fields[1]), let parent = pid_t(fields[2]) else {
        printToStandardError("swift-multiprocessing: malformed child marker \(String(cString: marker))")
        _exit(70)
    }
    // The bootstrap socket came through exec, so it lost close-on-exec (posix_spawn's dup2).
    // Set it again first, before any thread or work of ours exists: a program this process
    // starts must not inherit it. (A fork-server worker gets it with close-on-exec already.)
    _ = mp_set_cloexec(descriptor, 1)
    if fields[0] == "segment-watcher" {
        // No parent-death signal: it must outlive its parent long enough to clean up.
        SegmentWatcher.serve(control: FileDescriptor(rawValue: descriptor))
    }
    dieWithParent(expected: parent)
    FaultInjection.armFromEnvironment()
    // A worker's messages are often large and alike (arrays of the same size): keep freed
    // memory for the next one. Touching fresh pages (a fault each, charged to the memory
    // cgroup) costs more than filling them; 1 MiB messages went from ~70 faults each to none.
    mp_keep_freed_memory(64 * 1024 * 1024)
    switch fields[0] {
    case "forkserver", "forkserver-bind-now":
        ForkServer.serve(
            control: FileDescriptor(rawValue: descriptor), removeBindNow: fields[0] == "forkserver-bind-now")
    default: WorkerMain.start(bootstrap: FileDescriptor(rawValue: descriptor))
    }
}

/// Asks the kernel for SIGKILL when the parent dies, then checks that the parent is still
/// the expected one: it may have died before the request was made, and then no signal
/// would ever come.
func dieWithParent(expected parent: pid_t) {
    _ = mp_set_parent_death_signal(SIGKILL)
    if getppid() != parent { _exit(1) }
}

enum WorkerMain {
    /// Becomes the worker: the work runs on a new thread, and this thread (the process's
    /// main thread) serves the main actor. Never returns.
    ///
    /// Why a new thread: in a fork-server worker, this thread is a clone of the server's
    /// main thread, and carries its thread identity in thread-local caches (Swift's locks
    /// keep the thread id they lock with in thread-local storage, and so does glibc). A
    /// contended lock taken with the server's id fails to unlock and the runtime traps.
    /// A thread created here starts with a clean identity; the same holds for spawned
    /// workers, which take the same path so that both behave alike.
    ///
    /// Why the main thread serves the main queue: code written for apps awaits the main
    /// actor (`MainActor.run`, `@MainActor` functions), whose jobs go to the main queue;
    /// nothing would run them otherwise. (`dispatchMain()` cannot be used: it ends the
    /// thread with `pthread_exit`, which glibc cannot unwind before `main` has started.)
    ///
    /// In a fork-server worker the main actor's code runs on that cloned thread: code there
    /// that contends for a lock with another thread can still meet the stale identity (see
    /// DesignDecisions, "Threads in a worker").
    static func start(bootstrap: FileDescriptor) -> Never {
        // Made before the work starts, so the work finds the process's descriptors settled.
        let mainQueue = mp_main_queue_handle()
        let started = startDetachedThread { run(bootstrap: bootstrap) }
        if started != 0 {
            let reason =
                "the worker could not start its thread: \(ConnectionError.system(Errno(rawValue: started), during: "pthread_create"))"
            printToStandardError("swift-multiprocessing: \(reason)")
            // Said to the parent too, as the report (it is read whether or not the work was
            // sent): under a process limit its `join` names the cause, not just status 71.
            let channel = MessageStream(descriptor: bootstrap, maximumMessageSize: FrameHeader.maximumLength)
            try? channel.sendValue(ChildOutcome.couldNotStart(reason: reason))
            _exit(71)
        }
        mp_serve_main_queue(mainQueue)
    }

    /// Receives the work on `bootstrap`, runs it, reports the outcome, and exits.
    private static func run(bootstrap: FileDescriptor) -> Never {
        // The parent-death signal belongs to the thread that asked for it (the kernel
        // sends it if any thread of this process has it): ask again from this one.
        _ = mp_set_parent_death_signal(SIGKILL)
        let channel = MessageStream(descriptor: bootstrap, maximumMessageSize: FrameHeader.maximumLength)
        guard let frame = try? channel.receive(deadline: nil) else {
            _exit(1)  // the parent went away before sending the work
        }
        let message: StartMessage
        do {
            message = try BinaryDecoder().decode(StartMessage.self, from: frame.payload)
        } catch {
            finish(.couldNotStart(reason: "the start message could not be decoded: \(error)"), on: channel, exitCode: 1)
        }
        CurrentProcess.setName(message.processName)
        // The work arrived; the parent waits for its report.
        FaultInjection.step("child.afterStartMessage")
        let outcome = perform(message, descriptors: frame.descriptors)
        if case .threw(let report) = outcome {
            // As Python prints a child's traceback: the error is visible even if no one joins.
            printToStandardError(
                "Process \(message.processName) (pid \(getpid())) threw \(report.typeName): \(report.description)")
        }
        if case .couldNotStart(let reason) = outcome {
            printToStandardError("Process \(message.processName) (pid \(getpid())) could not start: \(reason)")
        }
        let succeeded = if case .succeeded = outcome { true } else { false }
        finish(outcome, on: channel, exitCode: succeeded ? 0 : 1)
    }

    /// Does once, in the fork server, the work every worker would otherwise repeat: the
    /// codec's metadata for the start and outcome messages.
    static func warmUp() {
        let sample = StartMessage(processName: "", typeName: "", readableTypeName: "", payload: [], work: .target)
        if let bytes = try? BinaryEncoder().encode(sample) {
            _ = try? BinaryDecoder().decode(StartMessage.self, from: bytes)
        }
        if let bytes = try? BinaryEncoder().encode(ChildOutcome.succeeded(output: [])) {
            _ = try? BinaryDecoder().decode(ChildOutcome.self, from: bytes)
        }
    }

    /// Looks a work type up, with its conformances, so forked workers find them cached.
    ///
    /// Only the runtime's lookups run here, never the type's own code: the fork server
    /// must not run anything a user wrote (an `init(from:)` that starts a thread or takes
    /// a lock would make every later fork unsafe).
    static func warmUp(typeName: String) {
        guard let type = _typeByName(typeName) else { return }
        // Each result is kept (counted in `preparedLookups`): a lookup whose result is
        // unused may be optimized away.
        var found = type is any ProcessTarget.Type ? 1 : 0
        if let prepared = type as? any ForkServerPrepared.Type {
            found += _lookUpBinaryFastPaths(for: prepared.typesDecoded)
        }
        if let function = type as? any ProcessFunction.Type {
            // What a pool worker decodes and encodes for it: the function, a chunk's inputs
            // and its outputs.
            func types<Function: ProcessFunction>(_: Function.Type) -> [any Decodable.Type] {
                [
                    Function.self, Function.Input.self, Function.Output.self, [Function.Input].self,
                    [Function.Output].self,
                ]
            }
            found += _lookUpBinaryFastPaths(for: _openExistential(function, do: types))
        }
        preparedLookups.add(found, ordering: .relaxed)
    }

    /// The lookups ``warmUp(typeName:)`` found something for, in this process (the fork
    /// server): kept so that the optimizer keeps the lookups.
    static let preparedLookups = Atomic<Int>(0)

    private static func finish(_ outcome: ChildOutcome, on channel: MessageStream, exitCode: Int32) -> Never {
        FaultInjection.step("child.beforeReport")
        try? channel.sendValue(outcome)
        // Reported: the parent has the outcome, and learns how the process ended from its pidfd.
        FaultInjection.step("child.afterReport")
        // As Python's workers do: finish the library's own duties (this worker's children
        // are joined, its daemons ended), flush stdio, and leave with _exit. The program's
        // atexit handlers and the unloading of every library belong to the program, which
        // never ran in this process.
        ChildRegistry.finishAll()
        fflush(nil)
        _exit(exitCode)
    }

    private static func perform(_ message: StartMessage, descriptors: [FileDescriptor]) -> ChildOutcome {
        let inbox = DescriptorInbox(descriptors)
        defer { inbox.closeUnclaimed() }
        let decoder = BinaryDecoder(userInfo: [.descriptorInbox: inbox])
        guard let type = _typeByName(message.typeName) else {
            return .couldNotStart(
                reason: "the type \(message.readableTypeName) (mangled name \(message.typeName)) is not in this "
                    + "program's binary; it must be defined in code that the parent's executable links")
        }
        switch message.work {
        case .target:
            guard let target = type as? any ProcessTarget.Type else {
                return .couldNotStart(reason: "\(message.readableTypeName) is not a ProcessTarget")
            }
            return runTarget(target, from: message.payload, decoder: decoder)
        case .function(let input):
            guard let function = type as? any ProcessFunction.Type else {
                return .couldNotStart(reason: "\(message.readableTypeName) is not a ProcessFunction")
            }
            return callFunction(function, from: message.payload, input: input, decoder: decoder)
        }
    }

    private static func runTarget<Target: ProcessTarget>(
        _ type: Target.Type, from payload: [UInt8], decoder: BinaryDecoder
    ) -> ChildOutcome {
        let target: Target
        do {
            target = try decoder.decode(Target.self, from: payload)
        } catch {
            return .couldNotStart(reason: "\(String(reflecting: Target.self)) could not be decoded: \(error)")
        }
        return runBlocking {
            try await target.run()
            return []
        }
    }

    private static func callFunction<Function: ProcessFunction>(
        _ type: Function.Type, from payload: [UInt8], input: [UInt8], decoder: BinaryDecoder
    ) -> ChildOutcome {
        let function: Function
        let argument: Function.Input
        do {
            function = try decoder.decode(Function.self, from: payload)
            argument = try decoder.decode(Function.Input.self, from: input)
        } catch {
            return .couldNotStart(reason: "\(String(reflecting: Function.self)) could not be decoded: \(error)")
        }
        return runBlocking {
            let output = try await function(argument)
            return try BinaryEncoder().encode(output)
        }
    }

    /// Runs async work to completion from this synchronous context (the constructor,
    /// before `main`), on this thread (see ``WorkerExecutor``).
    private static func runBlocking(_ work: @escaping @Sendable () async throws -> [UInt8]) -> ChildOutcome {
        WorkerExecutor().run {
            do {
                return .succeeded(output: try await work())
            } catch {
                return .threw(ErrorReport(error))
            }
        }
    }
}
