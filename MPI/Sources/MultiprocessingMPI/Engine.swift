import Glibc
import Synchronization

/// The handle on the engine thread that other threads and tasks use: every operation is an
/// order posted to the thread and a ``Completion`` to wait on.
final class Engine: Sendable {
    let rank: Int
    let size: Int
    let tagUpperBound: Int32
    let liveness: Liveness
    let mailbox: EngineMailbox
    private let isShutDown = Atomic<Bool>(false)

    private init(started: EngineLoop.Started, liveness: Liveness, mailbox: EngineMailbox) {
        rank = started.rank
        size = started.size
        tagUpperBound = started.tagUpperBound
        self.liveness = liveness
        self.mailbox = mailbox
    }

    /// Starts the engine thread, which initializes MPI, and waits (blocking this thread)
    /// until it has.
    static func startBlocking(liveness: Liveness) throws(MPIError) -> Engine {
        let launch = try launch(liveness: liveness)
        try? launch.ready.waitBlocking()
        return try launch.engine()
    }

    /// Starts the engine thread, which initializes MPI, and waits until it has.
    static func start(liveness: Liveness) async throws(MPIError) -> Engine {
        let launch = try launch(liveness: liveness)
        try? await launch.ready.wait()
        return try launch.engine()
    }

    /// A thread being started, and what it reports.
    private final class Launch: Sendable {
        let mailbox: EngineMailbox
        let liveness: Liveness
        let outcome = Mutex<Result<EngineLoop.Started, MPIError>?>(nil)
        let ready = Completion()

        init(mailbox: EngineMailbox, liveness: Liveness) {
            self.mailbox = mailbox
            self.liveness = liveness
        }

        func engine() throws(MPIError) -> Engine {
            switch outcome.withLock({ $0 }) {
            case .success(let started): return Engine(started: started, liveness: liveness, mailbox: mailbox)
            case .failure(let error): throw error
            case nil: throw .shutDown
            }
        }
    }

    private static func launch(liveness: Liveness) throws(MPIError) -> Launch {
        let mailbox = EngineMailbox()
        let launch = Launch(mailbox: mailbox, liveness: liveness)
        let code = startEngineThread { [launch] in
            EngineLoop.run(mailbox: mailbox, liveness: liveness) { result in
                launch.outcome.withLock { $0 = result }
                launch.ready.resume(.success(()))
            }
        }
        guard code == 0 else {
            throw .call(function: "pthread_create", code: code, explanation: String(cString: strerror(code)))
        }
        return launch
    }

    /// Sends `payload` to `destination` on `tag`; waits until MPI is done with its bytes.
    /// Returns false if `deadline` passed first.
    func send(
        _ payload: SendPayload, to destination: Int, tag: Int32, deadline: ContinuousClock.Instant? = nil
    ) async throws -> Bool {
        let completion = try postSend(payload, to: destination, tag: tag, deadline: deadline)
        do {
            try await completion.wait()
            return true
        } catch is ReceiveTimedOut {
            return false
        }
    }

    /// The blocking form of ``send(_:to:tag:deadline:)``.
    func sendBlocking(
        _ payload: SendPayload, to destination: Int, tag: Int32, deadline: ContinuousClock.Instant? = nil
    ) throws -> Bool {
        let completion = try postSend(payload, to: destination, tag: tag, deadline: deadline)
        do {
            try completion.waitBlocking()
            return true
        } catch is ReceiveTimedOut {
            return false
        }
    }

    private func postSend(
        _ payload: SendPayload, to destination: Int, tag: Int32, deadline: ContinuousClock.Instant?
    ) throws(MPIError) -> Completion {
        guard !isShutDown.load(ordering: .acquiring) else { throw .shutDown }
        let completion = Completion()
        mailbox.post(
            .send(
                SendOrder(
                    destination: Int32(destination), tag: tag, payload: payload, deadline: deadline,
                    completion: completion)))
        return completion
    }

    /// Receives the next message from `source` (any rank if nil) on `tag` into `sink`.
    /// Returns false if `deadline` passed first. A cancelled task stops waiting (unless the
    /// message is already coming in) and throws `CancellationError`.
    func receive(
        from source: Int?, tag: Int32, into sink: ReceiveSink, deadline: ContinuousClock.Instant? = nil
    ) async throws -> Bool {
        let (id, completion) = try postReceive(from: source, tag: tag, into: sink, deadline: deadline)
        do {
            try await withTaskCancellationHandler {
                try await completion.wait()
            } onCancel: {
                mailbox.post(.cancelReceive(id: id))
            }
            return true
        } catch is ReceiveTimedOut {
            return false
        }
    }

    /// The blocking form of ``receive(from:tag:into:deadline:)``.
    func receiveBlocking(
        from source: Int?, tag: Int32, into sink: ReceiveSink, deadline: ContinuousClock.Instant? = nil
    ) throws -> Bool {
        let (_, completion) = try postReceive(from: source, tag: tag, into: sink, deadline: deadline)
        do {
            try completion.waitBlocking()
            return true
        } catch is ReceiveTimedOut {
            return false
        }
    }

    private func postReceive(
        from source: Int?, tag: Int32, into sink: ReceiveSink, deadline: ContinuousClock.Instant?
    ) throws(MPIError) -> (UInt64, Completion) {
        guard !isShutDown.load(ordering: .acquiring) else { throw .shutDown }
        let completion = Completion()
        let id = mailbox.makeID()
        mailbox.post(
            .receive(
                ReceiveOrder(
                    id: id, key: MessageKey(source: source.map(Int32.init), tag: tag), sink: sink, deadline: deadline,
                    completion: completion)))
        return (id, completion)
    }

    /// Receives on (`source`, `tag`) fail with `error` once `count` messages came on it.
    func endChannel(source: Int, tag: Int32, afterMessages count: Int, error: MPIError) {
        mailbox.post(.endChannel(MessageKey(source: Int32(source), tag: tag), afterMessages: count, error: error))
    }

    /// Finalizes MPI on the engine thread and waits for it (blocking). Later operations
    /// throw ``MPIError/shutDown``. Only the first call does anything.
    func shutDown() throws {
        _ = try shutDown(timeout: nil)
    }

    /// ``shutDown()``, waiting at most `timeout`; false if MPI_Finalize had not returned by then.
    func shutDown(timeout: Duration?) throws -> Bool {
        guard !isShutDown.exchange(true, ordering: .acquiringAndReleasing) else { return true }
        let completion = Completion()
        mailbox.post(.shutDown(completion))
        return try completion.waitBlocking(timeout: timeout)
    }
}
