import CMPI
import Dispatch
import Glibc

/// The one thread that makes MPI calls (the world is initialized `MPI_THREAD_FUNNELED` from
/// it). It starts sends and receives without blocking (`MPI_Isend`, `MPI_Improbe` +
/// `MPI_Imrecv`), polls them with `MPI_Test`, sends and watches heartbeats, and ends waits
/// at their deadlines. Its state is its own: nothing here is touched by another thread.
///
/// Why poll: MPI has no descriptor to wait on. The loop spins while there is traffic, then
/// sleeps in growing steps (up to ``Liveness/idleSleepLimit``) on a semaphore that a new
/// order signals, so an idle rank costs little CPU and an order is picked up at once.
final class EngineLoop {
    private let mailbox: EngineMailbox
    private let liveness: Liveness
    let rank: Int32
    let size: Int32
    private let world = cmpi_comm_world()
    private let byte = cmpi_byte()
    private let clock = ContinuousClock()
    /// The benchmarks' counts (`SWIFT_MPI_ENGINE_STATS=1`); `counting` is read once.
    private let counters: EngineCounters
    private let counting: Bool

    private struct ActiveSend {
        var request: MPI_Request?
        var order: SendOrder
    }

    private struct ActiveReceive {
        var request: MPI_Request?
        var order: ReceiveOrder
        var source: Int32
    }

    private var sends: [ActiveSend] = []
    /// Receives waiting for a message, first come first served per key.
    private var waiting: [MessageKey: [ReceiveOrder]] = [:]
    /// Receives whose message is matched and coming in.
    private var arriving: [ActiveReceive] = []
    private var heartbeats: [(request: MPI_Request?, destination: Int32)] = []
    /// Requests given up (their rank is lost, or their wait timed out), with what they
    /// read or write kept alive until MPI lets go of them.
    private var abandoned: [(request: MPI_Request?, keepAlive: Any)] = []

    /// The ranks watched for liveness (rank 0 watches every other; a worker watches rank 0).
    private let peers: [Int32]
    private var lastHeard: [Int32: ContinuousClock.Instant] = [:]
    private var lost: Set<Int32> = []
    private var received: [MessageKey: Int] = [:]
    private var ended: [MessageKey: (count: Int, error: MPIError)] = [:]
    private var nextHeartbeat: ContinuousClock.Instant
    private var nextLivenessCheck: ContinuousClock.Instant

    private init(mailbox: EngineMailbox, liveness: Liveness, rank: Int32, size: Int32) {
        self.mailbox = mailbox
        self.liveness = liveness
        self.rank = rank
        self.size = size
        counters = mailbox.counters
        counting = counters.enabled
        peers = rank == 0 ? Array(1..<max(1, size)) : [0]
        let now = clock.now
        for peer in peers { lastHeard[peer] = now }
        nextHeartbeat = now
        nextLivenessCheck = now
    }

    /// What the thread reports once MPI is initialized.
    struct Started: Sendable {
        var rank: Int
        var size: Int
        var tagUpperBound: Int32
    }

    /// Initializes MPI on this thread, reports it through `started`, then serves orders
    /// until told to shut down. Runs on the engine thread; returns when MPI is finalized.
    static func run(mailbox: EngineMailbox, liveness: Liveness, started: @Sendable (Result<Started, MPIError>) -> Void)
    {
        var provided: Int32 = 0
        var code = MPI_Init_thread(nil, nil, cmpi_thread_funneled(), &provided)
        if code != cmpi_success() { return started(.failure(mpiError(code, "MPI_Init_thread"))) }
        code = MPI_Comm_set_errhandler(cmpi_comm_world(), cmpi_errors_return())
        if code != cmpi_success() { return started(.failure(mpiError(code, "MPI_Comm_set_errhandler"))) }
        var rank: Int32 = 0
        var size: Int32 = 0
        code = MPI_Comm_rank(cmpi_comm_world(), &rank)
        if code == cmpi_success() { code = MPI_Comm_size(cmpi_comm_world(), &size) }
        if code != cmpi_success() { return started(.failure(mpiError(code, "MPI_Comm_rank"))) }
        let loop = EngineLoop(mailbox: mailbox, liveness: liveness, rank: rank, size: size)
        started(.success(Started(rank: Int(rank), size: Int(size), tagUpperBound: cmpi_tag_upper_bound())))
        loop.serve()
    }

    private func serve() {
        var idleRounds = 0
        counters.calibrate()
        // With counting on, each round's thread CPU is charged to it at the next round's start.
        var previousBusy = true
        var lastReading = counting ? EngineCounters.threadNanoseconds() : 0
        while true {
            if counting { account(busy: previousBusy, since: &lastReading) }
            var busy = false
            for order in mailbox.takeOrders() {
                busy = true
                if case .shutDown(let completion) = order {
                    finish(completion)
                    return
                }
                accept(order)
            }
            busy = progressSends() || busy
            busy = drainHeartbeats() || busy
            busy = matchWaiting() || busy
            busy = progressArriving() || busy
            let now = clock.now
            failEndedChannels()
            expireDeadlines(now)
            if now >= nextHeartbeat {
                sendHeartbeats()
                nextHeartbeat = now + liveness.heartbeatInterval
            }
            if now >= nextLivenessCheck {
                checkLiveness(now)
                testAbandoned()
                nextLivenessCheck = now + .milliseconds(10)
            }
            previousBusy = busy
            if busy {
                idleRounds = 0
                continue
            }
            idleRounds += 1
            // A short spin catches a reply that is already on its way; after that, sleep in
            // steps growing from 16 µs to the limit (an order wakes the thread at once).
            if idleRounds < 32 { continue }
            let step = min(liveness.idleSleepLimit, .microseconds(16) * (1 << min(idleRounds - 32, 10)))
            let (seconds, attoseconds) = step.components
            let nanoseconds = Int(seconds) * 1_000_000_000 + Int(attoseconds / 1_000_000_000)
            if counting { counters.sleeps.wrappingAdd(1, ordering: .relaxed) }
            _ = mailbox.wake.wait(timeout: .now() + .nanoseconds(nanoseconds))
        }
    }

    private func account(busy: Bool, since lastReading: inout Int) {
        let now = EngineCounters.threadNanoseconds()
        if busy {
            counters.busyNanoseconds.wrappingAdd(now - lastReading, ordering: .relaxed)
            counters.busyRounds.wrappingAdd(1, ordering: .relaxed)
        } else {
            counters.idleNanoseconds.wrappingAdd(now - lastReading, ordering: .relaxed)
            counters.idleRounds.wrappingAdd(1, ordering: .relaxed)
        }
        lastReading = now
    }

    // MARK: Orders

    private func accept(_ order: EngineOrder) {
        switch order {
        case .send(let send):
            if lost.contains(send.destination) {
                return send.completion.resume(.failure(rankLostError(send.destination)))
            }
            var request: MPI_Request? = cmpi_request_null()
            let code = MPI_Isend(
                send.payload.base, Int32(send.payload.byteCount), byte, send.destination, send.tag, world, &request)
            if code != cmpi_success() { return send.completion.resume(.failure(mpiError(code, "MPI_Isend"))) }
            sends.append(ActiveSend(request: request, order: send))
        case .receive(let receive):
            if let source = receive.key.source, lost.contains(source) {
                return receive.completion.resume(.failure(rankLostError(source)))
            }
            waiting[receive.key, default: []].append(receive)
        case .cancelReceive(let id):
            for key in Array(waiting.keys) {
                guard let index = waiting[key]?.firstIndex(where: { $0.id == id }) else { continue }
                let receive = waiting[key]!.remove(at: index)
                receive.completion.resume(.failure(CancellationError()))
            }
        case .endChannel(let key, let count, let error):
            ended[key] = (count, error)
        case .shutDown:
            break  // handled by the loop
        }
    }

    // MARK: Sends

    private func progressSends() -> Bool {
        guard !sends.isEmpty else { return false }
        var progressed = false
        var index = 0
        while index < sends.count {
            var flag: Int32 = 0
            let code = MPI_Test(&sends[index].request, &flag, cmpi_status_ignore())
            if code != cmpi_success() || flag != 0 {
                let send = sends.remove(at: index)
                if counting { counters.sends.wrappingAdd(1, ordering: .relaxed) }
                send.order.completion.resume(
                    code == cmpi_success() ? .success(()) : .failure(mpiError(code, "MPI_Test")))
                progressed = true
            } else {
                index += 1
            }
        }
        return progressed
    }

    // MARK: Heartbeats and liveness

    private func sendHeartbeats() {
        // The previous round's heartbeats are small and sent eagerly: they are done by now,
        // except towards a rank that has stopped reading (then they are given up).
        heartbeats.removeAll { heartbeat in
            var heartbeat = heartbeat
            var flag: Int32 = 0
            let code = MPI_Test(&heartbeat.request, &flag, cmpi_status_ignore())
            return code != cmpi_success() || flag != 0
        }
        for peer in peers where !lost.contains(peer) {
            var request: MPI_Request? = cmpi_request_null()
            // An empty message: MPI accepts a null buffer for a count of 0.
            if MPI_Isend(nil, 0, byte, peer, ReservedTag.heartbeat, world, &request) == cmpi_success() {
                heartbeats.append((request, peer))
                if counting { counters.heartbeatsSent.wrappingAdd(1, ordering: .relaxed) }
            }
        }
    }

    private func drainHeartbeats() -> Bool {
        var drained = false
        while true {
            var flag: Int32 = 0
            var message: MPI_Message? = cmpi_message_null()
            var status = MPI_Status()
            let code = MPI_Improbe(cmpi_any_source(), ReservedTag.heartbeat, world, &flag, &message, &status)
            guard code == cmpi_success(), flag != 0 else { return drained }
            // Matched and empty: receiving it completes at once.
            _ = MPI_Mrecv(nil, 0, byte, &message, cmpi_status_ignore())
            heard(cmpi_status_source(&status))
            if counting { counters.heartbeatsReceived.wrappingAdd(1, ordering: .relaxed) }
            drained = true
        }
    }

    private func heard(_ source: Int32) {
        if lastHeard[source] != nil { lastHeard[source] = clock.now }
    }

    private func checkLiveness(_ now: ContinuousClock.Instant) {
        for peer in peers where !lost.contains(peer) {
            guard let last = lastHeard[peer] else { continue }
            let silence = now - last
            if silence > liveness.lostAfter { declareLost(peer, silentFor: silence) }
        }
    }

    private func rankLostError(_ rank: Int32) -> MPIError {
        .rankLost(rank: Int(rank), silentFor: lastHeard[rank].map { clock.now - $0 } ?? .zero)
    }

    /// Fails every wait on `rank`. Its requests are given up, not cancelled: Open MPI cannot
    /// cancel a send, and the memory they use is kept until MPI lets go of it.
    private func declareLost(_ rank: Int32, silentFor: Duration) {
        lost.insert(rank)
        let error = MPIError.rankLost(rank: Int(rank), silentFor: silentFor)
        for key in Array(waiting.keys) where key.source == rank {
            for receive in waiting.removeValue(forKey: key) ?? [] { receive.completion.resume(.failure(error)) }
        }
        arriving.removeAll { receive in
            guard receive.source == rank else { return false }
            abandoned.append((receive.request, receive.order.sink))
            receive.order.completion.resume(.failure(error))
            return true
        }
        sends.removeAll { send in
            guard send.order.destination == rank else { return false }
            abandoned.append((send.request, send.order.payload))
            send.order.completion.resume(.failure(error))
            return true
        }
        heartbeats.removeAll { heartbeat in
            guard heartbeat.destination == rank else { return false }
            abandoned.append((heartbeat.request, ()))
            return true
        }
        mailbox.publishLost(rank: Int(rank), silentFor: silentFor)
    }

    private func testAbandoned() {
        abandoned.removeAll { entry in
            var entry = entry
            var flag: Int32 = 0
            let code = MPI_Test(&entry.request, &flag, cmpi_status_ignore())
            return code != cmpi_success() || flag != 0
        }
    }

    // MARK: Receives

    /// Matches arrived messages to waiting receives and starts receiving them straight into
    /// the receivers' memory. Messages nobody waits for stay in MPI's queue meanwhile.
    private func matchWaiting() -> Bool {
        guard !waiting.isEmpty else { return false }
        var matched = false
        for key in Array(waiting.keys) {
            while let receive = waiting[key]?.first {
                var flag: Int32 = 0
                var message: MPI_Message? = cmpi_message_null()
                var status = MPI_Status()
                var code = MPI_Improbe(key.source ?? cmpi_any_source(), key.tag, world, &flag, &message, &status)
                if code != cmpi_success() {
                    waiting[key]!.removeFirst()
                    receive.completion.resume(.failure(mpiError(code, "MPI_Improbe")))
                    continue
                }
                if flag == 0 { break }
                waiting[key]!.removeFirst()
                matched = true
                let source = cmpi_status_source(&status)
                heard(source)
                var byteCount: Int32 = 0
                _ = MPI_Get_count(&status, byte, &byteCount)
                var request: MPI_Request? = cmpi_request_null()
                do {
                    let base = try receive.sink.prepare(byteCount: Int(byteCount))
                    code = MPI_Imrecv(base, byteCount, byte, &message, &request)
                    if code != cmpi_success() { throw mpiError(code, "MPI_Imrecv") }
                    arriving.append(ActiveReceive(request: request, order: receive, source: source))
                } catch {
                    // The message is matched and must be taken off the queue all the same.
                    if message != cmpi_message_null() {
                        let scratch = ElementSink<UInt8>()
                        let base = try? scratch.prepare(byteCount: Int(byteCount))
                        if MPI_Imrecv(base, byteCount, byte, &message, &request) == cmpi_success() {
                            abandoned.append((request, scratch))
                        }
                    }
                    receive.completion.resume(.failure(error))
                }
            }
            if waiting[key]?.isEmpty == true { waiting[key] = nil }
        }
        return matched
    }

    private func progressArriving() -> Bool {
        guard !arriving.isEmpty else { return false }
        var progressed = false
        var index = 0
        while index < arriving.count {
            var flag: Int32 = 0
            let code = MPI_Test(&arriving[index].request, &flag, cmpi_status_ignore())
            if code != cmpi_success() || flag != 0 {
                let receive = arriving.remove(at: index)
                if counting { counters.receives.wrappingAdd(1, ordering: .relaxed) }
                received[MessageKey(source: receive.source, tag: receive.order.key.tag), default: 0] += 1
                heard(receive.source)
                receive.order.completion.resume(
                    code == cmpi_success() ? .success(()) : .failure(mpiError(code, "MPI_Test")))
                progressed = true
            } else {
                index += 1
            }
        }
        return progressed
    }

    /// Fails the receives on a channel whose job has ended, once every message it sent has
    /// been received (messages on one tag arrive in order, but the report of the end comes
    /// on another tag and may overtake them).
    private func failEndedChannels() {
        guard !ended.isEmpty else { return }
        for (key, end) in ended {
            if end.count > 0 {
                guard received[key, default: 0] >= end.count else { continue }
                if arriving.contains(where: { $0.source == key.source && $0.order.key.tag == key.tag }) { continue }
                // Everything it sent is in: only the end remains (and the count can go).
                ended[key] = (0, end.error)
                received[key] = nil
            }
            for receive in waiting.removeValue(forKey: key) ?? [] { receive.completion.resume(.failure(end.error)) }
        }
    }

    private func expireDeadlines(_ now: ContinuousClock.Instant) {
        if waiting.isEmpty && sends.isEmpty { return }
        for key in Array(waiting.keys) {
            waiting[key]!.removeAll { receive in
                guard let deadline = receive.deadline, deadline <= now else { return false }
                receive.completion.resume(.failure(ReceiveTimedOut()))
                return true
            }
            if waiting[key]!.isEmpty { waiting[key] = nil }
        }
        sends.removeAll { send in
            guard let deadline = send.order.deadline, deadline <= now else { return false }
            abandoned.append((send.request, send.order.payload))
            send.order.completion.resume(.failure(ReceiveTimedOut()))
            return true
        }
    }

    // MARK: Shutdown

    private func finish(_ completion: Completion) {
        for receive in waiting.values.joined() { receive.completion.resume(.failure(MPIError.shutDown)) }
        for receive in arriving { receive.order.completion.resume(.failure(MPIError.shutDown)) }
        for send in sends { send.order.completion.resume(.failure(MPIError.shutDown)) }
        waiting = [:]
        mailbox.finishListeners()
        // Requests still open (towards a lost rank) are released without waiting: MPI_Finalize
        // must not wait for them.
        for var entry in abandoned { _ = MPI_Request_free(&entry.request) }
        for var heartbeat in heartbeats { _ = MPI_Request_free(&heartbeat.request) }
        let code = MPI_Finalize()
        // Kept until MPI is gone: it may still have pointed into them.
        withExtendedLifetime((arriving, sends, abandoned)) {}
        completion.resume(code == cmpi_success() ? .success(()) : .failure(mpiError(code, "MPI_Finalize")))
    }
}
