import Glibc
import Testing

@testable import Multiprocessing

/// The Queue row of the fault matrix: `JoinableQueue` (a `Queue` and its task count) used by
/// several producer and consumer processes at once, with items of every kind (small, of a
/// good part of the ring, larger than half the ring, holding a handle), while a fault strikes
/// at a step of `put`, `get`, `close`, `taskDone` or `join`.
///
/// What every case checks: each item whose `put` returned is got exactly once (by a consumer
/// that survived, by the one that died if it logged it, or by the runner draining the queue
/// at the end), items of one producer in the order they were put, intact; a process that
/// died holding one of the queue's locks blocks nobody (every wait has a timeout, and a
/// timeout where progress was due is a problem); the task count comes out exact; and
/// nothing is left behind once the queue is released (the runner's leak check).

@Suite("Fault matrix: Queue", .serialized)
struct QueueFaultTests {
    @Test("Queue", .timeLimit(.minutes(10)), arguments: Fault.allCases)
    func queue(_ fault: Fault) async throws {
        try await FaultMatrix.check(QueueScenario.self, fault)
    }
}

// MARK: - The steps

/// Who reaches a step in a case.
enum QueueRole: String, Codable, Sendable {
    case producer, consumer, closer, joiner
}

/// A protocol step of the queue (a `FaultInjection.step` name in Sources/Multiprocessing/Queues)
/// and what a case must contain for a process to reach it.
struct QueueStep: Sendable {
    enum Need: Sendable {
        /// An item that goes in the ring.
        case ringItem
        /// An item that goes through the side channel (a datagram and a placeholder).
        case sideItem
        /// A put that finds the queue empty past the ring's hot window (a 1 MiB ring).
        case recycle
        /// An orphan datagram in the socket: a producer killed between send and publish first.
        case orphan
        /// A consumer that finds the queue empty and sleeps.
        case emptyWait
        /// A producer that finds a bounded queue full and sleeps.
        case fullWait
        /// Nothing in particular.
        case none
    }

    var name: String
    var role: QueueRole
    var need: Need

    /// Steps after which a consumer dying has taken its item out of the queue without
    /// handing it to its caller: the one loss allowed (an item in flight in the dead process).
    static let afterTaking: Set<String> = [
        "queue.get.afterStep", "queue.get.afterUnlock", "queue.getSide.afterStep", "queue.getSide.afterDrop",
    ]

    /// Every step, each reached by a case at `index % all.count`.
    static let all: [QueueStep] = [
        QueueStep(name: "queue.put.locked", role: .producer, need: .ringItem),
        QueueStep(name: "queue.get.locked", role: .consumer, need: .ringItem),
        QueueStep(name: "queue.put.afterCopy", role: .producer, need: .ringItem),
        QueueStep(name: "queue.get.afterCopy", role: .consumer, need: .ringItem),
        QueueStep(name: "queue.put.afterPublish", role: .producer, need: .ringItem),
        QueueStep(name: "queue.get.afterStep", role: .consumer, need: .ringItem),
        QueueStep(name: "queue.put.afterUnlock", role: .producer, need: .ringItem),
        QueueStep(name: "queue.get.afterUnlock", role: .consumer, need: .ringItem),
        QueueStep(name: "queue.putSide.locked", role: .producer, need: .sideItem),
        QueueStep(name: "queue.getSide.afterPeek", role: .consumer, need: .sideItem),
        QueueStep(name: "queue.putSide.numbered", role: .producer, need: .sideItem),
        QueueStep(name: "queue.getSide.afterStep", role: .consumer, need: .sideItem),
        QueueStep(name: "queue.putSide.afterSend", role: .producer, need: .sideItem),
        QueueStep(name: "queue.getSide.afterDrop", role: .consumer, need: .sideItem),
        QueueStep(name: "queue.putSide.afterCopy", role: .producer, need: .sideItem),
        QueueStep(name: "queue.getSide.droppingOrphan", role: .consumer, need: .orphan),
        QueueStep(name: "queue.putSide.afterPublish", role: .producer, need: .sideItem),
        QueueStep(name: "queue.taskDone.afterCount", role: .consumer, need: .none),
        QueueStep(name: "queue.putSide.afterUnlock", role: .producer, need: .sideItem),
        QueueStep(name: "queue.wait.counted", role: .consumer, need: .emptyWait),
        QueueStep(name: "queue.wait.counted", role: .producer, need: .fullWait),
        QueueStep(name: "queue.close.locked", role: .closer, need: .none),
        QueueStep(name: "queue.close.afterFlag", role: .closer, need: .none),
        QueueStep(name: "queue.close.beforeWake", role: .closer, need: .none),
        QueueStep(name: "queue.join.waiting", role: .joiner, need: .none),
        QueueStep(name: "queue.recycle.afterMarker", role: .producer, need: .recycle),
        QueueStep(name: "queue.recycle.holdingConsumers", role: .producer, need: .recycle),
        QueueStep(name: "queue.recycle.afterHeadStep", role: .producer, need: .recycle),
        QueueStep(name: "queue.get.afterSkip", role: .consumer, need: .recycle),
    ]
}

/// A fault armed in a child: it dies at the `hits + 1`-th pass of `step`.
struct ArmedQueueFault: Codable, Sendable {
    var step: String
    var hits: Int
    var action: FaultInjection.Action

    func arm() { FaultInjection.arm(step, after: hits, action: action) }
}

// MARK: - Items

/// An item of a case: its producer (stream) and number, bytes of a size chosen by its kind,
/// and for the handle kind a shared value holding a number only this item has.
struct QueueFaultItem: Codable, Sendable {
    var producer: Int
    var number: Int
    var bytes: [UInt8]
    var handle: SharedValue<Int>?
}

enum QueueItemKind: Int, Codable, Sendable {
    /// A few bytes: a ring record.
    case small
    /// A sixteenth to a quarter of the ring: a ring record, often wrapping round its end.
    case medium
    /// More than half the ring: the side channel (inline in the datagram, or in a memory file
    /// above 32 KiB).
    case large
    /// A few bytes and a `SharedValue`: the side channel, with a descriptor.
    case handle

    var isSide: Bool { self == .large || self == .handle }
}

/// What a case's producers put: the same in every process, from the case's seed.
struct QueuePlan: Codable, Sendable {
    var seed: UInt64
    var capacity: Int
    var maxSize: Int?
    /// Items per producer stream.
    var counts: [Int]
    /// Whether the items beyond the two of each kind are all medium: the ring's bytes then
    /// run past its hot window often, and puts go back to its start (``QueueStep/Need/recycle``).
    var mediumHeavy = false

    /// A plan for a case that must reach a step with `need`.
    static func make(_ random: inout SeededRandom, need: QueueStep.Need, streams: Int) -> QueuePlan {
        var capacity = [4096, 16384, 65536].randomElement(using: &random)!
        if need == .recycle { capacity = 1 << 20 }
        var maxSize: Int? = Bool.random(using: &random) ? nil : Int.random(in: 1...4, using: &random)
        if need == .fullWait { maxSize = Int.random(in: 1...2, using: &random) }
        // One item at most: every put then finds the queue empty, and goes back to the start
        // of the ring once past its hot window.
        if need == .recycle { maxSize = 1 }
        let counts = (0..<streams).map { _ in Int.random(in: 8...16, using: &random) }
        return QueuePlan(
            seed: random.next(), capacity: capacity, maxSize: maxSize, counts: counts, mediumHeavy: need == .recycle)
    }

    /// The kinds of a stream's items: at least two of each, in a seeded order.
    func kinds(of producer: Int) -> [QueueItemKind] {
        var random = SeededRandom(seed: seed ^ UInt64(producer + 1) &* 0x2545_F491_4F6C_DD1D)
        var kinds: [QueueItemKind] = [.small, .medium, .large, .handle, .small, .medium, .large, .handle]
        while kinds.count < counts[producer] {
            kinds.append(
                mediumHeavy ? .medium : [.small, .small, .medium, .large, .handle].randomElement(using: &random)!)
        }
        kinds.shuffle(using: &random)
        return Array(kinds.prefix(counts[producer]))
    }

    /// The byte count of an item.
    func size(of kind: QueueItemKind, producer: Int, number: Int) -> Int {
        var random = SeededRandom(seed: seed ^ UInt64(producer << 32 | number) &* 0x9E37_79B9_7F4A_7C15)
        switch kind {
        case .small, .handle: return Int.random(in: 1...48, using: &random)
        case .medium: return Int.random(in: capacity / 16...capacity / 4, using: &random)
        case .large: return Int.random(in: capacity / 2 + 1...capacity / 2 + min(capacity, 40 << 10), using: &random)
        }
    }

    /// The bytes of an item: not all alike, so a misplaced or torn chunk shows.
    static func bytes(producer: Int, number: Int, size: Int) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: size) { buffer, initialized in
            for offset in 0..<size {
                buffer[offset] = UInt8(
                    truncatingIfNeeded: offset &* 31 &+ number &* 7 &+ producer &* 101 &+ offset >> 10)
            }
            initialized = size
        }
    }

    /// The number a handle item's shared value holds.
    static func mark(producer: Int, number: Int) -> Int { 1_000_000 + producer * 1000 + number }

    func item(producer: Int, number: Int, kind: QueueItemKind) throws -> QueueFaultItem {
        let size = size(of: kind, producer: producer, number: number)
        return QueueFaultItem(
            producer: producer, number: number, bytes: Self.bytes(producer: producer, number: number, size: size),
            handle: kind == .handle ? try SharedValue(Self.mark(producer: producer, number: number)) : nil)
    }

    /// Why `item` is not the one that was put, or nil if it is.
    func damage(of item: QueueFaultItem) -> String? {
        guard item.producer >= 0, item.producer < counts.count, item.number >= 0, item.number < counts[item.producer]
        else { return "item \(item.number) of producer \(item.producer) was never planned" }
        let kind = kinds(of: item.producer)[item.number]
        let size = size(of: kind, producer: item.producer, number: item.number)
        if item.bytes != Self.bytes(producer: item.producer, number: item.number, size: size) {
            return "item \(item.number) of producer \(item.producer) (\(kind), \(size) bytes) came with other bytes "
                + "(\(item.bytes.count))"
        }
        if (kind == .handle) != (item.handle != nil)
            || item.handle.map({ $0.load() != Self.mark(producer: item.producer, number: item.number) }) == true
        {
            return "item \(item.number) of producer \(item.producer) came with a wrong shared value"
        }
        return nil
    }
}

// MARK: - The ledger

/// Shared memory where a case's processes write what they did, read by the runner once they
/// have ended (or, for progress, while they run): how many puts returned per stream, what
/// each consumer slot (a process, or a task of one) got, in order, how many it marked done,
/// whether it was inside a `get`, and which processes reached their end.
struct QueueLedger: Codable, Sendable {
    static let processes = 16
    static let slotHeader = 3
    static let entriesPerSlot = 120

    let cells: SharedArray<Int>
    let streams: Int
    let slots: Int

    init(streams: Int, slots: Int) throws {
        self.streams = streams
        self.slots = slots
        cells = try SharedArray(count: streams + Self.processes + slots * (Self.slotHeader + Self.entriesPerSlot))
    }

    func acked(_ stream: Int) -> Int { cells[stream] }
    func setAcked(_ stream: Int, _ count: Int) { cells[stream] = count }

    func finish(_ process: Int) { cells[streams + process] = 1 }
    func finished(_ process: Int) -> Bool { cells[streams + process] != 0 }

    /// Clear errors seen by a consumer at its descriptor limit (the last two process cells).
    var limitedErrors: Int { cells[streams + Self.processes - 1] }
    func noteLimitedError() { cells[streams + Self.processes - 1] += 1 }
    var limitedPhaseOver: Bool { cells[streams + Self.processes - 2] != 0 }
    func endLimitedPhase() { cells[streams + Self.processes - 2] = 1 }

    private func base(_ slot: Int) -> Int { streams + Self.processes + slot * (Self.slotHeader + Self.entriesPerSlot) }
    func count(_ slot: Int) -> Int { cells[base(slot)] }
    func done(_ slot: Int) -> Int { cells[base(slot) + 1] }
    func inGet(_ slot: Int) -> Bool { cells[base(slot) + 2] != 0 }
    func setInGet(_ slot: Int, _ flag: Bool) { cells[base(slot) + 2] = flag ? 1 : 0 }
    func markDone(_ slot: Int) { cells[base(slot) + 1] += 1 }

    /// Logs an item got: the entry first, then the count (an entry not counted is not read).
    func record(_ slot: Int, _ item: QueueFaultItem) throws {
        let count = count(slot)
        guard count < Self.entriesPerSlot else { throw QueueCaseFailure("slot \(slot) got too many items") }
        cells[base(slot) + Self.slotHeader + count] = item.producer << 20 | item.number
        cells[base(slot)] = count + 1
    }

    /// What slot `slot` got, in order: (producer, number).
    func entries(_ slot: Int) -> [(Int, Int)] {
        (0..<count(slot)).map {
            let entry = cells[base(slot) + Self.slotHeader + $0]
            return (entry >> 20, entry & 0xFFFFF)
        }
    }

    /// Puts returned and items got so far, for the runner to time a signal.
    var progress: Int {
        (0..<streams).reduce(0) { $0 + acked($1) } + (0..<slots).reduce(0) { $0 + count($1) }
    }
}

/// The blocking calls under names of their own: in an `async` function, the plain names
/// choose the `async` overloads.
extension ChildProcess {
    func blockingStart() throws { try start() }
    func blockingJoin(timeout: Duration) throws -> Bool { try join(timeout: timeout) }
}

extension Connection {
    func blockingReceive(timeout: Duration) throws -> Message? { try receive(timeout: timeout) }
}

extension JoinableQueue {
    func blockingPut(_ item: Element, timeout: Duration) throws -> Bool { try put(item, timeout: timeout) }
    func blockingGet(timeout: Duration) throws -> Element? { try get(timeout: timeout) }
    func blockingJoin(timeout: Duration) -> Bool { join(timeout: timeout) }
}

struct QueueCaseFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

// MARK: - The processes

/// Puts a stream's items, each with a timeout, the blocking or the async call (seeded); logs
/// each put that returned. Stops at `QueueError.closed` (an early close).
struct QueueProducer: ProcessTarget {
    var queue: JoinableQueue<QueueFaultItem>
    var plan: QueuePlan
    var ledger: QueueLedger
    var stream: Int
    var process: Int
    var usesAsync: Bool
    var fault: ArmedQueueFault?

    func run() async throws {
        fault?.arm()
        let kinds = plan.kinds(of: stream)
        for number in kinds.indices {
            let item = try plan.item(producer: stream, number: number, kind: kinds[number])
            let put: Bool
            do {
                put =
                    usesAsync
                    ? try await queue.put(item, timeout: .seconds(15))
                    : try queue.blockingPut(item, timeout: .seconds(15))
            } catch QueueError.closed {
                break
            }
            guard put else { throw QueueCaseFailure("producer \(stream) could not put item \(number) within 15 s") }
            ledger.setAcked(stream, number + 1)
        }
        ledger.finish(process)
    }
}

/// Puts one side item with its fault armed after the datagram is sent: dies leaving an
/// orphan datagram in the socket (stream `stream`, which no one expects).
struct QueueOrphanMaker: ProcessTarget {
    var queue: JoinableQueue<QueueFaultItem>
    var stream: Int
    var action: FaultInjection.Action

    func run() throws {
        FaultInjection.arm("queue.putSide.afterSend", action: action)
        try queue.put(QueueFaultItem(producer: stream, number: 0, bytes: [1, 2, 3], handle: try SharedValue(7)))
    }
}

/// Gets items until the queue is closed and empty, on one thread (one slot) or on several
/// tasks (a slot each, the async calls); checks each item, logs it, marks it done.
struct QueueConsumer: ProcessTarget {
    var queue: JoinableQueue<QueueFaultItem>
    var plan: QueuePlan
    var ledger: QueueLedger
    var slots: [Int]
    var process: Int
    var fault: ArmedQueueFault?

    func run() async throws {
        fault?.arm()
        if slots.count == 1 {
            let slot = slots[0]
            while true {
                ledger.setInGet(slot, true)
                let item: QueueFaultItem?
                do {
                    item = try queue.blockingGet(timeout: .seconds(15))
                } catch QueueError.closed {
                    break
                }
                try take(item, slot: slot)
            }
        } else {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for slot in slots {
                    group.addTask {
                        while true {
                            ledger.setInGet(slot, true)
                            let item: QueueFaultItem?
                            do {
                                item = try await queue.get(timeout: .seconds(15))
                            } catch QueueError.closed {
                                break
                            }
                            try take(item, slot: slot)
                        }
                    }
                }
                try await group.waitForAll()
            }
        }
        ledger.finish(process)
    }

    private func take(_ item: QueueFaultItem?, slot: Int) throws {
        guard let item else { throw QueueCaseFailure("no item within 15 s, and the queue not closed") }
        if let damage = plan.damage(of: item) { throw QueueCaseFailure(damage) }
        try ledger.record(slot, item)
        ledger.setInGet(slot, false)
        try queue.taskDone()
        ledger.markDone(slot)
    }
}

/// Closes the queue.
struct QueueCloser: ProcessTarget {
    var queue: JoinableQueue<QueueFaultItem>
    var ledger: QueueLedger
    var process: Int
    var fault: ArmedQueueFault?

    func run() {
        fault?.arm()
        queue.close()
        ledger.finish(process)
    }
}

/// Waits for every task to be done.
struct QueueJoiner: ProcessTarget {
    var queue: JoinableQueue<QueueFaultItem>
    var ledger: QueueLedger
    var process: Int
    var fault: ArmedQueueFault?

    func run() throws {
        fault?.arm()
        guard queue.join(timeout: .seconds(30)) else {
            throw QueueCaseFailure("join: tasks still unfinished after 30 s (\(queue.unfinishedTasks))")
        }
        ledger.finish(process)
    }
}

/// The case's parent for the parent faults: makes the queue, hands it to the runner, and
/// runs producers, consumers and a joiner of its own until the runner signals it.
struct QueueParent: ProcessTarget {
    var plan: QueuePlan
    var ledger: QueueLedger
    var channel: Connection<JoinableQueue<QueueFaultItem>>
    var consumerSlots: [[Int]]
    var methods: [StartMethod]

    func run() async throws {
        let queue = try JoinableQueue<QueueFaultItem>(maxSize: plan.maxSize, capacity: plan.capacity)
        try await channel.send(queue)
        var children: [ChildProcess] = []
        for stream in plan.counts.indices {
            children.append(
                ChildProcess(
                    QueueProducer(
                        queue: queue, plan: plan, ledger: ledger, stream: stream, process: stream,
                        usesAsync: stream.isMultiple(of: 2)),
                    startMethod: methods[children.count % methods.count]))
        }
        for (index, slots) in consumerSlots.enumerated() {
            children.append(
                ChildProcess(
                    QueueConsumer(
                        queue: queue, plan: plan, ledger: ledger, slots: slots, process: plan.counts.count + index),
                    startMethod: methods[children.count % methods.count]))
        }
        for child in children { try await child.start() }
        for child in children.prefix(plan.counts.count) { try await child.join() }
        queue.close()
        for child in children.dropFirst(plan.counts.count) { try await child.join() }
    }
}

// MARK: - The scenario

enum QueueScenario: FaultScenario {
    static let object = "Queue"

    static func run(_ point: FaultPoint) async throws -> CaseOutcome {
        if let action = point.fault.childAction { return try await childFault(point, action) }
        if let signal = point.fault.parentSignal { return try await parentFault(point, signal) }
        return try await descriptorLimit(point)
    }

    /// Where a case's lines of coverage go: the step, and whether the fault struck there.
    static func noteCoverage(_ point: FaultPoint, _ step: String, struck: Bool, error: String = "") {
        let directory = FaultMatrix.reportDirectory
        mkdir(directory, 0o755)
        let line = "\(point.fault.rawValue) \(point.index) \(step) \(struck ? "struck" : "missed") \(error)\n"
        let fd = open("\(directory)/Queue-steps.log", O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        guard fd >= 0 else { return }
        defer { close(fd) }
        _ = line.utf8CString.withUnsafeBufferPointer { write(fd, $0.baseAddress, $0.count - 1) }
    }

    // MARK: Child faults

    /// Producers, consumers (one of them on two tasks), a closer or a joiner at times, one
    /// of them dying at the point's step.
    static func childFault(_ point: FaultPoint, _ action: FaultInjection.Action) async throws -> CaseOutcome {
        var random = point.random
        let step = QueueStep.all[point.index % QueueStep.all.count]
        let streams = Int.random(in: 2...3, using: &random)
        let plan = QueuePlan.make(&random, need: step.need, streams: streams)
        // Consumer 0 is the one that dies when a consumer does: one slot, so that what it
        // took is known exactly. Consumer 1 runs one or two tasks.
        let consumerSlots: [[Int]] = Bool.random(using: &random) ? [[0], [1, 2]] : [[0], [1]]
        let slotCount = consumerSlots.joined().count
        let ledger = try QueueLedger(streams: streams, slots: slotCount)
        let queue = try JoinableQueue<QueueFaultItem>(maxSize: plan.maxSize, capacity: plan.capacity)
        let methods: [StartMethod] = (0..<6).map { _ in
            Int.random(in: 0..<5, using: &random) == 0 ? .spawn : .forkserver
        }
        let consumerProcess = streams
        let closerProcess = streams + consumerSlots.count
        let joinerProcess = closerProcess + 1
        var run = QueueCaseRun(deadline: .now.advanced(by: .seconds(40)))

        // Who dies, and on which pass of the step.
        let faultyProducer = Int.random(in: 0..<streams, using: &random)
        var hits = 0
        switch step.need {
        case .ringItem where step.role == .producer:
            hits = Int.random(in: 0..<plan.kinds(of: faultyProducer).filter { !$0.isSide }.count, using: &random)
        case .sideItem where step.role == .producer:
            hits = Int.random(in: 0..<plan.kinds(of: faultyProducer).filter(\.isSide).count, using: &random)
        case .ringItem, .sideItem: hits = Int.random(in: 0..<2, using: &random)
        case .recycle: hits = Int.random(in: 0..<2, using: &random)
        default: hits = step.name == "queue.taskDone.afterCount" ? Int.random(in: 0..<3, using: &random) : 0
        }
        let fault = ArmedQueueFault(step: step.name, hits: hits, action: action)
        let closesEarly = (step.role == .consumer || step.role == .joiner) && Int.random(in: 0..<4, using: &random) == 0
        let hasJoiner = step.role == .joiner || Bool.random(using: &random)
        let startsAlone = step.need == .orphan || step.need == .recycle || Bool.random(using: &random)

        // An orphan datagram first, for the step that drops one.
        if step.need == .orphan {
            let maker = ChildProcess(
                QueueOrphanMaker(queue: queue, stream: streams, action: .kill), startMethod: methods[0])
            try maker.blockingStart()
            _ = run.end(maker, "the orphan maker", expectsFault: true)
        }

        // A skip marker left for a consumer, for the step that steps over one: producer 0 is
        // killed between publishing the marker and stepping the head over it (otherwise the
        // producer steps the head itself, unless a consumer holds the lock at that instant).
        let markerMaker =
            step.name == "queue.get.afterSkip"
            ? ArmedQueueFault(step: "queue.recycle.afterMarker", hits: 0, action: .kill) : nil
        let producers = (0..<streams).map { stream in
            ChildProcess(
                QueueProducer(
                    queue: queue, plan: plan, ledger: ledger, stream: stream, process: stream,
                    usesAsync: Bool.random(using: &random),
                    fault: step.role == .producer && stream == faultyProducer ? fault : stream == 0 ? markerMaker : nil),
                startMethod: methods[stream])
        }
        let consumers = consumerSlots.enumerated().map { index, slots in
            ChildProcess(
                QueueConsumer(
                    queue: queue, plan: plan, ledger: ledger, slots: slots, process: consumerProcess + index,
                    fault: step.role == .consumer && index == 0 ? fault : nil),
                startMethod: methods[3 + index])
        }
        let joiner =
            hasJoiner
            ? ChildProcess(
                QueueJoiner(
                    queue: queue, ledger: ledger, process: joinerProcess, fault: step.role == .joiner ? fault : nil),
                startMethod: methods[5]) : nil

        // A consumer that must find the queue empty starts alone.
        var consumersStarted = 0
        if step.need == .emptyWait {
            try consumers[0].blockingStart()
            consumersStarted = 1
            _ = QueueCaseRun.waitUntil(within: .milliseconds(300)) { !consumers[0].isAlive }
        }
        for producer in producers { try producer.blockingStart() }
        if let joiner {
            // Started while a task is unfinished (no consumer has run yet), so that it waits.
            _ = QueueCaseRun.waitUntil(within: .seconds(5)) {
                ledger.progress > 0 || producers.allSatisfy { !$0.isAlive }
            }
            try joiner.blockingStart()
        }
        if step.need == .fullWait {
            // No consumer until the faulty producer found the queue full and died there.
            _ = QueueCaseRun.waitUntil(within: .milliseconds(300)) { !producers[faultyProducer].isAlive }
        }
        // Half the time the consumer that dies starts alone, so that it surely takes its
        // `hits + 1` items (the others start once it died, or when nothing is left for it);
        // otherwise all start at once, and the others are waiting on the lock it dies holding.
        if step.role == .consumer && consumersStarted == 0 && startsAlone {
            try consumers[0].blockingStart()
            consumersStarted = 1
            // Longer for the skip marker: it comes only once producer 0 goes back to the start.
            _ = QueueCaseRun.waitUntil(within: markerMaker != nil ? .seconds(10) : .seconds(3)) {
                !consumers[0].isAlive || (producers.allSatisfy { !$0.isAlive } && queue.isEmpty)
            }
        }
        for consumer in consumers.dropFirst(consumersStarted) { try consumer.blockingStart() }
        if closesEarly {
            let after = Int.random(in: 1...plan.counts.reduce(0, +) / 2, using: &random)
            _ = QueueCaseRun.waitUntil(within: .seconds(5)) {
                (0..<streams).reduce(0) { $0 + ledger.acked($1) } >= after
            }
            queue.close()
        }

        var struck = false
        for (index, producer) in producers.enumerated() {
            let isFaulty = step.role == .producer && index == faultyProducer
            let ended = run.end(
                producer, "producer \(index)", expectsFault: isFaulty || (index == 0 && markerMaker != nil))
            if isFaulty { struck = ended && !ledger.finished(index) }
        }
        if step.role == .closer {
            let closer = ChildProcess(
                QueueCloser(queue: queue, ledger: ledger, process: closerProcess, fault: fault),
                startMethod: methods[2])
            try closer.blockingStart()
            struck = run.end(closer, "the closer", expectsFault: true) && !ledger.finished(closerProcess)
        }
        // Closed again by the runner (a no-op if the closer got that far): it must not hang on
        // a lock the closer died holding.
        queue.close()
        for (index, consumer) in consumers.enumerated() {
            let isFaulty = step.role == .consumer && index == 0
            let ended = run.end(consumer, "consumer \(index)", expectsFault: isFaulty)
            if isFaulty { struck = ended && !ledger.finished(consumerProcess) }
        }

        // What is left in the queue.
        let drained = run.drain(queue, plan: plan)
        // The tasks: every item got is marked done by now except those the dead consumer took
        // and did not mark; the runner marks them. One more, or one fewer, must be an error.
        var unmarked = 0
        if step.role == .consumer && struck {
            unmarked = ledger.count(0) - ledger.done(0)
            if QueueStep.afterTaking.contains(step.name) { unmarked += 1 }
            if step.name == "queue.taskDone.afterCount" { unmarked -= 1 }
        }
        run.settleTasks(queue, expected: unmarked)
        if let joiner {
            let isFaulty = step.role == .joiner
            let ended = run.end(joiner, "the joiner", expectsFault: isFaulty)
            if isFaulty { struck = ended && !ledger.finished(joinerProcess) }
        }

        let taken = step.role == .consumer && struck && QueueStep.afterTaking.contains(step.name) ? 1 : 0
        run.verify(
            ledger: ledger, plan: plan, drained: drained,
            inFlight: (0..<streams).map { step.role == .producer && struck && $0 == faultyProducer ? 1 : 0 },
            mayBeMissing: taken, exactly: true)
        noteCoverage(
            point, step.name + (step.role == .producer && step.name == "queue.wait.counted" ? "@producer" : ""),
            struck: struck)
        return run.outcome
    }

    // MARK: Parent faults

    /// A parent that made the queue runs producers and consumers; the runner holds a handle
    /// too, and signals the parent once some items went through.
    static func parentFault(_ point: FaultPoint, _ signal: Int32) async throws -> CaseOutcome {
        var random = point.random
        let streams = Int.random(in: 2...3, using: &random)
        let plan = QueuePlan.make(&random, need: .none, streams: streams)
        let consumerSlots: [[Int]] = Bool.random(using: &random) ? [[0], [1, 2]] : [[0], [1]]
        let ledger = try QueueLedger(streams: streams, slots: consumerSlots.joined().count)
        let methods: [StartMethod] = Bool.random(using: &random) ? [.forkserver] : [.forkserver, .spawn]
        let (mine, theirs) = try Connection<JoinableQueue<QueueFaultItem>>.pair()
        var run = QueueCaseRun(deadline: .now.advanced(by: .seconds(40)))
        let before = Set(descendantProcesses())

        let parent = ChildProcess(
            QueueParent(plan: plan, ledger: ledger, channel: theirs, consumerSlots: consumerSlots, methods: methods),
            startMethod: Bool.random(using: &random) ? .spawn : .forkserver)
        try parent.blockingStart()
        guard let queue = try mine.blockingReceive(timeout: .seconds(20)) else {
            run.problem("the parent sent no queue within 20 s")
            parent.kill()
            _ = try? parent.blockingJoin(timeout: .seconds(10))
            return run.outcome
        }
        let total = plan.counts.reduce(0, +)
        // Progress counts puts and gets: at most half of it, so that the parent is mid-work.
        let after = Int.random(in: 1...total, using: &random)
        _ = QueueCaseRun.waitUntil(within: .seconds(10)) { ledger.progress >= after || !parent.isAlive }
        let signalled = parent.isAlive
        parent.send(signal: ProcessSignal(rawValue: signal))
        // A signal sent by this process is no failure of the child's (join does not throw);
        // its termination says how it ended.
        do {
            if try parent.blockingJoin(timeout: .seconds(10)) {
                if parent.termination == .signaled(ProcessSignal(rawValue: signal)) {
                    run.outcome.errorSeen = "the parent \(parent.termination!)"
                } else if signalled && !(parent.termination == .exited(0) && queue.isClosed) {
                    // Exit status 0 with the queue closed: the parent had finished its work
                    // (it closes the queue once its producers are done) and exited before the
                    // signal arrived; `isAlive` was read just before (seeds 5, 7 and 9 at 5
                    // points found it).
                    run.problem("the parent \(parent.termination!) after \(ProcessSignal(rawValue: signal))")
                }
            } else {
                run.problem("the parent did not end within 10 s of \(ProcessSignal(rawValue: signal))")
                parent.kill()
                _ = try? parent.blockingJoin(timeout: .seconds(10))
            }
        } catch {
            run.problem("the parent ended otherwise than by \(ProcessSignal(rawValue: signal)): \(error)")
        }
        // Every process the parent made dies with it (they are re-parented to the runner, a
        // subreaper, and reaped here).
        let gone = QueueCaseRun.waitUntil(within: .seconds(10)) {
            reapOrphans(keeping: before)
            return Set(descendantProcesses()).subtracting(before).isEmpty
        }
        if !gone {
            run.problem("the parent's children outlived it by 10 s: \(Set(descendantProcesses()).subtracting(before))")
        }

        // The runner's handle still works: nothing a dead process held blocks it.
        let drained = run.drain(queue, plan: plan, closed: false)
        let inGet = (0..<ledger.slots).filter { ledger.inGet($0) }.count
        run.verify(
            ledger: ledger, plan: plan, drained: drained, inFlight: Array(repeating: 1, count: streams),
            mayBeMissing: inGet, exactly: false)
        // The parent may have closed the queue already (its producers done): puts are refused
        // then, rightly.
        do {
            if queue.isClosed { throw QueueError.closed }
            let probe = try plan.item(producer: 0, number: 0, kind: .handle)
            let large = try plan.item(producer: 0, number: 1, kind: .large)
            let countBefore = queue.count
            // One at a time: the queue may hold a single item (maxSize 1).
            let putProbe = try queue.blockingPut(probe, timeout: .seconds(5))
            let first = try queue.blockingGet(timeout: .seconds(5))
            let putLarge = try queue.blockingPut(large, timeout: .seconds(5))
            let second = try queue.blockingGet(timeout: .seconds(5))
            if !putProbe || !putLarge || first?.handle?.load() != probe.handle?.load() || second?.bytes != large.bytes {
                run.problem(
                    "the queue did not carry items after the parent died: count \(countBefore) before, puts "
                        + "\(putProbe) \(putLarge), first \(first.map { "\($0.producer).\($0.number) \($0.bytes.count) bytes" } ?? "nil"), "
                        + "second \(second.map { "\($0.producer).\($0.number) \($0.bytes.count) bytes" } ?? "nil"), count \(queue.count), "
                        + "maxSize \(String(describing: queue.maxSize)), capacity \(queue.capacity)")
                return run.outcome
            }
        } catch QueueError.closed where queue.isClosed {
        } catch {
            run.problem("the queue failed after the parent died: \(error)")
        }
        queue.close()
        while (try? queue.taskDone()) != nil {}
        if !queue.blockingJoin(timeout: .seconds(5)) { run.problem("join hung once every task was marked done") }
        noteCoverage(point, "parent.midWork", struck: signalled)
        return run.outcome
    }

    /// Reaps the zombies among this process's children that are not in `keeping`.
    static func reapOrphans(keeping: Set<Int32>) {
        for pid in childProcesses() where !keeping.contains(pid) {
            var status: Int32 = 0
            _ = waitpid(pid, &status, WNOHANG)
        }
    }

    // MARK: Spawn failure

    /// The descriptor limit (RLIMIT_NOFILE) lowered, in the runner or in a consumer, so that
    /// making the queue, putting an item that needs a descriptor, getting one that carries
    /// descriptors, or starting a process runs out of them at a seeded point. Each must either
    /// work or throw an error that names the limit, leave nothing half-made, and leave the
    /// item where it was; once the limit is restored, everything works and nothing is lost.
    /// (The process limit is not used: RLIMIT_NPROC does not bind root, which CI runs as.)
    static func descriptorLimit(_ point: FaultPoint) async throws -> CaseOutcome {
        var random = point.random
        // Streams 0 and 1 are producer processes, stream 2 the runner's own puts.
        let made = QueuePlan.make(&random, need: .none, streams: 3)
        let plan = QueuePlan(seed: made.seed, capacity: made.capacity, maxSize: nil, counts: made.counts)
        let ledger = try QueueLedger(streams: 3, slots: 3)
        var run = QueueCaseRun(deadline: .now.advanced(by: .seconds(40)))
        let inChild = Bool.random(using: &random)
        // A consumer needs one descriptor per handle item it gets: with more room it rarely
        // runs out, which is a point too, but a rarer one.
        let free = Int.random(in: 0...(inChild ? 1 : 3), using: &random)
        let makesFirst = inChild || Bool.random(using: &random)
        let methods: [StartMethod] = (0..<4).map { _ in Bool.random(using: &random) ? .spawn : .forkserver }
        let limitedTries = Int.random(in: 2...6, using: &random)

        var queue: JoinableQueue<QueueFaultItem>? = nil
        var producers: [ChildProcess] = []
        var consumers: [ChildProcess] = []
        var got: [(Int, Int)] = []
        var runnerPuts = 0
        func startProducers(_ queue: JoinableQueue<QueueFaultItem>) async throws {
            for stream in 0..<2 {
                let producer = ChildProcess(
                    QueueProducer(
                        queue: queue, plan: plan, ledger: ledger, stream: stream, process: stream,
                        usesAsync: stream == 0),
                    startMethod: methods[stream])
                try producer.blockingStart()
                producers.append(producer)
            }
        }
        if makesFirst {
            let made = try JoinableQueue<QueueFaultItem>(capacity: plan.capacity)
            queue = made
            try await startProducers(made)
            _ = QueueCaseRun.waitUntil(within: .seconds(5)) { ledger.progress >= 6 }
        }

        if inChild {
            // A consumer that lowers its own limit for its first gets, then restores it.
            let limited = ChildProcess(
                QueueLimitedConsumer(
                    consumer: QueueConsumer(queue: queue!, plan: plan, ledger: ledger, slots: [0], process: 2),
                    free: free, tries: limitedTries),
                startMethod: methods[2])
            try limited.blockingStart()
            consumers.append(limited)
            _ = QueueCaseRun.waitUntil(within: .seconds(5)) { ledger.limitedPhaseOver || !limited.isAlive }
        } else {
            var saved = rlimit()
            getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &saved)
            var lowered = saved
            lowered.rlim_cur = rlim_t(limitLeaving(free))
            setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &lowered)
            defer { setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &saved) }
            func attempt(_ what: String, _ body: () async throws -> Void) async {
                let before = openDescriptors()
                do {
                    try await body()
                } catch {
                    if QueueScenario.namesDescriptorLimit(error) {
                        run.outcome.errorSeen = "\(error)"
                    } else {
                        run.problem("\(what) at the descriptor limit threw an unclear error: \(error)")
                    }
                    let after = openDescriptors()
                    if after != before {
                        run.problem(
                            "\(what) failed and left descriptors: \(after.filter { before[$0.key] != $0.value })")
                    }
                }
            }
            if queue == nil {
                await attempt("making a queue") { queue = try JoinableQueue<QueueFaultItem>(capacity: plan.capacity) }
            }
            if let queue {
                for _ in 0..<(makesFirst ? limitedTries : 0) {
                    await attempt("a get") {
                        guard let item = try queue.blockingGet(timeout: .milliseconds(500)) else { return }
                        if let damage = plan.damage(of: item) { run.problem(damage) }
                        got.append((item.producer, item.number))
                        try queue.taskDone()
                    }
                }
                let kinds = plan.kinds(of: 2)
                await attempt("a put") {
                    let item = try plan.item(producer: 2, number: 0, kind: kinds[0])
                    // No consumer has run yet: the ring may be full (nothing is put then).
                    guard try queue.blockingPut(item, timeout: .seconds(1)) else { return }
                    runnerPuts = 1
                    ledger.setAcked(2, 1)
                }
                await attempt("starting a consumer") {
                    let consumer = ChildProcess(
                        QueueConsumer(queue: queue, plan: plan, ledger: ledger, slots: [1], process: 3),
                        startMethod: methods[3])
                    try consumer.blockingStart()
                    consumers.append(consumer)
                }
            }
        }

        // The limit restored: everything works again.
        let queueNow: JoinableQueue<QueueFaultItem>
        if let queue {
            queueNow = queue
        } else {
            queueNow = try JoinableQueue<QueueFaultItem>(capacity: plan.capacity)
            queue = queueNow
        }
        if producers.isEmpty { try await startProducers(queueNow) }
        if consumers.count < 2 {
            // Slot 2: slots 0 and 1 belong to the consumers started before.
            let consumer = ChildProcess(
                QueueConsumer(queue: queueNow, plan: plan, ledger: ledger, slots: [2], process: 4),
                startMethod: methods[3])
            try consumer.blockingStart()
            consumers.append(consumer)
        }
        let kinds = plan.kinds(of: 2)
        for number in runnerPuts..<plan.counts[2] {
            let item = try plan.item(producer: 2, number: number, kind: kinds[number])
            guard try queueNow.blockingPut(item, timeout: .seconds(5))
            else {
                run.problem("the runner's put waited 5 s on an unbounded queue")
                break
            }
            ledger.setAcked(2, number + 1)
        }
        for (index, producer) in producers.enumerated() {
            _ = run.end(producer, "producer \(index)", expectsFault: false)
        }
        queueNow.close()
        for (index, consumer) in consumers.enumerated() {
            _ = run.end(consumer, "consumer \(index)", expectsFault: false)
        }
        got += run.drain(queueNow, plan: plan)
        run.settleTasks(queueNow, expected: 0)
        run.verify(
            ledger: ledger, plan: plan, drained: got, inFlight: [0, 0, 0], mayBeMissing: 0, exactly: true)
        if inChild && ledger.limitedErrors > 0 && run.outcome.errorSeen.isEmpty {
            run.outcome.errorSeen = "a consumer at its descriptor limit saw \(ledger.limitedErrors) clear errors"
        }
        noteCoverage(
            point, inChild ? "limit.consumer" : "limit.runner",
            struck: !run.outcome.errorSeen.isEmpty, error: run.outcome.errorSeen)
        return run.outcome
    }

    /// Whether an error says that the descriptor limit was reached.
    static func namesDescriptorLimit(_ error: any Error) -> Bool {
        let text = "\(error)"
        return text.contains("EMFILE") || text.contains("Too many open files") || text.contains("RLIMIT_NOFILE")
    }

    /// A soft descriptor limit that leaves exactly `free` descriptor numbers unused below it.
    static func limitLeaving(_ free: Int) -> Int {
        let open = openDescriptors()
        var limit = 0
        var unused = 0
        while true {
            if open[Int32(limit)] == nil {
                if unused == free { return limit }
                unused += 1
            }
            limit += 1
        }
    }
}

/// A consumer that lowers its own descriptor limit (to leave `free` descriptors) for its
/// first `tries` gets, noting each clear error (the item stays in the queue), then restores
/// it and goes on as a plain consumer.
struct QueueLimitedConsumer: ProcessTarget {
    var consumer: QueueConsumer
    var free: Int
    var tries: Int

    func run() async throws {
        let ledger = consumer.ledger
        let slot = consumer.slots[0]
        var saved = rlimit()
        getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &saved)
        var lowered = saved
        lowered.rlim_cur = rlim_t(QueueScenario.limitLeaving(free))
        setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &lowered)
        for _ in 0..<tries {
            do {
                guard let item = try consumer.queue.blockingGet(timeout: .milliseconds(500)) else { continue }
                if let damage = consumer.plan.damage(of: item) { throw QueueCaseFailure(damage) }
                try ledger.record(slot, item)
                try consumer.queue.taskDone()
                ledger.markDone(slot)
            } catch let error where QueueScenario.namesDescriptorLimit(error) {
                ledger.noteLimitedError()
            }
        }
        setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &saved)
        ledger.endLimitedPhase()
        try await consumer.run()
    }
}

// MARK: - A case's bookkeeping in the runner

/// The runner's side of a case: the deadline every wait counts against, the problems found,
/// what it drained.
struct QueueCaseRun {
    var deadline: ContinuousClock.Instant
    var outcome = CaseOutcome()

    mutating func problem(_ text: String) { outcome.problems.append(text) }

    /// Whether `condition` holds within `timeout`, looked at every 5 ms (the task sleeps in
    /// between).
    ///
    /// Blocking: `Task.sleep` would make libdispatch open a timer descriptor for the rest of
    /// the runner's life, which the leak check would count; the runner runs nothing else.
    static func waitUntil(within timeout: Duration, _ condition: () -> Bool) -> Bool {
        let deadline = ContinuousClock.now.advanced(by: timeout)
        while ContinuousClock.now < deadline {
            if condition() { return true }
            usleep(5000)
        }
        return condition()
    }

    var remaining: Duration { max(.milliseconds(100), deadline - .now) }

    /// Waits for `child` to end. A healthy one must succeed; one armed with a fault may die
    /// (its error is noted) or succeed (the fault never struck, or was `exit(0)`). Returns
    /// whether it ended.
    mutating func end(_ child: ChildProcess, _ name: String, expectsFault: Bool) -> Bool {
        do {
            guard try child.blockingJoin(timeout: remaining) else {
                problem("\(name) did not end within the case's bound")
                child.kill()
                _ = try? child.blockingJoin(timeout: .seconds(10))
                return false
            }
            return true
        } catch let error as ChildProcessError {
            if expectsFault, case .terminated = error.reason {
                outcome.errorSeen = "\(error)"
                return true
            }
            problem("\(name) failed: \(error)")
            return false
        } catch {
            problem("\(name): \(error)")
            return false
        }
    }

    /// Takes every item left in `queue` (closed: until `QueueError.closed`; open: until none
    /// comes), checking each, marking each done.
    mutating func drain(_ queue: JoinableQueue<QueueFaultItem>, plan: QueuePlan, closed: Bool = true) -> [(Int, Int)] {
        var drained: [(Int, Int)] = []
        while true {
            do {
                guard let item = try queue.get(timeout: closed ? .seconds(5) : .milliseconds(200)) else {
                    if closed { problem("a get on a closed queue waited 5 s instead of saying closed") }
                    break
                }
                if let damage = plan.damage(of: item) { problem("drained: \(damage)") }
                drained.append((item.producer, item.number))
                try queue.taskDone()
            } catch QueueError.closed {
                break
            } catch {
                problem("draining the queue: \(error)")
                break
            }
        }
        return drained
    }

    /// Marks the tasks left unmarked by a dead consumer: exactly `expected` of them; then
    /// `join` must return at once.
    mutating func settleTasks(_ queue: JoinableQueue<QueueFaultItem>, expected: Int) {
        var marked = 0
        while (try? queue.taskDone()) != nil { marked += 1 }
        if marked != expected {
            problem("\(marked) tasks were left unfinished; \(expected) expected (the dead consumer's)")
        }
        if !queue.join(timeout: .seconds(5)) { problem("join waited with every task marked done") }
    }

    /// Checks what was got against what was put: each acknowledged item exactly once, in
    /// order per producer; at most `inFlight[stream]` items beyond those acknowledged (a put
    /// that published and died before returning); `mayBeMissing` acknowledged items missing
    /// (taken by consumers that died before logging them); `exactly`: that many, no fewer.
    mutating func verify(
        ledger: QueueLedger, plan: QueuePlan, drained: [(Int, Int)], inFlight: [Int], mayBeMissing: Int,
        exactly: Bool
    ) {
        var seen: [[Bool]] = plan.counts.map { Array(repeating: false, count: $0) }
        let lists = (0..<ledger.slots).map { ledger.entries($0) } + [drained]
        for (index, list) in lists.enumerated() {
            let who = index == ledger.slots ? "the runner's drain" : "consumer slot \(index)"
            var last: [Int: Int] = [:]
            for (producer, number) in list {
                guard producer < plan.counts.count, number < plan.counts[producer] else {
                    problem("\(who) got item \(number) of producer \(producer), which no put published")
                    continue
                }
                if seen[producer][number] { problem("item \(number) of producer \(producer) was got twice") }
                seen[producer][number] = true
                if let previous = last[producer], previous >= number {
                    problem("\(who) got item \(number) of producer \(producer) after item \(previous)")
                }
                last[producer] = number
                if number >= ledger.acked(producer) + inFlight[producer] {
                    problem(
                        "item \(number) of producer \(producer) was got, but its producer's puts returned only "
                            + "\(ledger.acked(producer)) times")
                }
            }
        }
        var missing: [String] = []
        for producer in plan.counts.indices {
            for number in 0..<ledger.acked(producer) where !seen[producer][number] {
                missing.append("\(producer).\(number)")
            }
        }
        if missing.count > mayBeMissing {
            outcome.lost += missing.count - mayBeMissing
            problem("items put and never got (producer.number): \(missing)")
        } else if exactly && missing.count < mayBeMissing {
            problem("the item taken by the consumer that died after stepping the head came out again")
        }
    }
}
