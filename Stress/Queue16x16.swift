// queue-16x16: one queue, 16 producer processes, 16 consumer processes, and the parent putting
// and getting from several threads at the same time.

import Multiprocessing
import Synchronization

/// An item: who put it and its number in that producer's sequence; some carry a payload.
struct Ticket: Codable, Sendable {
    var producer: Int
    var sequence: Int
    /// Empty, or ``bigSize`` bytes of `sequence`'s low byte.
    var payload: [UInt8] = []

    /// More than half the queue's ring (64 KiB) and more than 32 KiB: such an item goes
    /// through the queue's socket, its bytes in a memory file of their own.
    static let bigSize = 40 * 1024

    /// The ticket `sequence` of `producer`: big when `bigEvery` divides `sequence + 1`.
    init(producer: Int, sequence: Int, bigEvery: Int) {
        self.producer = producer
        self.sequence = sequence
        if (sequence + 1).isMultiple(of: bigEvery) {
            payload = [UInt8](repeating: UInt8(truncatingIfNeeded: sequence), count: Self.bigSize)
        }
    }

    /// Throws unless the payload is what ``init(producer:sequence:bigEvery:)`` made.
    func checkPayload(bigEvery: Int) throws {
        let expected = Ticket(producer: producer, sequence: sequence, bigEvery: bigEvery).payload
        guard payload == expected else {
            throw StressFailure(
                "producer \(producer)'s ticket \(sequence) came with \(payload.count) payload bytes, "
                    + "not the \(expected.count) put")
        }
    }

    /// Producer and sequence in one `Int`, for the consumers' lists (an `[Int]` travels as raw bytes).
    var packed: Int { producer << 32 | sequence }
}

/// A producer process: puts `count` tickets, in sequence.
struct Producer: ProcessTarget {
    let queue: Queue<Ticket>
    var producer: Int
    var count: Int
    var bigEvery: Int

    func run() throws {
        for sequence in 0..<count {
            try queue.put(Ticket(producer: producer, sequence: sequence, bigEvery: bigEvery))
        }
    }
}

/// A consumer process: gets tickets until the queue is closed and empty; returns them packed,
/// in the order it got them.
struct Consumer: ProcessFunction {
    let queue: Queue<Ticket>
    var bigEvery: Int

    func callAsFunction(_ consumer: Int) throws -> [Int] {
        try getAll(from: queue, bigEvery: bigEvery)
    }
}

/// Gets tickets until the queue is closed and empty, checking each payload; returns them
/// packed, in the order got.
func getAll(from queue: Queue<Ticket>, bigEvery: Int) throws -> [Int] {
    var got: [Int] = []
    while true {
        let ticket: Ticket
        do {
            ticket = try queue.get()
        } catch QueueError.closed {
            return got
        }
        try ticket.checkPayload(bigEvery: bigEvery)
        got.append(ticket.packed)
    }
}

/// One `Queue` (bounded at 1,000 items, so puts wait too) with 16 producer processes and 16
/// consumer processes (half of each spawned, half from the fork server), while 4 threads of
/// the parent put as 4 more producers and 4 others get. One ticket in 500 carries 40 KiB, and
/// goes through the queue's socket in a memory file (its ring is 64 KiB). When every producer
/// is done, the queue is closed; each consumer returns what it got. Checks: every ticket of
/// every producer was got exactly once, with its payload intact, and each getter got each
/// producer's tickets in order (FIFO).
let queue16x16 = Scenario(
    name: "queue-16x16",
    summary:
        "one queue, 16 producer + 16 consumer processes, 4 putting and 4 getting threads in the parent, 1 item in 500 big",
    fullDeadline: .seconds(240)
) { size in
    let processes = 16
    let threads = 4
    let perProducer = size.pick(50_000, tiny: 200)
    let bigEvery = size.pick(500, tiny: 50)
    // A ring of 64 KiB: the 1,000 small items fit, the big ones go through the socket.
    let queue = try Queue<Ticket>(maxSize: 1_000, capacity: 64 * 1024)

    async let consumed = withThrowingTaskGroup(of: [Int].self) { group in
        for consumer in 0..<processes {
            group.addTask {
                try await ChildProcess.run(
                    Consumer(queue: queue, bigEvery: bigEvery), with: consumer,
                    startMethod: consumer.isMultiple(of: 2) ? .spawn : .forkserver)
            }
        }
        var lists: [[Int]] = []
        for try await list in group { lists.append(list) }
        return lists
    }
    async let gotHere = withThrowingTaskGroup(of: [Int].self) { group in
        for _ in 0..<threads {
            group.addTask {
                try await onThread { try getAll(from: queue, bigEvery: bigEvery) }
            }
        }
        var lists: [[Int]] = []
        for try await list in group { lists.append(list) }
        return lists
    }

    do {
        let producers = (0..<processes).map { producer in
            ChildProcess(
                Producer(queue: queue, producer: producer, count: perProducer, bigEvery: bigEvery),
                startMethod: producer.isMultiple(of: 2) ? .forkserver : .spawn)
        }
        for producer in producers { try await producer.start() }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for thread in 0..<threads {
                group.addTask {
                    try await onThread {
                        for sequence in 0..<perProducer {
                            try queue.put(Ticket(producer: processes + thread, sequence: sequence, bigEvery: bigEvery))
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
        StressProgress.add(to: "parent's puts done")
        for producer in producers { try await producer.join() }
        StressProgress.add(to: "producers joined")
    } catch {
        // The getters would wait for items forever: closing the queue ends them.
        queue.close()
        throw error
    }
    // Every item is in: consumers take what is left, then see the queue closed.
    queue.close()

    let lists = try await consumed + gotHere
    var seen = [[Bool]](repeating: [Bool](repeating: false, count: perProducer), count: processes + threads)
    for (getter, list) in lists.enumerated() {
        var last = [Int](repeating: -1, count: processes + threads)
        for packed in list {
            let (producer, sequence) = (packed >> 32, packed & 0xFFFF_FFFF)
            guard seen.indices.contains(producer), seen[producer].indices.contains(sequence) else {
                throw StressFailure("getter \(getter) got a ticket never put: producer \(producer), number \(sequence)")
            }
            guard !seen[producer][sequence] else {
                throw StressFailure("producer \(producer)'s ticket \(sequence) was got twice")
            }
            guard sequence > last[producer] else {
                throw StressFailure(
                    "getter \(getter) got producer \(producer)'s ticket \(sequence) after its ticket \(last[producer])")
            }
            seen[producer][sequence] = true
            last[producer] = sequence
        }
    }
    for (producer, tickets) in seen.enumerated() {
        if let missing = tickets.firstIndex(of: false) {
            let lost = tickets.filter { !$0 }.count
            throw StressFailure("producer \(producer): \(lost) tickets never got (the first: \(missing))")
        }
    }
    let total = (processes + threads) * perProducer
    return "\(total) tickets from \(processes + threads) producers, each got exactly once and in order"
}
