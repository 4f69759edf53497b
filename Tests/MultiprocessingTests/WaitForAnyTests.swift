import Glibc
import Testing

@testable import Multiprocessing

/// Sends `count` numbers, `pause` apart, then ends (closing its end).
struct SendSlowly: ProcessTarget {
    let results: SendingConnection<Int>
    var first: Int
    var count: Int
    var pause: Double
    func run() async throws {
        for number in first..<(first + count) {
            try await Task.sleep(for: .seconds(pause))
            try await results.send(number)
        }
    }
}

@Suite("Waiting on many objects", .timeLimit(.minutes(1)))
struct WaitForAnyTests {
    @Test("messages from several children are all received through waitForAny, then every end closes")
    func manyConnections() throws {
        var open: [ReceivingConnection<Int>] = []
        var children: [ChildProcess] = []
        for worker in 0..<4 {
            let (receiver, sender) = try Connection<Int>.oneWayPair()
            let child = ChildProcess(
                SendSlowly(results: sender, first: worker * 100, count: 5, pause: 0.01 * Double(worker + 1)),
                startMethod: .forkserver)
            try child.start()
            open.append(receiver)
            children.append(child)
        }
        var received: [Int] = []
        while !open.isEmpty {
            let ready = try waitForAny(open, timeout: .seconds(30))
            #expect(!ready.isEmpty)
            for connection in ready {
                do {
                    received.append(try connection.receive())
                } catch ConnectionError.endOfStream {
                    open.removeAll { $0 === connection }
                }
            }
        }
        #expect(received.sorted() == (0..<4).flatMap { worker in (0..<5).map { worker * 100 + $0 } })
        for child in children { #expect(try child.join(timeout: .seconds(30))) }
    }

    @Test("processes are ready when they end; a timeout returns nothing", arguments: StartMethod.allCases)
    func processes(method: StartMethod) throws {
        let quick = ChildProcess(Sleep(seconds: 0.05), startMethod: method)
        let slow = ChildProcess(Sleep(), isDaemon: true, startMethod: method)
        try quick.start()
        try slow.start()
        #expect(try waitForAny([quick, slow], timeout: .zero).isEmpty || !quick.isAlive)
        let ready = try waitForAny([quick, slow], timeout: .seconds(30))
        #expect(ready.count == 1 && ready[0] === quick)
        let start = ContinuousClock.now
        #expect(try waitForAny([slow], timeout: .milliseconds(100)).isEmpty)
        #expect(ContinuousClock.now - start >= .milliseconds(100))
        #expect(try waitForAny([slow], timeout: .seconds(-1)).isEmpty)
        slow.kill()
        #expect(try waitForAny([slow], timeout: .seconds(30)).count == 1)
        try slow.join()
        try quick.join()
    }

    @Test("connections and processes mixed, async")
    func mixedAsync() async throws {
        let (receiver, sender) = try Connection<Int>.oneWayPair()
        let talker = ChildProcess(SendSlowly(results: sender, first: 7, count: 1, pause: 0.05))
        let sleeper = ChildProcess(Sleep(), isDaemon: true)
        try await talker.start()
        try await sleeper.start()
        let objects: [any Waitable] = [sleeper, receiver]
        let ready = try await waitForAny(objects, timeout: .seconds(30))
        #expect(ready.count == 1 && (ready[0] as? ReceivingConnection<Int>) === receiver)
        #expect(try await receiver.receive() == 7)
        let waiting = Task { try await waitForAny([sleeper]) }
        try await Task.sleep(for: .milliseconds(50))
        waiting.cancel()
        await #expect(throws: CancellationError.self) { try await waiting.value }
        sleeper.kill()
        try await sleeper.join()
        try await talker.join()
    }

    @Test("a message already read into the buffer counts as ready")
    func bufferedMessage() throws {
        let (a, b) = try Connection<Int>.pair()
        try a.send(1)
        try a.send(2)
        #expect(try b.receive() == 1)  // the second may be in b's buffer now, not in the socket
        #expect(try waitForAny([b], timeout: .zero).count == 1)
        #expect(try b.receive() == 2)
        #expect(try waitForAny([b], timeout: .zero).isEmpty)
    }
}

@Suite("Polling", .timeLimit(.minutes(1)))
struct PollTests {
    @Test("poll sees a message already read into the buffer with an earlier one")
    func pollSeesBufferedMessage() throws {
        let (a, b) = try Connection<Int>.pair()
        try a.send(1)
        try a.send(2)
        #expect(try b.receive() == 1)
        #expect(try b.poll())
        #expect(try b.receive() == 2)
        #expect(try !b.poll())
    }
}

struct PutLater: ProcessTarget {
    let queue: Queue<Int>
    func run() async throws {
        try await Task.sleep(for: .milliseconds(100))
        try await queue.put(42)
    }
}

@Suite("Waiting on queues", .timeLimit(.minutes(1)))
struct WaitOnQueueTests {
    @Test("a queue is ready once a child puts an item, among connections and processes")
    func queueAmongOthers() async throws {
        let queue = try Queue<Int>()
        let (receiver, _sender) = try Connection<Int>.oneWayPair()
        let sleeper = ChildProcess(Sleep(), isDaemon: true)
        try await sleeper.start()
        #expect(try await waitForAny([queue], timeout: .zero).isEmpty)
        let putter = ChildProcess(PutLater(queue: queue))
        try await putter.start()
        let objects: [any Waitable] = [receiver, sleeper, queue]
        let ready = try await waitForAny(objects, timeout: .seconds(30))
        #expect(ready.count == 1 && ready[0] === queue)
        #expect(try await queue.get() == 42)
        queue.close()
        #expect(try await waitForAny([queue], timeout: .zero).count == 1, "a closed queue is ready: get throws at once")
        #expect(try await waitForAny([Queue<Int>](), timeout: nil).isEmpty)
        sleeper.kill()
        try await sleeper.join()
        try await putter.join()
        _ = _sender
    }
}
