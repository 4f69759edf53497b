import Glibc
import Synchronization
import Testing

@testable import Multiprocessing

// MARK: - Items and targets run in children

/// An item that says who put it and its number in that producer's sequence.
struct Tagged: Codable, Sendable, Hashable {
    var producer: Int
    var number: Int
}

/// Python's seed example: `for n in range(1, 6): q.put(n * n)`.
struct PutSquares: ProcessTarget {
    let queue: Queue<Int>
    func run() throws {
        for n in 1...5 { try queue.put(n * n) }
    }
}

/// Puts `0..<count` and exits.
struct PutRange: ProcessTarget {
    let queue: Queue<Int>
    var count: Int
    func run() throws {
        for n in 0..<count { try queue.put(n) }
    }
}

/// Puts its items, numbered, tagged with its index.
struct TaggedProducer: ProcessTarget {
    let queue: Queue<Tagged>
    var producer: Int
    var count: Int
    func run() throws {
        for number in 0..<count { try queue.put(Tagged(producer: producer, number: number)) }
    }
}

/// Gets items until a stop item (producer -1), then puts all it got into `results`.
struct TaggedConsumer: ProcessTarget {
    let queue: Queue<Tagged>
    let results: Queue<[Tagged]>
    func run() throws {
        var got: [Tagged] = []
        while true {
            guard let item = try queue.get(timeout: .seconds(60)) else {
                throw SyncFailure(description: "no item for 60 s")
            }
            if item.producer < 0 { break }
            got.append(item)
        }
        try results.put(got)
    }
}

/// Puts `producer * 1_000_000 + number` for each number of `0..<count` (an `Int`: the
/// queue's in-place fast path).
struct PutNumbered: ProcessTarget {
    let queue: Queue<Int>
    var producer: Int
    var count: Int
    func run() throws {
        for number in 0..<count { try queue.put(producer * 1_000_000 + number) }
    }
}

/// Gets numbers until a negative one, then puts all it got into `results`.
struct CollectNumbers: ProcessTarget {
    let queue: Queue<Int>
    let results: Queue<[Int]>
    func run() throws {
        try results.put(try collectNumbers(from: queue))
    }
}

/// The numbers got from `queue` until a negative one.
func collectNumbers(from queue: Queue<Int>) throws -> [Int] {
    var got: [Int] = []
    while true {
        guard let number = try queue.get(timeout: .seconds(60)) else {
            throw SyncFailure(description: "no item for 60 s")
        }
        if number < 0 { return got }
        got.append(number)
    }
}

/// Says it is about to get, then blocks in `get` until killed.
struct BlockInGet: ProcessTarget {
    let queue: Queue<Int>
    let ready: ProcessEvent
    func run() throws {
        ready.set()
        _ = try queue.get()
        throw SyncFailure(description: "got an item")
    }
}

/// Copies the first record out holding the consumers' lock, says so, and sleeps there
/// until killed: the item is copied but not taken.
struct DieHoldingConsumersLock: ProcessTarget {
    let queue: Queue<Int>
    let holding: ProcessEvent
    func run() throws {
        _ = try queue.get(
            deadline: nil, check: {},
            afterCopy: {
                holding.set()
                while true { sleep(10) }
            })
    }
}

/// Writes a record holding the producers' lock, says so, and sleeps there until killed: the
/// record is written but not published.
struct DieHoldingProducersLock: ProcessTarget {
    let queue: Queue<Int>
    let holding: ProcessEvent
    func run() throws {
        _ = try queue.put(
            99, deadline: nil, check: {},
            afterWrite: {
                holding.set()
                while true { sleep(10) }
            })
    }
}

/// Gets items with a timeout and marks each done, until none comes for `idle` seconds.
struct JoinableWorker: ProcessTarget {
    let jobs: JoinableQueue<Int>
    let sum: SharedValue<Int>
    func run() throws {
        while let job = try jobs.get(timeout: .milliseconds(500)) {
            sum.add(job)
            usleep(1000)
            try jobs.taskDone()
        }
    }
}

/// Makes, uses and drops queues, then checks that the descriptors open are as before.
struct QueueDescriptorsBalance: ProcessTarget {
    func run() throws {
        _ = try Queue<Int>(capacity: 4096)  // the first use may open descriptors of its own
        let before = openDescriptors().count
        for round in 0..<30 {
            let queue = try Queue<Int>(maxSize: 4, capacity: 4096)
            let joinable = try JoinableQueue<String>(capacity: 4096)
            try queue.put(round)
            try joinable.put("\(round)")
            guard try queue.get() == round, try joinable.get() == "\(round)" else { throw PlainError() }
            try joinable.taskDone()
            queue.close()
        }
        let after = openDescriptors()
        guard after.count == before else {
            throw InventoryError(item: "descriptors: \(after.values.sorted())", missing: after.count - before)
        }
    }
}

/// Encodes normally, except `failing`, whose encoding throws.
struct Fragile: Codable, Sendable, Equatable {
    var value: Int
    var failing = false

    struct Refused: Error {}

    func encode(to encoder: any Encoder) throws {
        if failing { throw Refused() }
        var container = encoder.singleValueContainer()
        try container.encode(value)
    }

    init(value: Int, failing: Bool = false) {
        self.value = value
        self.failing = failing
    }

    init(from decoder: any Decoder) throws {
        value = try decoder.singleValueContainer().decode(Int.self)
    }
}

/// What `body` returns, and how long it took.
func timed<Result>(_ body: () throws -> Result) rethrows -> (Result, Duration) {
    let start = ContinuousClock.now
    let result = try body()
    return (result, ContinuousClock.now - start)
}

/// Joins `child` within `timeout`, killing it if late; whether it ended in time.
@discardableResult
func joinOrKill(_ child: ChildProcess, within timeout: Duration = .seconds(60)) -> Bool {
    let ended = (try? child.join(timeout: timeout)) ?? true
    if !ended { child.kill() }
    return ended
}

// MARK: - Tests

@Suite("Queues", .timeLimit(.minutes(2)))
struct QueueTests {
    @Test("the seed example: a child puts the squares of 1...5, the parent gets them in order")
    func seedExample() throws {
        let queue = try Queue<Int>()
        for method in [StartMethod.spawn, .forkserver] {
            let child = ChildProcess(PutSquares(queue: queue), startMethod: method)
            try child.start()
            var got: [Int] = []
            for _ in 1...5 { got.append(try #require(try queue.get(timeout: .seconds(30)))) }
            #expect(got == [1, 4, 9, 16, 25])
            #expect(try child.join(timeout: .seconds(30)))
        }
        #expect(queue.isEmpty)
    }

    @Test("4 producer and 4 consumer processes: every item delivered once, each producer's in order")
    func manyProducersManyConsumers() throws {
        let queue = try Queue<Tagged>(capacity: 1 << 16)
        let results = try Queue<[Tagged]>()
        let perProducer = 3000
        let consumers = try startChildren(4, TaggedConsumer(queue: queue, results: results))
        let producers = try (0..<4).map { producer in
            let child = ChildProcess(
                TaggedProducer(queue: queue, producer: producer, count: perProducer), isDaemon: true,
                startMethod: producer.isMultiple(of: 2) ? .forkserver : .spawn)
            try child.start()
            return child
        }
        expectAllSucceed(producers)
        for _ in 0..<4 { try queue.put(Tagged(producer: -1, number: 0)) }
        var all: [Tagged] = []
        for _ in 0..<4 {
            let got = try #require(try results.get(timeout: .seconds(60)))
            for producer in 0..<4 {
                let numbers = got.filter { $0.producer == producer }.map(\.number)
                #expect(numbers == numbers.sorted(), "producer \(producer)'s items out of order")
            }
            all += got
        }
        expectAllSucceed(consumers)
        #expect(all.count == 4 * perProducer)
        #expect(Set(all).count == 4 * perProducer)
        #expect(queue.isEmpty)
    }

    @Test("a child that put 100,000 items exits at once: join before draining returns")
    func joinBeforeDrain() throws {
        let queue = try Queue<Int>()
        let child = ChildProcess(PutRange(queue: queue, count: 100_000), startMethod: .forkserver)
        try child.start()
        #expect(try child.join(timeout: .seconds(30)), "the child did not exit with its items in the queue")
        #expect(queue.count == 100_000)
        for expected in 0..<100_000 {
            guard try queue.get(timeout: .zero) == expected else {
                Issue.record("item \(expected) missing or out of order")
                return
            }
        }
        #expect(try queue.get(timeout: .zero) == nil)
    }

    @Test("a bounded queue: put waits or times out while full, a get makes room")
    func bounded() throws {
        let queue = try Queue<Int>(maxSize: 2)
        #expect(queue.maxSize == 2)
        try queue.put(1)
        #expect(!queue.isFull)
        try queue.put(2)
        #expect(queue.isFull)
        #expect(try !queue.put(3, timeout: .zero))
        let (put, elapsed) = try timed { try queue.put(3, timeout: .milliseconds(100)) }
        #expect(!put && elapsed >= .milliseconds(100))
        onNewThread(after: .milliseconds(50)) { #expect((try? queue.get()) == 1) }
        #expect(try queue.put(3, timeout: .seconds(10)))
        #expect(queue.count == 2)
        // A child blocked on a full queue goes on when the parent gets.
        let child = ChildProcess(PutRange(queue: queue, count: 3), isDaemon: true)
        try child.start()
        var got: [Int] = []
        for _ in 0..<5 { got.append(try #require(try queue.get(timeout: .seconds(30)))) }
        #expect(got == [2, 3, 0, 1, 2])
        #expect(joinOrKill(child))
    }

    @Test("an unbounded queue waits only when its ring of bytes is full")
    func ringFull() throws {
        let queue = try Queue<Int>(capacity: 100)
        #expect(queue.capacity == 128)
        var put = 0
        while try queue.put(put, timeout: .zero) { put += 1 }
        #expect(put == 8, "an Int takes 16 bytes of the ring")
        #expect(queue.isFull)
        #expect(try queue.get() == 0)
        #expect(try queue.put(99, timeout: .zero))
    }

    @Test("numbers, arrays of numbers (copied as bytes) and other values round-trip, empty ones included")
    func itemKinds() throws {
        let doubles = try Queue<[Double]>()
        for item in [[], [1.5], (0..<1000).map { Double($0) / 3 }] {
            try doubles.put(item)
            #expect(try doubles.get(timeout: .zero) == item)
        }
        let shorts = try Queue<[Int16]>()
        try shorts.put([-1, 2, .max])
        #expect(try shorts.get() == [-1, 2, .max])
        let strings = try Queue<[String]>()
        try strings.put(["", "é", "queue"])
        #expect(try strings.get() == ["", "é", "queue"])
        let flags = try Queue<Bool>()
        try flags.put(true)
        #expect(try flags.get() == true)
        let optionals = try Queue<Int?>()
        try optionals.put(nil)
        try optionals.put(3)
        #expect(try optionals.get() == nil)
        #expect(try optionals.get() == 3)
    }

    @Test(
        "a 256-byte ring shared by 3 producer processes, 2 consumer processes and 2 consumer threads: every item once, in order",
        .timeLimit(.minutes(1)))
    func smallRingManyEnds() throws {
        // Each side checks against its process's copy of the far end (QueuePositionCache); with
        // 16 items in the ring at most, the positions go round it thousands of times, the
        // copies are stale most of the time, and consumers of one process share theirs.
        let queue = try Queue<Int>(capacity: 256)
        let results = try Queue<[Int]>()
        let perProducer = 20_000
        let consumers = try startChildren(2, CollectNumbers(queue: queue, results: results))
        let producers = try (0..<3).map { producer in
            let child = ChildProcess(
                PutNumbered(queue: queue, producer: producer, count: perProducer), isDaemon: true,
                startMethod: producer.isMultiple(of: 2) ? .forkserver : .spawn)
            try child.start()
            return child
        }
        let local = Mutex<[[Int]]>([])
        let threads = (0..<2).map { _ in
            TestThread {
                let got = (try? collectNumbers(from: queue)) ?? []
                local.withLock { $0.append(got) }
            }
        }
        expectAllSucceed(producers)
        for _ in 0..<4 { try queue.put(-1) }
        for thread in threads { thread.join() }
        var lists = local.withLock { $0 }
        for _ in 0..<2 { lists.append(try #require(try results.get(timeout: .seconds(60)))) }
        expectAllSucceed(consumers)
        for list in lists {
            for producer in 0..<3 {
                let numbers = list.filter { $0 / 1_000_000 == producer }
                #expect(numbers == numbers.sorted(), "producer \(producer)'s items out of order")
            }
        }
        let all = lists.flatMap { $0 }
        #expect(all.count == 3 * perProducer)
        #expect(Set(all) == Set((0..<3).flatMap { producer in (0..<perProducer).map { producer * 1_000_000 + $0 } }))
        #expect(queue.isEmpty)
    }

    @Test("copies of the head and tail 4 GiB stale are not trusted (the lap count): full stays full, empty stays empty")
    func staleCopyAcrossTheCounters() throws {
        let queue = try Queue<Int>(capacity: 64)
        // A second handle on the same ring: a process of its own, as far as copies go.
        let other = Queue<Int>(ring: try #require(QueueRing(region: queue.ring.region)), side: queue.side)
        try other.put(1)  // `other` copies the head: bytes 0, lap 0
        #expect(try queue.get() == 1)
        // As if 4 GiB less 64 bytes had gone through (the tail crossed 2^30, 2^31, 3 * 2^30):
        // four puts fill the 64-byte ring and bring the byte position round to 0, the
        // position `other` copied.
        queue.ring.jump(toBytes: 0xFFFF_FFC0, items: 7, laps: 3)
        for number in 0..<4 { try queue.put(number) }
        #expect(queue.isFull)
        #expect(try !other.put(99, timeout: .zero), "a stale copy of the head let a put into a full ring")
        for number in 0..<4 { #expect(try other.get(timeout: .zero) == number) }
        #expect(try other.put(5, timeout: .zero))
        #expect(try queue.get(timeout: .zero) == 5)
        #expect(queue.isEmpty)

        // The consumers' side: `other` copies the tail as it gets an item; 4 GiB later the
        // empty ring's ends are just behind that copy, modulo 2^32. The copy would show an
        // item (the old record still lies in the ring) that is not there.
        try queue.put(6)
        #expect(try other.get(timeout: .zero) == 6)
        // The tail is at byte 32: 0 after the jump and four puts, then two 16-byte records.
        queue.ring.jump(toBytes: 32 &- 16, items: 20, laps: 9)
        #expect(try other.get(timeout: .zero) == nil, "a stale copy of the tail showed an item in an empty ring")
        #expect(queue.isEmpty)
    }

    @Test("numbers and arrays of numbers read in place: records that wrap round the ring's end come back whole")
    func inPlaceAcrossTheEnd() throws {
        let arrays = try Queue<[UInt16]>(capacity: 64)
        let numbers = try Queue<Int8>(capacity: 64)
        // Lengths 0 to 12 bytes... 26 bytes: records of 8 to 32 bytes land at every offset of a
        // 64-byte ring, so some straddle its end.
        for round in 0..<500 {
            let item = (0..<(round % 14)).map { UInt16(truncatingIfNeeded: round &* 31 &+ $0) }
            try arrays.put(item)
            try arrays.put([UInt16(round)])
            #expect(try arrays.get(timeout: .zero) == item)
            #expect(try arrays.get(timeout: .zero) == [UInt16(round)])
            try numbers.put(Int8(truncatingIfNeeded: round))
            #expect(try numbers.get(timeout: .zero) == Int8(truncatingIfNeeded: round))
        }
        #expect(try arrays.get(timeout: .zero) == nil)
    }

    @Test("a drained queue goes back to the start of its ring, and all of the ring stays usable")
    func recycling() throws {
        let queue = try Queue<[UInt8]>(capacity: 1 << 20)
        let item = [UInt8](repeating: 5, count: 1000)
        // Stream 4 MiB through a 1 MiB ring, one item in at a time: the ring is recycled.
        for round in 0..<4000 {
            try queue.put(item + [UInt8(truncatingIfNeeded: round)])
            #expect(try queue.get(timeout: .zero)?.last == UInt8(truncatingIfNeeded: round))
        }
        // Past the hot window with the queue empty, then more than the window's worth put at
        // once with nobody getting: no put waits until the ring's bytes are full.
        for _ in 0..<300 { try queue.put(item) }
        for _ in 0..<300 { _ = try queue.get() }
        var put = 0
        while try queue.put(item + [UInt8(truncatingIfNeeded: put)], timeout: .zero) { put += 1 }
        #expect(put == (1 << 20) / QueueRing.recordSize(1001), "the whole ring is usable")
        for expected in 0..<put {
            #expect(try queue.get(timeout: .zero)?.last == UInt8(truncatingIfNeeded: expected))
        }
        #expect(queue.isEmpty)
    }

    @Test("timeouts: zero and negative try once, positive waits; nil and false, never an error")
    func timeouts() throws {
        let queue = try Queue<String>(maxSize: 1)
        for timeout: Duration in [.zero, .milliseconds(-5)] {
            let (item, elapsed) = try timed { try queue.get(timeout: timeout) }
            #expect(item == nil && elapsed < .seconds(1))
        }
        let (item, waited) = try timed { try queue.get(timeout: .milliseconds(120)) }
        #expect(item == nil && waited >= .milliseconds(120))
        #expect(try queue.put("a", timeout: .zero))
        for timeout: Duration in [.zero, .milliseconds(-5)] {
            let (put, elapsed) = try timed { try queue.put("b", timeout: timeout) }
            #expect(!put && elapsed < .seconds(1))
        }
        let (put, elapsed) = try timed { try queue.put("b", timeout: .milliseconds(120)) }
        #expect(!put && elapsed >= .milliseconds(120))
        #expect(try queue.get(timeout: .milliseconds(-1)) == "a")
        onNewThread(after: .milliseconds(50)) { _ = try? queue.put("c") }
        #expect(try queue.get(timeout: .seconds(10)) == "c")
    }

    @Test("close: puts throw, gets drain then throw, blocked getters and putters wake")
    func close() throws {
        let queue = try Queue<Int>(maxSize: 2)
        let empty = try Queue<Int>()
        try queue.put(1)
        try queue.put(2)
        let putter = TestThread { #expect(throws: QueueError.closed) { try queue.put(3) } }
        let getter = TestThread { #expect(throws: QueueError.closed) { _ = try empty.get() } }
        usleep(100_000)
        let start = ContinuousClock.now
        queue.close()
        empty.close()
        putter.join()
        getter.join()
        #expect(ContinuousClock.now - start < .seconds(1))
        #expect(queue.isClosed)
        #expect(throws: QueueError.closed) { try queue.put(4) }
        #expect(throws: QueueError.closed) { _ = try queue.put(4, timeout: .zero) }
        #expect(try queue.get() == 1)
        #expect(try queue.get(timeout: .zero) == 2)
        #expect(throws: QueueError.closed) { _ = try queue.get() }
        #expect(throws: QueueError.closed) { _ = try queue.get(timeout: .seconds(5)) }
    }

    @Test("an item that cannot be encoded fails its put and jams nothing")
    func unencodable() throws {
        let queue = try Queue<Fragile>(maxSize: 1)
        #expect(throws: Fragile.Refused.self) { try queue.put(Fragile(value: 1, failing: true)) }
        #expect(queue.isEmpty)
        try queue.put(Fragile(value: 2))
        #expect(try queue.get(timeout: .seconds(1)) == Fragile(value: 2))
    }

    @Test("an item larger than half the ring, and an item holding handles, go through the side channel")
    func sideItems() throws {
        let queue = try Queue<[UInt8]>(capacity: 4096)
        let large = (0..<3000).map { UInt8(truncatingIfNeeded: $0) }
        try queue.put(large)
        try queue.put([1, 2, 3])
        #expect(queue.count == 2)
        #expect(try queue.get() == large)
        #expect(try queue.get() == [1, 2, 3])
        let handles = try Queue<SharedValue<Int>>()
        let value = try SharedValue(1)
        try handles.put(value)
        let got = try handles.get()
        got.store(41)
        #expect(value.load() == 41)
    }

    @Test("a consumer killed while blocked in get: the others go on at once, nothing lost")
    func consumerKilledWaiting() throws {
        let queue = try Queue<Int>()
        let ready = try ProcessEvent()
        let child = ChildProcess(BlockInGet(queue: queue, ready: ready), isDaemon: true)
        try child.start()
        #expect(ready.wait(timeout: .seconds(30)))
        usleep(200_000)
        child.kill()
        _ = try? child.join(timeout: .seconds(10))
        let start = ContinuousClock.now
        for n in 1...10 { try queue.put(n) }
        var got: [Int] = []
        for _ in 1...10 { got.append(try #require(try queue.get(timeout: .seconds(1)))) }
        #expect(ContinuousClock.now - start < .seconds(1))
        #expect(got == Array(1...10))
    }

    @Test("a consumer killed holding the consumers' lock mid-get: its item is still there, once")
    func consumerKilledHoldingLock() throws {
        let queue = try Queue<Int>()
        for n in 1...10 { try queue.put(n) }
        let holding = try ProcessEvent()
        let child = ChildProcess(DieHoldingConsumersLock(queue: queue, holding: holding), isDaemon: true)
        try child.start()
        #expect(holding.wait(timeout: .seconds(30)))
        #expect(try queue.get(timeout: .milliseconds(50)) == nil, "the consumers' lock is held")
        child.kill()
        let start = ContinuousClock.now
        var got: [Int] = []
        for _ in 1...10 { got.append(try #require(try queue.get(timeout: .seconds(1)))) }
        #expect(ContinuousClock.now - start < .seconds(1))
        #expect(got == Array(1...10))
        #expect(try queue.get(timeout: .zero) == nil)
        _ = try? child.join(timeout: .seconds(10))
    }

    @Test("a producer killed holding the producers' lock mid-put: its half record is never seen")
    func producerKilledHoldingLock() throws {
        let queue = try Queue<Int>()
        try queue.put(1)
        let holding = try ProcessEvent()
        let child = ChildProcess(DieHoldingProducersLock(queue: queue, holding: holding), isDaemon: true)
        try child.start()
        #expect(holding.wait(timeout: .seconds(30)))
        #expect(try !queue.put(2, timeout: .milliseconds(50)), "the producers' lock is held")
        #expect(queue.count == 1)
        child.kill()
        let start = ContinuousClock.now
        for n in 2...4 { #expect(try queue.put(n, timeout: .seconds(1))) }
        var got: [Int] = []
        for _ in 1...4 { got.append(try #require(try queue.get(timeout: .seconds(1)))) }
        #expect(ContinuousClock.now - start < .seconds(1))
        #expect(got == [1, 2, 3, 4])
        #expect(try queue.get(timeout: .zero) == nil)
        _ = try? child.join(timeout: .seconds(10))
    }

    @Test("threads and async tasks use one queue at once")
    func threadsAndTasks() async throws {
        let queue = try Queue<Tagged>(maxSize: 16)
        let perProducer = 500
        let collected = Mutex<[Tagged]>([])
        let threads = (0..<2).map { producer in
            TestThread {
                for number in 0..<perProducer { try? queue.put(Tagged(producer: producer, number: number)) }
            }
        }
        let consumerThread = TestThread {
            var got: [Tagged] = []
            for _ in 0..<(2 * perProducer) {
                if let item = try? queue.get(timeout: .seconds(30)) { got.append(item) }
            }
            collected.withLock { $0 += got }
        }
        try await withThrowingTaskGroup(of: [Tagged].self) { group in
            for producer in 2..<4 {
                group.addTask {
                    for number in 0..<perProducer { try await queue.put(Tagged(producer: producer, number: number)) }
                    return []
                }
            }
            group.addTask {
                var got: [Tagged] = []
                for _ in 0..<(2 * perProducer) { got.append(try await queue.get()) }
                return got
            }
            for try await got in group { collected.withLock { $0 += got } }
        }
        for thread in threads { thread.join() }
        consumerThread.join()
        let all = collected.withLock { $0 }
        #expect(all.count == 4 * perProducer)
        #expect(Set(all).count == 4 * perProducer)
    }

    @Test("async put and get: suspend, wake, time out, and throw CancellationError when cancelled")
    func asyncForms() async throws {
        let queue = try Queue<Int>(maxSize: 1)
        #expect(try await queue.get(timeout: .zero) == nil)
        #expect(try await queue.get(timeout: .milliseconds(60)) == nil)
        let cancelledGet = Task { try await queue.get() }
        try await Task.sleep(for: .milliseconds(50))
        cancelledGet.cancel()
        await #expect(throws: CancellationError.self) { try await cancelledGet.value }
        try await queue.put(1)
        #expect(try await !queue.put(2, timeout: .milliseconds(30)))
        let cancelledPut = Task { try await queue.put(2) }
        try await Task.sleep(for: .milliseconds(50))
        cancelledPut.cancel()
        await #expect(throws: CancellationError.self) { try await cancelledPut.value }
        #expect(queue.count == 1, "a cancelled put puts nothing")
        let waiter = Task { try await queue.put(3, timeout: .seconds(10)) }
        try await Task.sleep(for: .milliseconds(50))
        #expect(try await queue.get() == 1)
        #expect(try await waiter.value)
        #expect(try await queue.get(timeout: .seconds(10)) == 3)
    }

    @Test("a queue sent on a connection is the same queue")
    func sentOnConnection() throws {
        let (c, d) = try Connection<Queue<Int>>.pair()
        defer {
            c.close()
            d.close()
        }
        let queue = try Queue<Int>()
        try c.send(queue)
        let received = try d.receive()
        try received.put(5)
        #expect(try queue.get() == 5)
    }

    @Test("making and dropping queues leaves no descriptor open")
    func noLeakedDescriptors() throws {
        let child = ChildProcess(QueueDescriptorsBalance())
        try child.start()
        #expect(try child.join(timeout: .seconds(60)))
    }
}

@Suite("Joinable queues", .timeLimit(.minutes(2)))
struct JoinableQueueTests {
    @Test("workers in other processes mark tasks done; join returns once all are")
    func joinAcrossProcesses() throws {
        let jobs = try JoinableQueue<Int>()
        let sum = try SharedValue(0)
        for job in 1...40 { try jobs.put(job) }
        #expect(jobs.unfinishedTasks == 40)
        #expect(!jobs.join(timeout: .zero))
        #expect(!jobs.join(timeout: .milliseconds(-1)))
        let workers = try startChildren(2, JoinableWorker(jobs: jobs, sum: sum))
        #expect(jobs.join(timeout: .seconds(60)))
        #expect(sum.load() == 820)
        #expect(jobs.unfinishedTasks == 0)
        jobs.join()
        expectAllSucceed(workers)
    }

    @Test("one taskDone too many throws and changes nothing")
    func tooMany() throws {
        let jobs = try JoinableQueue<String>()
        #expect(throws: QueueError.taskDoneTooManyTimes) { try jobs.taskDone() }
        try jobs.put("a")
        _ = try jobs.get()
        try jobs.taskDone()
        #expect(throws: QueueError.taskDoneTooManyTimes) { try jobs.taskDone() }
        #expect(jobs.unfinishedTasks == 0)
        #expect(jobs.join(timeout: .zero))
    }

    @Test("async join suspends until the last task is done, and a cancelled one throws")
    func asyncJoin() async throws {
        let jobs = try JoinableQueue<Int>()
        try await jobs.put(1)
        #expect(try await !jobs.join(timeout: .milliseconds(30)))
        let cancelled = Task { try await jobs.join() }
        try await Task.sleep(for: .milliseconds(50))
        cancelled.cancel()
        await #expect(throws: CancellationError.self) { try await cancelled.value }
        let joiner = Task { try await jobs.join(timeout: .seconds(10)) }
        try await Task.sleep(for: .milliseconds(50))
        _ = try await jobs.get()
        try jobs.taskDone()
        #expect(try await joiner.value)
    }
}
