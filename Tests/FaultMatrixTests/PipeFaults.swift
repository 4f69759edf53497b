import Glibc
import Testing

@testable import Multiprocessing

/// One message of a pipe case: its index, seeded bytes, and (some of them) a handle: the
/// receiving end of a pipe whose sender wrote `index` into it before sending, so the
/// receiver proves the descriptor that came with the message is the right one.
struct PipeMessage: Codable, Sendable {
    var index: Int
    var bytes: [UInt8]
    var handle: ReceivingConnection<Int>?
}

/// What a pipe case sends: per message, its size and whether it carries a handle.
struct PipePlan: Codable, Sendable {
    var seed: UInt64
    var sizes: [Int]
    var handles: [Bool]
    /// Sends as raw bytes (`sendBytes`/`receiveBytes`) rather than values; no handles then.
    var raw: Bool
    /// The async forms rather than the blocking ones.
    var async: Bool

    var count: Int { sizes.count }

    func bytes(_ index: Int) -> [UInt8] { expectedOutput(seed: seed &+ UInt64(index), count: sizes[index]) }

    /// The message `index`, with a fresh handle holding `index` when the plan says so.
    func message(_ index: Int) throws -> PipeMessage {
        var handle: ReceivingConnection<Int>?
        if handles[index] && !raw {
            let (receiver, sender) = try Connection<Int>.oneWayPair()
            try sender.send(index)
            sender.close()
            handle = receiver
        }
        return PipeMessage(index: index, bytes: bytes(index), handle: handle)
    }

    /// The raw form of message `index`: its index in 8 bytes, then its bytes.
    func rawMessage(_ index: Int) -> [UInt8] {
        withUnsafeBytes(of: UInt64(index).littleEndian) { Array($0) } + bytes(index)
    }

    /// Checks a message received as `expected`: nil if right, else what is wrong.
    func check(_ message: PipeMessage, expected: Int) -> String? {
        guard message.index == expected else { return "message \(message.index) arrived where \(expected) was due" }
        guard message.bytes == bytes(expected) else { return "message \(expected)'s bytes came corrupted" }
        if handles[expected] && !raw {
            guard let handle = message.handle else { return "message \(expected) lost its handle" }
            defer { handle.close() }
            guard (try? handle.receive(timeout: .seconds(10))) == expected else {
                return "message \(expected)'s handle is not the one sent"
            }
        }
        return nil
    }

    func checkRaw(_ payload: [UInt8], expected: Int) -> String? {
        guard payload == rawMessage(expected) else {
            return "raw message \(expected) came wrong (\(payload.count) bytes)"
        }
        return nil
    }
}

/// The blocking forms, called from a synchronous context (an `async` one picks the
/// `async` overloads).
enum Blocking {
    static func send<Message>(_ message: Message, on connection: SendingConnection<Message>) throws {
        try connection.send(message)
    }
    static func receive<Message>(on connection: ReceivingConnection<Message>) throws -> Message {
        try connection.receive()
    }
}

/// A child that sends the plan's messages, acknowledging each once its send has returned.
struct PipeSender: ProcessTarget {
    var data: SendingConnection<PipeMessage>
    var rawData: SendingConnection<[UInt8]>
    var acks: SendingConnection<Int>
    var plan: PipePlan
    var arming: Arming?

    func run() async throws {
        if let arming { FaultInjection.arm(arming.step, after: arming.hits, action: arming.action) }
        for index in 0..<plan.count {
            if plan.raw {
                try rawData.sendBytes(plan.rawMessage(index))
            } else if plan.async {
                try await data.send(try plan.message(index))
            } else {
                try Blocking.send(try plan.message(index), on: data)
            }
            // On a pipe of its own, whose steps count among the hits too (a death between a
            // send and its acknowledgement loses nothing that was acknowledged).
            try await acks.send(index)
        }
    }
}

/// A child that receives the plan's messages, checks each, and acknowledges each good one
/// (a bad one as `-1 - index`).
struct PipeReceiver: ProcessTarget {
    var data: ReceivingConnection<PipeMessage>
    var rawData: ReceivingConnection<[UInt8]>
    var acks: SendingConnection<Int>
    var plan: PipePlan
    var arming: Arming?

    func run() async throws {
        if let arming { FaultInjection.arm(arming.step, after: arming.hits, action: arming.action) }
        for index in 0..<plan.count {
            let problem: String?
            if plan.raw {
                problem = plan.checkRaw(try rawData.receiveBytes(), expected: index)
            } else if plan.async {
                problem = plan.check(try await data.receive(), expected: index)
            } else {
                problem = plan.check(try Blocking.receive(on: data), expected: index)
            }
            if let problem { printToStandardError("pipe receiver: \(problem)") }
            try await acks.send(problem == nil ? index : -1 - index)
        }
    }
}

/// The parent of a pipe parent-fault case: starts a child that sends messages to it, and
/// relays each to the runner.
struct PipeRelay: ProcessTarget {
    var out: SendingConnection<PipeMessage>
    var plan: PipePlan
    var method: StartMethod

    func run() async throws {
        let (receiver, sender) = try Connection<PipeMessage>.oneWayPair()
        let (rawReceiver, rawSender) = try Connection<[UInt8]>.oneWayPair()
        let (acksReceiver, acksSender) = try Connection<Int>.oneWayPair()
        let child = ChildProcess(
            PipeSender(data: sender, rawData: rawSender, acks: acksSender, plan: plan, arming: nil), startMethod: method
        )
        try await child.start()
        for _ in 0..<plan.count { try await out.send(try await receiver.receive()) }
        _ = rawReceiver
        _ = acksReceiver
        _ = try await child.join(timeout: .seconds(40))
        // Waits for the signal (bounded: a missed one fails the case instead of hanging it).
        sleep(40)
    }
}

/// A child that sends `count` messages carrying handles, then one without.
struct HandleSender: ProcessTarget {
    var data: SendingConnection<PipeMessage>
    var count: Int
    func run() throws {
        let plan = PipePlan(
            seed: 1, sizes: Array(repeating: 16, count: count + 1), handles: [], raw: false, async: false)
        for index in 0..<count {
            let (receiver, sender) = try Connection<Int>.oneWayPair()
            try sender.send(index)
            sender.close()
            try data.send(PipeMessage(index: index, bytes: plan.bytes(index), handle: receiver))
        }
        try data.send(PipeMessage(index: count, bytes: plan.bytes(count), handle: nil))
    }
}

/// Pipes: a child sending or receiving values, raw bytes, large messages written in
/// several parts, and messages carrying handles dies at every step of a frame; a relaying
/// parent is signalled; the descriptor limit runs out while pipes are made and handles arrive.
enum PipeScenario: FaultScenario {
    static let object = "pipes"

    static let sendSteps = ["stream.send.encoded", "stream.send.afterFirstWrite", "stream.send.midPayload"]
    static let receiveSteps = ["stream.receive.afterHeader", "stream.receive.midPayload"]

    static func plan(_ random: inout SeededRandom, large: Bool) -> PipePlan {
        let count = Int.random(in: 3...8, using: &random)
        let raw = Int.random(in: 0..<4, using: &random) == 0
        let sizes = (0..<count).map { _ in
            large && Bool.random(using: &random)
                ? Int.random(in: 250_000...700_000, using: &random) : Int.random(in: 0...5000, using: &random)
        }
        let handles = (0..<count).map { _ in Int.random(in: 0..<3, using: &random) == 0 }
        return PipePlan(
            seed: random.next(), sizes: sizes, handles: handles, raw: raw, async: Bool.random(using: &random))
    }

    static func run(_ point: FaultPoint) async throws -> CaseOutcome {
        var random = point.random
        if let action = point.fault.childAction { return try await childFault(action, point.index, &random) }
        if let signal = point.fault.parentSignal { return try await parentFault(signal, &random) }
        return try await spawnFailure(&random)
    }

    private static func childFault(_ action: FaultInjection.Action, _ index: Int, _ random: inout SeededRandom)
        async throws
        -> CaseOutcome
    {
        // Every step in turn, so 50 points cover each ten times.
        let steps = sendSteps + receiveSteps
        let step = steps[index % steps.count]
        let method: StartMethod = Bool.random(using: &random) ? .spawn : .forkserver
        // A step cut in the middle of a frame needs frames larger than the socket's buffer.
        var plan = plan(&random, large: step.hasSuffix("afterFirstWrite") || step.hasSuffix("midPayload"))
        if step.hasSuffix("midPayload") || step.hasSuffix("afterFirstWrite") {
            plan.sizes[Int.random(in: 0..<plan.count, using: &random)] = 900_000
        }
        let arming = Arming(step: step, hits: Int.random(in: 0...2, using: &random), action: action)
        let (data, dataSender) = try Connection<PipeMessage>.oneWayPair()
        let (rawData, rawSender) = try Connection<[UInt8]>.oneWayPair()
        let (acks, acksSender) = try Connection<Int>.oneWayPair()
        var outcome = CaseOutcome()
        if sendSteps.contains(step) {
            let child = ChildProcess(
                PipeSender(data: dataSender, rawData: rawSender, acks: acksSender, plan: plan, arming: arming),
                startMethod: method)
            try await child.start()
            var received = 0
            receiving: while received < plan.count {
                do {
                    if plan.raw {
                        guard let payload = try rawData.receiveBytes(timeout: .seconds(20)) else {
                            outcome.problems.append("no message and no error within 20 s")
                            break receiving
                        }
                        if let problem = plan.checkRaw(payload, expected: received) { outcome.problems.append(problem) }
                    } else {
                        guard let message = try await data.receive(timeout: .seconds(20)) else {
                            outcome.problems.append("no message and no error within 20 s")
                            break receiving
                        }
                        if let problem = plan.check(message, expected: received) { outcome.problems.append(problem) }
                    }
                    received += 1
                } catch let error as ConnectionError {
                    switch error {
                    case .endOfStream, .peerClosedMidMessage: outcome.errorSeen = "\(error)"
                    default: outcome.problems.append("an unclear error from a dead sender: \(error)")
                    }
                    break receiving
                }
            }
            outcome.lost += await lostAcknowledged(acks, received: received, outcome: &outcome)
            await judgeChild(child, action: action, into: &outcome)
        } else {
            let child = ChildProcess(
                PipeReceiver(data: data, rawData: rawData, acks: acksSender, plan: plan, arming: arming),
                startMethod: method)
            try await child.start()
            var sent = 0
            sending: for index in 0..<plan.count {
                do {
                    // Raw bytes have no timed send: a dead receiver fails it (EPIPE) at once.
                    if plan.raw { try rawSender.sendBytes(plan.rawMessage(index)) }
                    let started = try plan.raw || dataSender.send(try plan.message(index), timeout: .seconds(20))
                    if !started {
                        outcome.problems.append("a send could not start within 20 s (the receiver is dead)")
                        break sending
                    }
                    sent += 1
                } catch ConnectionError.peerGone {
                    outcome.errorSeen = "\(ConnectionError.peerGone)"
                    break sending
                } catch {
                    outcome.problems.append("an unclear error towards a dead receiver: \(error)")
                    break sending
                }
            }
            dataSender.close()
            rawSender.close()
            // What the receiver acknowledged arrived whole and right.
            while true {
                do {
                    guard let ack = try await acks.receive(timeout: .seconds(20)) else {
                        outcome.problems.append("the receiver's acknowledgements neither came nor ended in 20 s")
                        break
                    }
                    if ack < 0 { outcome.problems.append("the receiver got message \(-1 - ack) corrupted") }
                    if ack >= sent { outcome.problems.append("message \(ack) was acknowledged but never sent") }
                } catch {
                    break
                }
            }
            await judgeChild(child, action: action, into: &outcome)
        }
        return outcome
    }

    /// Reads the sender's acknowledgements to their end: each names a message whose send
    /// returned, which must have been received. Returns how many were not.
    private static func lostAcknowledged(_ acks: ReceivingConnection<Int>, received: Int, outcome: inout CaseOutcome)
        async -> Int
    {
        var lost = 0
        while true {
            do {
                guard let ack = try await acks.receive(timeout: .seconds(20)) else {
                    outcome.problems.append("the sender's acknowledgements neither came nor ended in 20 s")
                    return lost
                }
                if ack >= received { lost += 1 }
            } catch {
                return lost
            }
        }
    }

    private static func judgeChild(
        _ child: ChildProcess, action: FaultInjection.Action, into outcome: inout CaseOutcome
    )
        async
    {
        do {
            if try await !child.join(timeout: .seconds(20)) {
                outcome.problems.append("the faulty child did not end within 20 s")
                child.kill()
                _ = try? await child.join(timeout: .seconds(10))
            }
        } catch let error as ChildProcessError {
            if !ChildCheck.isClear("\(error)") && error.remoteError == nil {
                outcome.problems.append("the child's error is unclear: \(error)")
            }
        } catch {
            outcome.problems.append("joining the child failed: \(error)")
        }
    }

    /// A relay P between a sending grandchild and the runner is signalled after a seeded
    /// number of messages: the runner's receive ends (end of stream, or a message cut short)
    /// and never hangs; what arrived is intact and in order; the grandchild dies with P.
    private static func parentFault(_ signal: Int32, _ random: inout SeededRandom) async throws -> CaseOutcome {
        let method: StartMethod = Bool.random(using: &random) ? .spawn : .forkserver
        // Large messages (cut by the signal mid-frame) in a quarter of the cases: each costs
        // its copies through the relay.
        var plan = plan(&random, large: Int.random(in: 0..<4, using: &random) == 0)
        plan.raw = false
        // Large enough to take several writes, small enough that a case stays within its
        // bound on a busy machine (a debug build moves a relayed message at about 0.5 MB/s).
        plan.sizes = plan.sizes.map { min($0, 300_000) }
        let before = Int.random(in: 0...plan.count, using: &random)
        let (data, out) = try Connection<PipeMessage>.oneWayPair()
        let parent = ChildProcess(PipeRelay(out: out, plan: plan, method: method))
        try await parent.start()
        var outcome = CaseOutcome()
        var received = 0
        var ended = false
        func receiveOne() async {
            do {
                guard let message = try await data.receive(timeout: .seconds(20)) else {
                    outcome.problems.append(
                        "the relay's stream neither delivered nor ended in 20 s (processes left: \(descendantProcesses().map { "\($0) \(readTextFile("/proc/\($0)/cmdline") ?? "")" }))"
                    )
                    ended = true
                    return
                }
                if let problem = plan.check(message, expected: received) { outcome.problems.append(problem) }
                received += 1
            } catch ConnectionError.endOfStream, ConnectionError.peerClosedMidMessage {
                ended = true
            } catch {
                outcome.problems.append("an unclear error from a dead relay: \(error)")
                ended = true
            }
        }
        while received < before && !ended { await receiveOne() }
        kill(parent.pid!, signal)
        do {
            if try await !parent.join(timeout: .seconds(20)) {
                outcome.problems.append("the relay survived signal \(signal)")
                parent.kill()
                _ = try? await parent.join(timeout: .seconds(10))
            }
        } catch let error as ChildProcessError {
            outcome.errorSeen = "\(error)"
            if error.termination != .signaled(ProcessSignal(rawValue: signal)) {
                outcome.problems.append("the relay ended otherwise than by signal \(signal): \(error)")
            }
        }
        while !ended && received <= plan.count { await receiveOne() }
        return outcome
    }

    /// The descriptor limit runs out: making pipes throws EMFILE by name and leaves nothing
    /// half-made; messages whose handles cannot be received are refused one by one
    /// (descriptorsLost) with the connection kept in step; all works once lifted.
    private static func spawnFailure(_ random: inout SeededRandom) async throws -> CaseOutcome {
        var outcome = CaseOutcome()
        let spare = Int.random(in: 0...9, using: &random)
        let handles = Int.random(in: 1...6, using: &random)
        // Pipes made until the limit: each whole (two ends that carry a message) or none.
        var pairs: [(Connection<Int>, Connection<Int>)] = []
        try await Limits.withDescriptorLimit(spare: spare) {
            do {
                while pairs.count < 10 { pairs.append(try Connection<Int>.pair()) }
            } catch {
                if "\(error)".contains("EMFILE") {
                    outcome.errorSeen = "\(error)"
                } else {
                    outcome.problems.append("making a pipe at the descriptor limit failed unclearly: \(error)")
                }
            }
        }
        if pairs.count != spare / 2 { outcome.problems.append("\(pairs.count) pipes made with \(spare) descriptors") }
        for (index, (a, b)) in pairs.enumerated() {
            try await a.send(index)
            if try await b.receive(timeout: .seconds(10)) != index {
                outcome.problems.append("pipe \(index) is broken")
            }
        }
        pairs = []
        // Handles arriving at the limit.
        let (data, sender) = try Connection<PipeMessage>.oneWayPair()
        let child = ChildProcess(HandleSender(data: sender, count: handles))
        try await child.start()
        var refused = 0
        var arrived = 0
        let handleSpare = Int.random(in: 0...3, using: &random)
        try await Limits.withDescriptorLimit(spare: handleSpare) {
            for _ in 0...handles {
                do {
                    guard let message = try await data.receive(timeout: .seconds(20)) else {
                        outcome.problems.append("a message with a handle neither came nor failed in 20 s")
                        return
                    }
                    arrived += 1
                    message.handle?.close()
                } catch ConnectionError.descriptorsLost {
                    refused += 1
                } catch {
                    outcome.problems.append("a message at the descriptor limit failed unclearly: \(error)")
                    return
                }
            }
        }
        if arrived + refused != handles + 1 {
            outcome.problems.append("\(arrived) arrived and \(refused) refused of \(handles + 1) messages")
        }
        if try await !child.join(timeout: .seconds(20)) { outcome.problems.append("the handle sender did not end") }
        // Lifted: a pipe carries a handle again.
        let (a, b) = try Connection<PipeMessage>.pair()
        let plan = PipePlan(seed: 3, sizes: [10], handles: [true], raw: false, async: false)
        try await a.send(try plan.message(0))
        guard let message = try await b.receive(timeout: .seconds(10)) else {
            outcome.problems.append("no message once the limit was lifted")
            return outcome
        }
        if let problem = plan.check(message, expected: 0) { outcome.problems.append("once lifted: \(problem)") }
        return outcome
    }
}

@Suite("Fault matrix: pipes", .serialized, .timeLimit(.minutes(10)))
struct PipeFaultTests {
    @Test("pipes", arguments: Fault.allCases)
    func pipes(_ fault: Fault) async throws {
        try await FaultMatrix.check(PipeScenario.self, fault)
    }
}
