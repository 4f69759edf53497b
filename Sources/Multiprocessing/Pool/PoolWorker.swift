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
    /// The offset of the input the worker is running in its current task (written by the
    /// worker; see ``ServePool``), read when it dies to name the input at fault.
    let running: SharedValue<Int>
    /// Tasks (chunks) served, for `maxTasksPerWorker`.
    let tasksServed = Atomic<Int>(0)

    /// What one wait on a worker brought.
    enum Event {
        /// The reply for the input at `offset` of the current task.
        case reply(offset: Int, outcome: ChildOutcome)
        /// The outcomes of every input of the current task, in order.
        case replies([ChildOutcome])
        /// The outputs of the current task's inputs that did not fail, and the failures.
        case outputs([UInt8], failures: [PoolItemFailure])
        /// The worker ended (crashed, was killed, or exited) before replying.
        case ended(Termination)
        /// The deadline passed first.
        case timedOut
    }

    private init(process: ChildProcess, channel: Connection<PoolMessage>, running: SharedValue<Int>) {
        self.process = process
        self.channel = channel
        self.running = running
    }

    /// Starts a worker; it runs `initializer` (if any) before serving.
    static func start(
        name: String, startMethod: StartMethod, initializer: EncodedTarget?,
        extras: PoolWorkerExtras = PoolWorkerExtras()  // pool-extras hook
    ) async throws -> PoolWorker {
        let (mine, theirs) = try Connection<PoolMessage>.pair()
        let running: SharedValue<Int>
        do {
            running = try SharedValue(-1)
        } catch {
            mine.close()
            theirs.close()
            throw error
        }
        // A daemon: workers are ended, not waited for, when this program exits (as Python's).
        let process = ChildProcess(
            ServePool(tasks: theirs, running: running, initializer: initializer, extras: extras),  // pool-extras hook
            name: name, isDaemon: true, startMethod: startMethod)
        do {
            try await process.start()
        } catch {
            mine.close()
            throw error
        }
        return PoolWorker(process: process, channel: mine, running: running)
    }

    var pid: pid_t { process.pid ?? 0 }

    /// Sends a task; `false` if the worker is gone.
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
        // Replies to a chunk come in bursts: one already here is taken without arming a
        // wait (the costly part of a small item's round trip).
        if (try? channel.poll()) != true {
            let ready = try await waitForAny([channel as any Waitable, process], timeout: timeout)
            if ready.isEmpty { return .timedOut }
        }
        if (try? channel.poll()) == true {
            do {
                let message = try await channel.receive()
                switch message {
                case .result(_, let offset, let outcome): return .reply(offset: offset, outcome: outcome)
                case .results(_, let outcomes): return .replies(outcomes)
                case .outputs(_, let outputs, let failures): return .outputs(outputs, failures: failures)
                case .task: break
                }
            } catch is CancellationError {
                throw CancellationError()
            } catch {
                // End of stream or a frame cut short: the worker is gone; its exit says how.
            }
        }
        return .ended(await termination())
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
