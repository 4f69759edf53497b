import CMultiprocessing
import Glibc
import Synchronization
import SystemPackage

/// The fork server: a process spawned fresh, which stays single-threaded (no `Task`, no
/// Dispatch, nothing that starts a thread) so that forking it is safe, and forks a worker
/// for each request.
///
/// Its workers are cloned with `CLONE_PARENT`: they are children of the process that asked
/// for them, not of the server. So the requester reaps them with a pidfd like spawned
/// children (no exit statuses relayed over a socket), and their parent-death signal is
/// tied to the requester's long-lived reactor thread.
enum ForkServer {
    private struct Client {
        let control: MessageStream
        let pid: pid_t
        /// A pidfd of the server's own, to end a server that stopped answering.
        let process: ProcessDescriptor
        /// The names of ``prepare(function:)`` this server was given.
        var prepared: Set<String> = []

        func close() {
            control.close()
            process.close()
        }
    }

    /// How long a fork request may take before the server is taken for dead: a server
    /// that stopped (SIGSTOP, a hung machine) must not hang every later start.
    static let replyTimeout = Duration.seconds(10)

    private static let client = Mutex<Client?>(nil)

    /// Function types this program's pools have called (see ``prepare(function:)``).
    private static let functions = Mutex<Set<String>>([])

    /// Has the server prepare for `function` (a ``ProcessFunction``'s mangled type name) with
    /// its next request: the runtime's lookups a pool worker makes for the function's type
    /// and for its input and output, once in the server instead of in every worker forked
    /// later. A pool calls it for every function it runs, so a later pool's workers find
    /// them done. Only lookups run in the server, never the type's own code.
    static func prepare(function: String) {
        _ = functions.withLock { $0.insert(function) }
    }

    /// A request for a worker: its target's type, and function types to prepare for.
    private struct Request: Codable {
        var typeName: String
        var prepare: [String]
    }

    /// The running server's pid, if one was started (for tests).
    static var serverID: pid_t? { client.withLock { $0?.pid } }

    /// What the server answers to a fork request.
    private struct Reply: Codable {
        var pid: Int32?
        /// Why there is no worker: the request was malformed, or clone(2) failed.
        var error: String?
        /// clone(2)'s errno, when it failed.
        var errno: Int32?
    }

    // MARK: Requester side

    /// Asks the server (starting it on first use, restarting it if it died) for a worker
    /// whose bootstrap descriptor is `socket`. Runs on the launcher thread only (see
    /// ``Launcher``), so requests never overlap and no caller waits on a lock across I/O.
    static func fork(socket: FileDescriptor, typeName: String) throws -> pid_t {
        try client.withLock { client throws -> pid_t in
            var lastError: any Error = ConnectionError.endOfStream
            for attempt in 0..<2 {
                let reply: Reply
                do {
                    // A server found dead (killed, or unable to bind its symbols early) is
                    // replaced once, the second time without LD_BIND_NOW.
                    if client == nil { client = try startServer(bindNow: attempt == 0) }
                    let prepare = functions.withLock { $0 }.subtracting(client!.prepared)
                    reply = try request(
                        socket, Request(typeName: typeName, prepare: prepare.sorted()), on: client!.control)
                    client!.prepared.formUnion(prepare)
                } catch ConnectionError.peerGone {
                    // The request never reached a server: safe to ask another.
                    lastError = ConnectionError.peerGone
                    client?.close()
                    client = nil
                    continue
                } catch let error as ConnectionError {
                    // The server died after taking the request: it may have forked a worker
                    // that holds `socket`, so asking again with it could give two workers one
                    // channel. End that worker (it is this process's child, found by the
                    // socket it holds), and fail this start; the next one gets a new server.
                    try? client?.process.send(signal: SIGKILL)  // if it only stopped answering
                    client?.close()
                    client = nil
                    for pid in childrenHolding(socket) { endStray(pid, holding: socket) }
                    throw ConnectionError.system(
                        .noSuchProcess, during: "asking the fork server for a worker (it died: \(error))")
                }
                if let pid = reply.pid { return pid }
                // The server is alive and answered: the system refused it a process (the
                // process limit, memory). Not a dead server: keep it, and say why.
                if let code = reply.errno {
                    throw ConnectionError.system(
                        Errno(rawValue: code), during: "starting a process (clone in the fork server)")
                }
                throw ConnectionError.system(
                    .invalidArgument,
                    during: "asking the fork server for a worker (\(reply.error ?? "no reason given"))")
            }
            throw ConnectionError.system(.noSuchProcess, during: "asking the fork server for a worker (\(lastError))")
        }
    }

    /// Ends a worker that a dead server forked for `socket`. Through a pidfd, checked again
    /// after it is opened: a pid read from /proc may have been reaped and reused meanwhile,
    /// and only a process that still holds our socket is the stray. (Every start goes
    /// through the launcher thread, this one, so no spawn of ours is half-way and holding a
    /// copy of every descriptor at this moment.)
    private static func endStray(_ pid: pid_t, holding socket: FileDescriptor) {
        guard let process = try? ProcessDescriptor(child: pid) else { return }
        defer { process.close() }
        guard childrenHolding(socket).contains(pid) else { return }
        try? process.send(signal: SIGKILL)
        _ = try? process.reap(wait: true)
    }

    /// Sends one fork request and returns the server's answer; throws only when the
    /// exchange itself failed (the server is gone, or silent for ``replyTimeout``).
    private static func request(_ socket: FileDescriptor, _ request: Request, on control: MessageStream) throws -> Reply
    {
        var (frame, _) = try MessageStream.encodeFrame(request)
        try control.send(frame: &frame, descriptors: [socket])
        let deadline = Optional(replyTimeout).deadline
        guard let reply = try control.receiveValue(deadline: deadline) as Reply? else {
            throw ConnectionError.system(.timedOut, during: "waiting \(replyTimeout) for the fork server's answer")
        }
        return reply
    }

    private static func startServer(bindNow: Bool) throws -> Client {
        let (mine, theirs) = try makeSocketPair()
        defer { theirs.closeIgnoringErrors() }
        // The server binds every dynamic symbol at start (LD_BIND_NOW) so that its workers
        // inherit a resolved symbol table instead of each resolving the same symbols again.
        // It removes the variable from its environment again (see `serve`), unless the
        // user had set it.
        let addBindNow = bindNow && getenv("LD_BIND_NOW") == nil
        // On the launcher thread (this runs there), which lives as long as the process: the
        // server's parent-death signal, and its workers', are tied to it.
        let pid = try spawnSelf(
            mode: addBindNow ? "forkserver-bind-now" : "forkserver", socket: theirs,
            extraEnvironment: addBindNow ? ["LD_BIND_NOW=1"] : [])
        // The server is reaped when it exits, so it never lingers as a zombie.
        let process = try ProcessDescriptor(child: pid)
        let own = try ProcessDescriptor(child: pid)
        Task.detached { await process.reapWhenExited() }
        return Client(control: MessageStream(descriptor: mine, maximumMessageSize: 1 << 16), pid: pid, process: own)
    }

    // MARK: Server side

    /// The server's loop: one fork per request, until the requester closes the control
    /// socket or dies. Never returns.
    static func serve(control descriptor: FileDescriptor, removeBindNow: Bool) -> Never {
        if removeBindNow { unsetenv("LD_BIND_NOW") }
        // Ctrl-C signals the terminal's whole foreground group, this server included: a
        // requester that handles it must keep its server (as Python's forkserver does).
        // Its workers get the default back (see `becomeWorker`).
        signal(SIGINT, SIG_IGN)
        // Blocked too: a worker is cloned with the server's SIG_IGN and keeps it until it
        // sets the default back, and an ignored signal is dropped when sent, so a SIGINT
        // sent to a worker in that window (its `start()` has returned) would be lost and the
        // worker live on (found by the fault matrix: a parent interrupted just after it
        // started). A blocked signal is kept pending instead, and the worker unblocks it
        // once the default is back. (A clone does not inherit the server's pending ones.)
        var interrupt = sigset_t()
        sigemptyset(&interrupt)
        sigaddset(&interrupt, SIGINT)
        pthread_sigmask(SIG_BLOCK, &interrupt, nil)
        let control = MessageStream(descriptor: descriptor, maximumMessageSize: 1 << 16)
        let requester = getppid()
        var warmed: Set<String> = []
        WorkerMain.warmUp()
        while true {
            guard let frame = try? control.receive(deadline: nil) else { _exit(0) }
            // Look the work's type up here, once, and the functions a pool has called: every
            // worker forked later inherits the runtime's caches instead of searching the
            // binary's metadata again.
            if let request = try? BinaryDecoder().decode(Request.self, from: frame.payload) {
                for typeName in [request.typeName] + request.prepare where warmed.insert(typeName).inserted {
                    WorkerMain.warmUp(typeName: typeName)
                }
            }
            guard frame.descriptors.count == 1 else {
                for descriptor in frame.descriptors { descriptor.closeIgnoringErrors() }
                try? control.sendValue(Reply(pid: nil, error: "a fork request must carry one descriptor"))
                continue
            }
            let bootstrap = frame.descriptors[0]
            // A request taken, no worker yet: the requester waits for the answer.
            FaultInjection.step("forkserver.beforeFork")
            let pid = mp_clone_sibling()
            if pid == 0 {
                becomeWorker(bootstrap: bootstrap, requester: requester)
            }
            bootstrap.closeIgnoringErrors()
            // A worker exists (the requester's child) but the requester has not heard of it.
            if pid > 0 { FaultInjection.step("forkserver.afterFork") }
            let reply = pid > 0 ? Reply(pid: pid) : Reply(error: "clone(2) failed", errno: Glibc.errno)
            do {
                try control.sendValue(reply)
            } catch {
                _exit(0)
            }
        }
    }

    /// In the new worker: keep only stdin/out/err and the bootstrap socket (as 3, close-on-exec;
    /// it replaces the server's control socket there, so a worker cannot ask the server for
    /// anything), then run the work like a spawned child.
    private static func becomeWorker(bootstrap: FileDescriptor, requester: pid_t) -> Never {
        do {
            try bootstrap.duplicate(as: bootstrapDescriptor)
        } catch {
            _exit(1)  // the requester sees the worker exit before it got its work
        }
        mp_close_from(bootstrapDescriptor + 1)
        signal(SIGINT, SIG_DFL)  // the server's SIG_IGN is not the worker's
        var interrupt = sigset_t()
        sigemptyset(&interrupt)
        sigaddset(&interrupt, SIGINT)
        pthread_sigmask(SIG_UNBLOCK, &interrupt, nil)  // one sent since the clone ends it now
        dieWithParent(expected: requester)
        // Forked, not yet the worker: the requester has its pid and is sending the work.
        FaultInjection.step("forkserver.worker.beforeStart")
        WorkerMain.start(bootstrap: FileDescriptor(rawValue: bootstrapDescriptor))
    }
}

/// A target whose decoding the fork server prepares before it forks a worker for it.
///
/// The first time a process decodes a type, the binary codec asks the runtime whether the
/// type has a fast path (a conformance lookup: a search through every conformance in the
/// program, 15-40 µs, then cached). A fork-server worker inherits the server's cache, so the
/// server looks these types up once, before its first fork for the target, and no worker
/// repeats them: for a pool worker, about a dozen lookups that held up every start.
///
/// Only the runtime's lookups run in the server, never the types' own code (see
/// ``WorkerMain/warmUp(typeName:)``), so only the library's own targets conform.
protocol ForkServerPrepared: ProcessTarget {
    /// Every type decoding this target goes through (its fields, theirs, and so on).
    static var typesDecoded: [any Decodable.Type] { get }
}
