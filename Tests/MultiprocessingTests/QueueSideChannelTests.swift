import Glibc
import Synchronization
import Testing

@testable import Multiprocessing

// MARK: - Items and targets run in children

/// Handles of every kind, in one item.
struct HandleBundle: Codable, Sendable {
    var connection: Connection<Int>
    var value: SharedValue<Int>
    var inner: Queue<Int>
}

/// Puts a bundle of handles made here, then talks through them with the parent: a message
/// on the connection, a reply back, the reply doubled into the shared value and put into the
/// inner queue.
struct PutHandles: ProcessTarget {
    let queue: Queue<HandleBundle>
    func run() throws {
        let (mine, theirs) = try Connection<Int>.pair()
        let value = try SharedValue(7)
        let inner = try Queue<Int>()
        try inner.put(42)
        try queue.put(HandleBundle(connection: theirs, value: value, inner: inner))
        guard theirs.isClosed else { throw SyncFailure(description: "the end put in the queue is still open here") }
        try mine.send(1)
        guard let reply = try mine.receive(timeout: .seconds(30)) else {
            throw SyncFailure(description: "no reply")
        }
        value.store(reply * 2)
        try inner.put(reply)
    }
}

/// The bytes of item `index` of `size` bytes: not all alike, so a misplaced chunk shows.
func sideBytes(_ index: Int, size: Int) -> [UInt8] {
    [UInt8](unsafeUninitializedCapacity: size) { buffer, initialized in
        for offset in 0..<size {
            buffer[offset] = UInt8(truncatingIfNeeded: offset &* 31 &+ index &* 7 &+ offset >> 12)
        }
        initialized = size
    }
}

/// Puts `count` items of `size` bytes (``sideBytes(_:size:)``), each followed by a small one.
struct PutLargeItems: ProcessTarget {
    let queue: Queue<[UInt8]>
    var count: Int
    var size: Int
    func run() throws {
        for index in 0..<count {
            try queue.put(sideBytes(index, size: size))
            try queue.put([UInt8(truncatingIfNeeded: index)])
        }
    }
}

/// An item that may go through the ring, or the side channel because it is large or holds a
/// shared value.
struct MixedItem: Codable, Sendable {
    var producer: Int
    var number: Int
    var bytes: [UInt8]
    var value: SharedValue<Int>?

    /// Item `number` of `producer`: every 5th large, every 3rd holding a shared value that
    /// holds `number`.
    static func make(producer: Int, number: Int) throws -> MixedItem {
        MixedItem(
            producer: producer, number: number,
            bytes: number.isMultiple(of: 5) ? sideBytes(number, size: 100 << 10) : [UInt8(truncatingIfNeeded: number)],
            value: number.isMultiple(of: 3) ? try SharedValue(number) : nil)
    }

    /// Whether the item came whole: its bytes and its shared value are those it was made with.
    var isIntact: Bool {
        let bytesRight =
            number.isMultiple(of: 5)
            ? bytes == sideBytes(number, size: 100 << 10) : bytes == [UInt8(truncatingIfNeeded: number)]
        let valueRight = number.isMultiple(of: 3) ? value?.load() == number : value == nil
        return bytesRight && valueRight
    }
}

struct MixedProducer: ProcessTarget {
    let queue: Queue<MixedItem>
    var producer: Int
    var count: Int
    func run() throws {
        for number in 0..<count { try queue.put(try MixedItem.make(producer: producer, number: number)) }
    }
}

/// Gets items until a stop item (producer -1), checks each, then puts the tags of all it got.
struct MixedConsumer: ProcessTarget {
    let queue: Queue<MixedItem>
    let results: Queue<[Tagged]>
    func run() throws {
        var got: [Tagged] = []
        while true {
            guard let item = try queue.get(timeout: .seconds(60)) else {
                throw SyncFailure(description: "no item for 60 s")
            }
            if item.producer < 0 { break }
            guard item.isIntact else {
                throw SyncFailure(description: "item \(item.number) of producer \(item.producer) damaged")
            }
            got.append(Tagged(producer: item.producer, number: item.number))
        }
        try results.put(got)
    }
}

/// Sends a side item's datagram holding the producers' lock, says so, and sleeps there until
/// killed: the datagram is in the socket, its placeholder never published.
struct DieAfterSendingSideItem: ProcessTarget {
    let queue: Queue<MixedItem>
    let holding: ProcessEvent
    func run() throws {
        _ = try queue.put(
            try MixedItem.make(producer: 9, number: 0), deadline: nil, check: {},
            afterSend: {
                holding.set()
                while true { sleep(10) }
            })
    }
}

/// Like ``DieAfterSendingSideItem``, with 30 KiB inline: a few such orphans fill the socket.
struct DieAfterSendingLargeSideItem: ProcessTarget {
    let queue: Queue<MixedItem>
    let holding: ProcessEvent
    func run() throws {
        let item = MixedItem(producer: 9, number: 1, bytes: sideBytes(1, size: 30 << 10), value: try SharedValue(1))
        _ = try queue.put(
            item, deadline: nil, check: {},
            afterSend: {
                holding.set()
                while true { sleep(10) }
            })
    }
}

/// Copies the first item out (a side item: its datagram peeked, descriptors open here)
/// holding the consumers' lock, says so, and sleeps there until killed.
struct DieMidSideGet: ProcessTarget {
    let queue: Queue<MixedItem>
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

/// Takes the first item (a side item: the head stepped over its placeholder, its datagram
/// not yet dropped), says so, and sleeps there until killed: the datagram is an orphan.
struct DieAfterSideStep: ProcessTarget {
    let queue: Queue<MixedItem>
    let holding: ProcessEvent
    func run() throws {
        _ = try queue.get(
            deadline: nil, check: {},
            afterStep: {
                holding.set()
                while true { sleep(10) }
            })
    }
}

/// Sends side items of every kind through queues, some left in them when dropped, then
/// checks that the descriptors open and `/dev/shm` are as before: the entries this process
/// could have made (`mp-<pid>-...`); the rest of the suite and other programs make and remove
/// their own meanwhile (comparing the whole directory failed a busy run).
struct SideItemsBalance: ProcessTarget {
    func run() throws {
        let mine = "mp-\(getpid())-"
        func shm() -> Set<String> {
            guard let directory = opendir("/dev/shm") else { return [] }
            defer { closedir(directory) }
            var names: Set<String> = []
            while let entry = readdir(directory) {
                names.insert(
                    withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
                )
            }
            return names.filter { $0.hasPrefix(mine) }
        }
        _ = try Queue<MixedItem>(capacity: 4096)  // the first use may open descriptors of its own
        let before = openDescriptors().count
        let shmBefore = shm()
        for round in 0..<10 {
            let queue = try Queue<MixedItem>(maxSize: 8, capacity: 4096)
            let handles = try JoinableQueue<HandleBundle>()
            for number in 0..<6 { try queue.put(try MixedItem.make(producer: round, number: number)) }
            for number in 0..<3 {
                guard let item = try queue.get(timeout: .zero), item.number == number, item.isIntact else {
                    throw PlainError()
                }
            }
            let (a, b) = try Connection<Int>.pair()
            try handles.put(HandleBundle(connection: a, value: try SharedValue(round), inner: try Queue<Int>()))
            let bundle = try handles.get()
            try handles.taskDone()
            try bundle.connection.send(round)
            guard try b.receive() == round, bundle.value.load() == round else { throw PlainError() }
            b.close()
            // Three side items stay in `queue` as it goes, and a bundle in `handles`.
            try handles.put(HandleBundle(connection: bundle.connection, value: bundle.value, inner: bundle.inner))
        }
        let after = openDescriptors()
        guard after.count == before else {
            throw InventoryError(item: "descriptors: \(after.values.sorted())", missing: after.count - before)
        }
        guard shm() == shmBefore else { throw InventoryError(item: "/dev/shm entries", missing: -1) }
    }
}

/// At its descriptor limit, gets an item holding three connection ends: refused with
/// `descriptorsLost`, the item left in the queue; with the limit restored, it comes whole.
struct GetAtDescriptorLimit: ProcessTarget {
    struct Carrier: Codable, Sendable {
        var ends: [Connection<Int>]
        var tag: Int
    }

    func run() throws {
        let queue = try Queue<Carrier>()
        var kept: [Connection<Int>] = []
        var sent: [Connection<Int>] = []
        for _ in 0..<3 {
            let (a, b) = try Connection<Int>.pair()
            kept.append(b)
            sent.append(a)
        }
        try queue.put(Carrier(ends: sent, tag: 1))
        try queue.put(Carrier(ends: [], tag: 2))
        // Only one more descriptor may be opened: fill every free number below the highest
        // open descriptor, then allow one more.
        let top = openDescriptors().keys.max()!
        var fillers: [Int32] = []
        while true {
            let descriptor = open("/dev/null", O_RDONLY | O_CLOEXEC)
            guard descriptor >= 0, descriptor < top else {
                if descriptor >= 0 { close(descriptor) }
                break
            }
            fillers.append(descriptor)
        }
        defer { for descriptor in fillers { close(descriptor) } }
        var limit = rlimit()
        getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
        var saved = limit
        limit.rlim_cur = rlim_t(top + 2)
        guard setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 else { throw PlainError() }
        do {
            _ = try queue.get(timeout: .zero)
            throw SyncFailure(description: "the item came at the descriptor limit")
        } catch ConnectionError.descriptorsLost(let expected, let received) {
            guard expected == 3, received < 3 else { throw SyncFailure(description: "\(expected), \(received)") }
        }
        guard queue.count == 2 else { throw SyncFailure(description: "the refused item left the queue") }
        guard setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &saved) == 0 else { throw PlainError() }
        guard let first = try queue.get(timeout: .zero), first.tag == 1, first.ends.count == 3 else {
            throw SyncFailure(description: "the refused item did not come after")
        }
        for (index, end) in first.ends.enumerated() {
            try end.send(100 + index)
            guard try kept[index].receive() == 100 + index else { throw PlainError() }
        }
        guard try queue.get(timeout: .zero)?.tag == 2 else { throw SyncFailure(description: "the second item") }
    }
}

/// Shrinks the send buffer of `queue`'s side channel (shared by every handle of it) to about
/// 128 KiB, so that a few side items fill it.
func shrinkSendBuffer<Element>(of queue: Queue<Element>) {
    var size: Int32 = 64 << 10
    _ = setsockopt(queue.side.sender.rawValue, SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<Int32>.size))
}

// MARK: - Tests

@Suite("Queue side channel", .timeLimit(.minutes(2)))
struct QueueSideChannelTests {
    @Test(
        "handles cross processes in a queue: messages flow, the shared value is the same memory",
        arguments: [
            StartMethod.spawn, .forkserver,
        ])
    func handlesAcrossProcesses(method: StartMethod) throws {
        let queue = try Queue<HandleBundle>()
        let child = ChildProcess(PutHandles(queue: queue), isDaemon: true, startMethod: method)
        try child.start()
        let bundle = try #require(try queue.get(timeout: .seconds(30)))
        #expect(try bundle.connection.receive(timeout: .seconds(30)) == 1)
        #expect(bundle.value.load() == 7)
        #expect(try bundle.inner.get(timeout: .seconds(30)) == 42)
        try bundle.connection.send(21)
        #expect(joinOrKill(child))
        #expect(child.exitCode == 0)
        #expect(bundle.value.load() == 42)
        #expect(try bundle.inner.get(timeout: .seconds(30)) == 21)
        #expect(throws: ConnectionError.self) { _ = try bundle.connection.receive(timeout: .seconds(30)) }
        #expect(queue.isEmpty)
    }

    @Test("items far larger than the ring cross processes intact, in order with small ones")
    func largeItemsAcrossProcesses() throws {
        let queue = try Queue<[UInt8]>(capacity: 64 << 10)
        let count = 12
        let child = ChildProcess(PutLargeItems(queue: queue, count: count, size: 3 << 20), isDaemon: true)
        try child.start()
        for index in 0..<count {
            let large = try #require(try queue.get(timeout: .seconds(30)))
            #expect(large.count == 3 << 20)
            #expect(large == sideBytes(index, size: 3 << 20), "item \(index) damaged")
            #expect(try queue.get(timeout: .seconds(30)) == [UInt8(truncatingIfNeeded: index)])
        }
        #expect(joinOrKill(child))
        #expect(queue.isEmpty)
        // Sizes around the limits: half the ring, the inline limit, and encoded (not number) items.
        let strings = try Queue<[String]>(capacity: 4096)
        let limit = strings.side.inlineLimit
        for size in [2000, 2100, max(limit - 100, 1), limit + 100, 1 << 20] {
            let item = [String(repeating: "é", count: size / 2), "end"]
            try strings.put(item)
            try strings.put(["small"])
            #expect(try strings.get(timeout: .zero) == item)
            #expect(try strings.get(timeout: .zero) == ["small"])
        }
    }

    @Test("4 producer and 4 consumer processes, ring and side items mixed: each once, each producer's in order")
    func manyProducersManyConsumers() throws {
        let queue = try Queue<MixedItem>(capacity: 64 << 10)
        let results = try Queue<[Tagged]>()
        let perProducer = 150
        let consumers = try startChildren(4, MixedConsumer(queue: queue, results: results))
        let producers = try (0..<4).map { producer in
            let child = ChildProcess(
                MixedProducer(queue: queue, producer: producer, count: perProducer), isDaemon: true,
                startMethod: producer.isMultiple(of: 2) ? .forkserver : .spawn)
            try child.start()
            return child
        }
        expectAllSucceed(producers)
        for _ in 0..<4 { try queue.put(MixedItem(producer: -1, number: 0, bytes: [])) }
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

    @Test("threads and async tasks of one process put and get side items at once")
    func threadsAndTasks() async throws {
        let queue = try Queue<MixedItem>(maxSize: 8, capacity: 4096)
        let perProducer = 60
        let collected = Mutex<[Tagged]>([])
        let threads = (0..<2).map { producer in
            TestThread {
                for number in 0..<perProducer {
                    do {
                        try queue.put(try MixedItem.make(producer: producer, number: number))
                    } catch {
                        Issue.record("put failed: \(error)")
                    }
                }
            }
        }
        let consumerThread = TestThread {
            var got: [Tagged] = []
            for _ in 0..<(2 * perProducer) {
                if let item = try? queue.get(timeout: .seconds(30)) {
                    #expect(item.isIntact)
                    got.append(Tagged(producer: item.producer, number: item.number))
                }
            }
            collected.withLock { $0 += got }
        }
        try await withThrowingTaskGroup(of: [Tagged].self) { group in
            for producer in 2..<4 {
                group.addTask {
                    for number in 0..<perProducer {
                        try await queue.put(try MixedItem.make(producer: producer, number: number))
                    }
                    return []
                }
            }
            group.addTask {
                var got: [Tagged] = []
                for _ in 0..<(2 * perProducer) {
                    guard let item = try await queue.get(timeout: .seconds(30)) else { break }
                    #expect(item.isIntact)
                    got.append(Tagged(producer: item.producer, number: item.number))
                }
                return got
            }
            for try await got in group { collected.withLock { $0 += got } }
        }
        for thread in threads { thread.join() }
        consumerThread.join()
        let all = collected.withLock { $0 }
        #expect(all.count == 4 * perProducer)
        #expect(Set(all).count == 4 * perProducer)
        for producer in 0..<4 {
            #expect(all.filter { $0.producer == producer }.count == perProducer)
        }
        #expect(queue.isEmpty)
    }

    @Test("side items count like others: maxSize, timeouts, close, JoinableQueue")
    func countsAndTimeouts() throws {
        let queue = try Queue<MixedItem>(maxSize: 2, capacity: 4096)
        try queue.put(try MixedItem.make(producer: 0, number: 0))  // large and a shared value
        try queue.put(try MixedItem.make(producer: 0, number: 3))  // a shared value
        #expect(queue.count == 2)
        #expect(queue.isFull)
        for timeout: Duration in [.zero, .milliseconds(-5), .milliseconds(50)] {
            #expect(try !queue.put(try MixedItem.make(producer: 0, number: 5), timeout: timeout))
        }
        #expect(queue.count == 2)
        onNewThread(after: .milliseconds(50)) { #expect((try? queue.get())?.number == 0) }
        #expect(try queue.put(try MixedItem.make(producer: 0, number: 5), timeout: .seconds(30)))
        // Close with side items in: gets drain them, then throw.
        queue.close()
        #expect(throws: QueueError.closed) { try queue.put(try MixedItem.make(producer: 0, number: 6)) }
        let third = try #require(try queue.get(timeout: .zero))
        #expect(third.number == 3 && third.isIntact)
        let fifth = try queue.get()
        #expect(fifth.number == 5 && fifth.isIntact)
        #expect(throws: QueueError.closed) { _ = try queue.get(timeout: .zero) }

        let empty = try Queue<MixedItem>(capacity: 4096)
        for timeout: Duration in [.zero, .milliseconds(-5), .milliseconds(50)] {
            #expect(try empty.get(timeout: timeout) == nil)
        }

        let jobs = try JoinableQueue<MixedItem>(capacity: 4096)
        for number in 0..<6 { try jobs.put(try MixedItem.make(producer: 1, number: number)) }
        #expect(jobs.unfinishedTasks == 6)
        #expect(!jobs.join(timeout: .zero))
        for number in 0..<6 {
            let item = try jobs.get()
            #expect(item.number == number && item.isIntact)
            try jobs.taskDone()
        }
        #expect(jobs.join(timeout: .seconds(10)))
    }

    @Test("async put and get of side items: time out on a full or empty queue, then go through")
    func asyncForms() async throws {
        let queue = try Queue<MixedItem>(maxSize: 1, capacity: 4096)
        try await queue.put(try MixedItem.make(producer: 0, number: 0))
        for timeout: Duration in [.zero, .milliseconds(-5), .milliseconds(50)] {
            #expect(try await !queue.put(try MixedItem.make(producer: 0, number: 3), timeout: timeout))
        }
        let first = try await queue.get()
        #expect(first.number == 0 && first.isIntact)
        for timeout: Duration in [.zero, .milliseconds(-5), .milliseconds(50)] {
            #expect(try await queue.get(timeout: timeout) == nil)
        }
        #expect(try await queue.put(try MixedItem.make(producer: 0, number: 3), timeout: .seconds(10)))
        let second = try #require(try await queue.get(timeout: .seconds(10)))
        #expect(second.number == 3 && second.isIntact)
    }

    @Test("a socket full of unread side items: put waits, times out with nothing put, goes on after a get")
    func fullSocket() throws {
        let queue = try Queue<MixedItem>()
        shrinkSendBuffer(of: queue)
        func item(_ number: Int) throws -> MixedItem {
            MixedItem(
                producer: 0, number: number, bytes: sideBytes(number, size: 30 << 10), value: try SharedValue(number))
        }
        var put = 0
        while put < 1000, try queue.put(try item(put), timeout: .zero) { put += 1 }
        #expect(put > 0 && put < 1000, "the socket's buffer took \(put) items of 30 KiB")
        #expect(queue.count == put)
        #expect(try !queue.put(try item(put), timeout: .milliseconds(-1)))
        #expect(try !queue.put(try item(put), timeout: .milliseconds(50)))
        #expect(queue.count == put)
        onNewThread(after: .milliseconds(50)) { #expect((try? queue.get())?.number == 0) }
        #expect(try queue.put(try item(put), timeout: .seconds(30)))
        for number in 1...put {
            let got = try #require(try queue.get(timeout: .zero))
            #expect(got.number == number && got.bytes == sideBytes(number, size: 30 << 10))
            #expect(got.value?.load() == number)
        }
        #expect(queue.isEmpty)
    }

    @Test("at the descriptor limit, a get of an item with handles throws and leaves the item in the queue")
    func descriptorLimit() throws {
        let child = ChildProcess(GetAtDescriptorLimit())
        try child.start()
        #expect(try child.join(timeout: .seconds(60)))
    }

    @Test("an item whose encoding fails, or that cannot be encoded with its handles, jams nothing")
    func failedEncodings() throws {
        let queue = try Queue<[Fragile]>(maxSize: 1, capacity: 4096)
        let large = (0..<1000).map { Fragile(value: $0) }
        #expect(throws: Fragile.Refused.self) { try queue.put(large + [Fragile(value: 0, failing: true)]) }
        #expect(queue.isEmpty)
        try queue.put(large)
        #expect(try queue.get(timeout: .zero) == large)
        // A closed connection end cannot be put; the queue goes on.
        let (a, b) = try Connection<Int>.pair()
        a.close()
        let ends = try Queue<Connection<Int>>()
        #expect(throws: ConnectionError.self) { try ends.put(a) }
        try ends.put(b)
        #expect(b.isClosed, "the end moved into the queue")
        let got = try ends.get()
        #expect(!got.isClosed)
        got.close()
    }

    @Test("a producer killed between sending a side item and publishing it: the others go on, nothing seen of it")
    func producerKilledAfterSend() throws {
        let queue = try Queue<MixedItem>(capacity: 4096)
        try queue.put(try MixedItem.make(producer: 0, number: 0))
        let holding = try ProcessEvent()
        let child = ChildProcess(DieAfterSendingSideItem(queue: queue, holding: holding), isDaemon: true)
        try child.start()
        #expect(holding.wait(timeout: .seconds(30)))
        #expect(try !queue.put(try MixedItem.make(producer: 0, number: 1), timeout: .milliseconds(50)))
        #expect(queue.count == 1)
        child.kill()
        _ = try? child.join(timeout: .seconds(10))
        for number in 1..<7 {
            #expect(try queue.put(try MixedItem.make(producer: 0, number: number), timeout: .seconds(10)))
        }
        for number in 0..<7 {
            let item = try #require(try queue.get(timeout: .seconds(10)))
            #expect(item.producer == 0 && item.number == number && item.isIntact)
        }
        #expect(try queue.get(timeout: .zero) == nil)
    }

    @Test("producers killed after sending, more than the socket holds: their orphans never block a put")
    func orphansFillTheSocket() throws {
        let queue = try Queue<MixedItem>(capacity: 4096)
        shrinkSendBuffer(of: queue)
        for round in 0..<10 {
            let holding = try ProcessEvent()
            let child = ChildProcess(
                DieAfterSendingLargeSideItem(queue: queue, holding: holding), isDaemon: true,
                startMethod: round.isMultiple(of: 2) ? .forkserver : .spawn)
            try child.start()
            #expect(holding.wait(timeout: .seconds(30)), "producer \(round) could not send")
            child.kill()
            _ = try? child.join(timeout: .seconds(10))
        }
        #expect(queue.isEmpty)
        #expect(try queue.put(try MixedItem.make(producer: 0, number: 0), timeout: .seconds(10)))
        let item = try #require(try queue.get(timeout: .seconds(10)))
        #expect(item.number == 0 && item.isIntact)
        #expect(try queue.get(timeout: .zero) == nil)
    }

    @Test("a consumer killed mid-get of a side item: its item is still there, once")
    func consumerKilledMidSideGet() throws {
        let queue = try Queue<MixedItem>(capacity: 4096)
        for number in 0..<5 { try queue.put(try MixedItem.make(producer: 0, number: number)) }
        let holding = try ProcessEvent()
        let child = ChildProcess(DieMidSideGet(queue: queue, holding: holding), isDaemon: true)
        try child.start()
        #expect(holding.wait(timeout: .seconds(30)))
        #expect(try queue.get(timeout: .milliseconds(50)) == nil, "the consumers' lock is held")
        child.kill()
        _ = try? child.join(timeout: .seconds(10))
        for number in 0..<5 {
            let item = try #require(try queue.get(timeout: .seconds(10)))
            #expect(item.number == number && item.isIntact)
        }
        #expect(try queue.get(timeout: .zero) == nil)
    }

    @Test("a consumer killed after taking a side item, before dropping its datagram: the others go on")
    func consumerKilledAfterStep() throws {
        let queue = try Queue<MixedItem>(capacity: 4096)
        for number in 0..<5 { try queue.put(try MixedItem.make(producer: 0, number: number)) }
        let holding = try ProcessEvent()
        let child = ChildProcess(DieAfterSideStep(queue: queue, holding: holding), isDaemon: true)
        try child.start()
        #expect(holding.wait(timeout: .seconds(30)))
        #expect(queue.count == 4, "item 0 was taken")
        child.kill()
        _ = try? child.join(timeout: .seconds(10))
        for number in 1..<5 {
            let item = try #require(try queue.get(timeout: .seconds(10)))
            #expect(item.number == number && item.isIntact)
        }
        #expect(try queue.get(timeout: .zero) == nil)
        // The socket holds nothing more: a side item put now comes straight back.
        try queue.put(try MixedItem.make(producer: 0, number: 9))
        #expect(try queue.get(timeout: .zero)?.isIntact == true)
    }

    @Test("side items, taken or left in dropped queues, leave no descriptor open and nothing in /dev/shm")
    func noLeaks() throws {
        let child = ChildProcess(SideItemsBalance())
        try child.start()
        #expect(try child.join(timeout: .seconds(60)))
        #expect(child.exitCode == 0)
    }
}
