import Glibc
import Synchronization

/// One persistent worker of a ``ProcessPool``, seen from the pool: its process and the
/// channel its tasks go over.
///
/// Every wait for a reply also watches the process's exit, so a worker that dies (or hangs
/// past a timeout) never leaves the pool waiting.
final class PoolWorker: Sendable {
    let process: ChildProcess
    private let channel: Connection<PoolMessage>
    /// Shared with the worker: which task and input it is running (written by the worker;
    /// see ``ServePool``), read when it dies to name the input at fault (see ``Running``),
    /// and the claim on a task sent ahead.
    let words: WorkerWords
    /// Tasks (chunks) served, for `maxTasksPerWorker`.
    let tasksServed = Atomic<Int>(0)
    /// When to look for a reply a while before sleeping on it (see ``SpinPolicy``).
    private let spin = Mutex(SpinPolicy())
    /// Answers that came in one batch and are not yet taken by ``next(timeout:)``, in order.
    private let buffered = Mutex<[Event]>([])

    /// The value of ``running``: a task's id (its low 31 bits) and the offset of the input
    /// in it, in one word so that one store changes both. With two tasks sent to a worker,
    /// the offset alone would not say which of them it was running.
    struct Running: Equatable {
        var task: UInt64
        var offset: Int

        init(task: UInt64, offset: Int) {
            self.task = task & 0x7fff_ffff
            self.offset = offset
        }

        /// The value read back; `nil` for -1 (no task yet).
        init?(_ word: Int) {
            guard word >= 0 else { return nil }
            self.init(task: UInt64(word >> 32), offset: word & 0xffff_ffff)
        }

        var word: Int { Int(task) << 32 | (offset & 0xffff_ffff) }

        /// Whether this is task `id`.
        func isTask(_ id: UInt64) -> Bool { task == id & 0x7fff_ffff }
    }

    /// What one wait on a worker brought.
    enum Event: Sendable {
        /// The reply of task `id` for its input at `offset`.
        case reply(id: UInt64, offset: Int, outcome: ChildOutcome)
        /// The outcomes of every input of task `id`, in order.
        case replies(id: UInt64, [ChildOutcome])
        /// The outputs of task `id`'s inputs that did not fail, and the failures.
        case outputs(id: UInt64, [UInt8], failures: [PoolItemFailure])
        /// The worker ended (crashed, was killed, or exited) before replying.
        case ended(Termination)
        /// Task `id` was taken back before the worker started it, and not run.
        case skipped(id: UInt64)
        /// The deadline passed first.
        case timedOut
    }

    private init(process: ChildProcess, channel: Connection<PoolMessage>, words: WorkerWords) {
        self.process = process
        self.channel = channel
        self.words = words
    }

    /// Starts a worker; it runs `initializer` (if any) before serving.
    static func start(
        name: String, startMethod: StartMethod, initializer: EncodedTarget?,
        extras: PoolWorkerExtras = PoolWorkerExtras()  // pool-extras hook
    ) async throws -> PoolWorker {
        let (mine, theirs) = try Connection<PoolMessage>.pair()
        let words: WorkerWords
        do {
            words = try WorkerWords()
        } catch {
            mine.close()
            theirs.close()
            throw error
        }
        // A daemon: workers are ended, not waited for, when this program exits (as Python's).
        let process = ChildProcess(
            ServePool(tasks: theirs, words: words, initializer: initializer, extras: extras),  // pool-extras hook
            name: name, isDaemon: true, startMethod: startMethod)
        do {
            try await process.start()
        } catch {
            mine.close()
            throw error
        }
        return PoolWorker(process: process, channel: mine, words: words)
    }

    var pid: pid_t { process.pid ?? 0 }

    /// Sends a task; `false` if the worker is gone. One sender at a time (its driver).
    func send(_ message: PoolMessage) async -> Bool {
        do {
            try await channel.send(message)
            return true
        } catch {
            return false
        }
    }

    /// Waits for the next reply, the worker's end, or `timeout`, whichever comes first.
    /// - Throws: `CancellationError` when the waiting task is cancelled.
    func next(timeout: Duration?) async throws -> Event {
        if let event = buffered.withLock({ $0.isEmpty ? nil : $0.removeFirst() }) { return event }
        // A reply already here, or coming within microseconds (a quick item's round trip),
        // is taken without arming a wait: the wait and the wake-up cost more than the item.
        let here = timeout == nil ? spin.withLock { channel.lookForMessage(&$0) } : (try? channel.poll()) == true
        if !here {
            let ready = try await waitForAny([channel as any Waitable, process], timeout: timeout)
            if ready.isEmpty { return .timedOut }
        }
        // A message, or the end of the stream, is here; or the worker ended. A failure to
        // look (this process out of descriptors) is no sign of the worker's end: waiting for
        // its exit would wait forever. The call fails with it; the driver kills the worker.
        let readable: Bool
        do {
            readable = try channel.poll()
        } catch let error as ConnectionError {
            if case .system = error { throw error }
            readable = true  // the receive reports it
        } catch {
            readable = true
        }
        if readable {
            do {
                let message = try await channel.receive()
                if case .batch(let messages) = message {
                    // The answers to several tasks in one message: the first now, the
                    // others to the next calls (an empty batch is a broken worker's).
                    var events = messages.map(Self.event(of:))
                    guard !events.isEmpty else { return .ended(await termination()) }
                    let first = events.removeFirst()
                    buffered.withLock { $0 += events }
                    return first
                }
                return Self.event(of: message)
            } catch is CancellationError {
                throw CancellationError()
            } catch ConnectionError.endOfStream, ConnectionError.peerClosedMidMessage, ConnectionError.closed {
                // End of stream or a frame cut short: the worker is gone; its exit says how.
            } catch let error as ConnectionError {
                // This process could not read (EMFILE making the wait's eventfd, ...): the
                // worker may be alive and well, so waiting for its exit would wait forever
                // (the fault matrix hung there). The call fails with the reason; the driver
                // kills the worker, which cannot be heard any more.
                if case .system = error { throw error }
                kill()
            } catch {
                // A malformed message: a broken worker, which may still run. It must go.
                kill()
            }
        }
        return .ended(await termination())
    }

    /// Whether answers from a batch are waiting to be taken (without a system call).
    var hasBufferedAnswers: Bool { buffered.withLock { !$0.isEmpty } }

    /// The event a message from the worker brings; a message no worker sends (a task) reads
    /// as an answer to no task, which the driver treats as a broken worker.
    private static func event(of message: PoolMessage) -> Event {
        switch message {
        case .result(let id, let offset, let outcome): .reply(id: id, offset: offset, outcome: outcome)
        case .results(let id, let outcomes): .replies(id: id, outcomes)
        case .outputs(let id, let outputs, let failures): .outputs(id: id, outputs, failures: failures)
        case .skipped(let id): .skipped(id: id)
        case .task, .batch: .replies(id: .max, [])
        }
    }

    /// How the worker ended, once it has (it must be ending: killed, or its channel closed).
    func termination() async -> Termination {
        // A task of its own: the caller may be cancelled (that is often why the worker was
        // killed), and the wait must still collect the exit.
        let process = self.process
        await Task { _ = try? await process.join() }.value
        return process.termination ?? .exited(0)
    }

    /// Ends the worker at once.
    func kill() { process.kill() }

    /// Lets the worker finish: it exits when its channel closes.
    func close() { channel.close() }
}

extension Connection {
    /// Whether a message is here, looking for one for up to ``SpinPolicy/window`` (yielding
    /// the CPU between looks) when `policy` says so: a pool's replies and tasks often come
    /// within microseconds, and sleeping on the socket costs a wake-up of tens of them.
    func lookForMessage(_ policy: inout SpinPolicy) -> Bool {
        if (try? poll()) != false { return true }
        guard policy.shouldSpin() else { return false }
        let start = ContinuousClock.now
        repeat {
            sched_yield()
            if (try? poll()) != false {
                policy.found(after: ContinuousClock.now - start)
                return true
            }
        } while ContinuousClock.now - start < SpinPolicy.window
        policy.missed()
        return false
    }
}
