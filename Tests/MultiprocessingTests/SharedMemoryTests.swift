import Glibc
import Synchronization
import Testing

@testable import Multiprocessing

struct Spot: Equatable, BitwiseCopyable {
    var x: Int
    var y: Int
}

/// Adds to a shared counter `times` times, atomically or under its lock.
struct Increment: ProcessTarget {
    let counter: SharedValue<Int>
    var times: Int
    var locked: Bool
    func run() {
        for _ in 0..<times {
            if locked { counter.withLock { $0 += 1 } } else { counter.add(1) }
        }
    }
}

struct MovePoint: ProcessTarget {
    let point: SharedValue<Spot>
    var times: Int
    func run() {
        for _ in 0..<times {
            point.withLock {
                $0.x += 1
                $0.y -= 1
            }
        }
    }
}

/// Takes the value's lock, says so, and waits to be killed while holding it.
struct HoldValueLockForever: ProcessTarget {
    let value: SharedValue<Int>
    let ready: SendingConnection<Int>
    func run() throws {
        try value.withLock { current in
            current = 7
            try ready.send(1)
            sleep(3600)
        }
    }
}

/// Fills its slice with `index * 2` and returns the slice's sum.
struct FillAndSum: ProcessFunction {
    let part: SharedArray<Double>
    func callAsFunction(_ input: Int) -> Double {
        for index in part.indices { part[index] = Double(index * 2) }
        return part.withUnsafeBufferPointer { $0.reduce(0, +) }
    }
}

/// Creates a named segment, reports its name, and waits to be killed.
struct CreateSegmentAndWait: ProcessTarget {
    let names: SendingConnection<String>
    func run() throws {
        let segment = try SharedMemory(creating: nil, size: 4096)
        segment.withUnsafeMutableBytes { $0.storeBytes(of: 99, as: Int.self) }
        try names.send(segment.name)
        sleep(3600)
    }
}

struct ReadSegment: ProcessFunction {
    func callAsFunction(_ name: String) throws -> Int {
        let segment = try SharedMemory(attachingTo: name)
        return segment.withUnsafeMutableBytes { $0.load(as: Int.self) }
    }
}

/// Makes and drops shared values, arrays and regions sent over a connection, then checks
/// that the number of open descriptors is back where it was.
struct SharedDescriptorsBalance: ProcessTarget {
    func run() throws {
        let (a, b) = try Connection<SharedArray<Int>>.pair()
        _ = try SharedValue(0)  // the first use may open descriptors of its own (the reactor)
        let before = openDescriptors().count
        for round in 0..<50 {
            let value = try SharedValue(round)
            let array = try SharedArray(repeating: round, count: 100)
            try a.send(array)
            let received = try b.receive()
            guard received[99] == round, value.load() == round else { throw PlainError() }
        }
        let after = openDescriptors()
        guard after.count == before else {
            throw InventoryError(item: "descriptors: \(after.values.sorted())", missing: after.count - before)
        }
    }
}

func shmExists(_ name: String) -> Bool { access("/dev/shm/" + name, F_OK) == 0 }

@Suite("Shared memory", .timeLimit(.minutes(2)))
struct SharedMemoryTests {
    @Test("an atomic counter incremented by processes and threads at once is exact", arguments: [false, true])
    func counter(locked: Bool) throws {
        let counter = try SharedValue(0)
        let children = (0..<3).map { _ in
            ChildProcess(Increment(counter: counter, times: 20_000, locked: locked), startMethod: .forkserver)
        }
        for child in children { try child.start() }
        let threads = (0..<2).map { _ in
            TestThread {
                for _ in 0..<20_000 {
                    if locked { counter.withLock { $0 += 1 } } else { counter.add(1) }
                }
            }
        }
        for thread in threads { thread.join() }
        for child in children { #expect(try child.join(timeout: .seconds(60))) }
        #expect(counter.load() == 5 * 20_000)
        #expect(counter.value == 5 * 20_000)
    }

    @Test("atomic operations: exchange, compare-exchange, subtract")
    func atomics() throws {
        let value = try SharedValue(10)
        #expect(value.exchange(20) == 10)
        #expect(value.compareExchange(expected: 5, desired: 6) == (false, 20))
        #expect(value.compareExchange(expected: 20, desired: 6) == (true, 20))
        #expect(value.subtract(2) == 4)
        value.store(-1)
        #expect(value.load() == -1)
    }

    @Test("a trivial struct updated under the lock from several processes stays consistent")
    func lockedStruct() throws {
        let point = try SharedValue(Spot(x: 0, y: 0))
        let children = (0..<3).map { _ in ChildProcess(MovePoint(point: point, times: 5_000)) }
        for child in children { try child.start() }
        for child in children { #expect(try child.join(timeout: .seconds(60))) }
        #expect(point.value == Spot(x: 15_000, y: -15_000))
    }

    @Test("a process killed while holding a value's lock does not lock the others out, and its update is not seen")
    func lockHolderKilled() throws {
        let value = try SharedValue(0)
        let (ready, readySender) = try Connection<Int>.oneWayPair()
        let holder = ChildProcess(HoldValueLockForever(value: value, ready: readySender))
        try holder.start()
        #expect(try ready.receive(timeout: .seconds(30)) == 1)
        holder.kill()
        try holder.join()
        let start = ContinuousClock.now
        value.withLock { $0 += 1 }
        #expect(ContinuousClock.now - start < .seconds(1))
        // The holder had set 7 in its body, which never returned: all or nothing.
        #expect(value.value == 1)
    }

    @Test("a shared array reads as zeros, and slices filled by several processes are seen here")
    func arraySlices() async throws {
        let array = try SharedArray<Double>(count: 1000)
        #expect(array.allSatisfy { $0 == 0 })
        let halves = [array[0..<500], array[500..<1000]]
        #expect(halves[1].startIndex == 500)
        let sums = try await withThrowingTaskGroup(of: Double.self) { group in
            for half in halves { group.addTask { try await ChildProcess.run(FillAndSum(part: half), with: 0) } }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        let expected = (0..<1000).reduce(0.0) { $0 + Double($1 * 2) }
        #expect(sums.reduce(0, +) == expected)
        #expect(array.reduce(0, +) == expected)
        #expect(array[999] == 1998)
    }

    @Test("an array handle decoded as another element type is refused")
    func arrayTypeChecked() throws {
        let (a, b) = try makeStreamPair(maximumMessageSize: 1 << 20)
        try a.sendValue(try SharedArray<Int32>(repeating: 1, count: 10))
        #expect(throws: DecodingError.self) { _ = try b.receiveValue(deadline: nil) as SharedArray<Double>? }
        try a.sendValue(try SharedArray<Int32>(repeating: 1, count: 10))
        #expect(try (b.receiveValue(deadline: nil) as SharedArray<Int32>?)?.count == 10)
    }

    @Test("shared values, arrays and their copies in messages leave no descriptor behind")
    func noDescriptorLeaks() throws {
        let child = ChildProcess(SharedDescriptorsBalance())
        try child.start()
        #expect(try child.join(timeout: .seconds(60)))
    }

    @Test("a named segment: create, attach elsewhere, unlink; names and sizes are checked")
    func namedSegment() async throws {
        let segment = try SharedMemory(creating: nil, size: 8192)
        #expect(segment.size == 8192)
        #expect(shmExists(segment.name))
        segment.withUnsafeMutableBytes { bytes in
            #expect(bytes.allSatisfy { $0 == 0 })
            bytes.storeBytes(of: 1234, as: Int.self)
        }
        #expect(try await ChildProcess.run(ReadSegment(), with: segment.name) == 1234)
        var status = stat()
        #expect(stat("/dev/shm/" + segment.name, &status) == 0)
        #expect(status.st_mode & 0o777 == 0o600)
        #expect(throws: SharedMemoryError.self) { try SharedMemory(creating: segment.name, size: 10) }
        try segment.unlink()
        try segment.unlink()
        #expect(!shmExists(segment.name))
        #expect(throws: SharedMemoryError.self) { try SharedMemory(attachingTo: segment.name) }
        for bad in ["", "a/b", String(repeating: "x", count: 300)] {
            #expect(throws: SharedMemoryError.self) { try SharedMemory(creating: bad, size: 10) }
        }
        for size in [0, -5] {
            #expect(throws: SharedMemoryError.self) { try SharedMemory(creating: nil, size: size) }
        }
    }

    @Test("a named segment is unlinked when its creator is killed, and kept when asked")
    func unlinkedWhenOwnerDies() throws {
        let (names, sender) = try Connection<String>.oneWayPair()
        let creator = ChildProcess(CreateSegmentAndWait(names: sender))
        try creator.start()
        let name = try #require(try names.receive(timeout: .seconds(30)))
        #expect(shmExists(name))
        creator.kill()
        try creator.join()
        #expect(eventually(within: .seconds(5)) { !shmExists(name) })

        let kept = try SharedMemory(creating: nil, size: 100, unlinkWhenOwnerExits: false)
        #expect(shmExists(kept.name))
        try kept.unlink()
        #expect(!shmExists(kept.name))
    }
}
