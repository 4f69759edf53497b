// The Swift side of each workload, next to the Python line it is compared with and the
// floor it is read against (Benchmarks/Python/bench.py and Benchmarks/Floor/floor.c hold
// the other two sides, under the same names).

import Dispatch
import Multiprocessing
import Synchronization

/// How much work one round does: `full` for figures, `tiny` for CI's smoke run.
enum Size: String {
    case tiny, full

    func pick(_ full: Int, tiny small: Int) -> Int { self == .tiny ? small : full }

    /// Five rounds give a median that one odd round (a CPU migration, the host busy) cannot move.
    var defaultRounds: Int { pick(5, tiny: 1) }
}

struct Workload {
    var name: String
    var unit: String
    var higherIsBetter: Bool
    /// The workload's name in bench.py.
    var python: String
    /// The workload's name in floor.c; nil where C has nothing comparable.
    var floor: String?
    var target: String
    /// One round's Swift figure.
    var measure: () throws -> Double
}

/// The workloads, in the order they run. One round of a side is one figure: here, a median
/// over the samples below; for Python and the floor, the one figure an invocation of bench.py
/// or floor.c prints for the same `--size` (each picks its own sample counts).
func workloads(size: Size) -> [Workload] {
    [
        // Python: `p = get_context("spawn").Process(target=noop); p.start(); p.join()`
        // floor: posix_spawn of the floor binary itself, which exits at once, and waitpid.
        Workload(
            name: "spawn-start-join", unit: "ms", higherIsBetter: false, python: "spawn-start-join",
            floor: "spawn-start-join", target: "<= 0.1x Python spawn",
            measure: { try startJoin(.spawn, runs: size.pick(50, tiny: 3), warmup: size.pick(3, tiny: 1)) }),
        // Python: the same with get_context("fork") (Python's own fork server costs more).
        // floor: fork, the child _exits, waitpid.
        Workload(
            name: "forkserver-start-join", unit: "ms", higherIsBetter: false, python: "fork-start-join",
            floor: "fork-start-join", target: "<= 1 ms and <= 0.5x Python fork",
            measure: { try startJoin(.forkserver, runs: size.pick(300, tiny: 10), warmup: size.pick(10, tiny: 2)) }),
        // Python: `conn.send(i); conn.recv()` against `echo`. floor: 8 bytes write/read.
        Workload(
            name: "pingpong", unit: "us", higherIsBetter: false, python: "pingpong", floor: "pingpong",
            target: "<= 1.1x floor", measure: { try pingpong(size: size) }),
        // Python: `conn.send_bytes(buf)` × N, then `conn.recv_bytes()`. floor: write/read, one buffer.
        Workload(
            name: "bytes-throughput", unit: "MB/s", higherIsBetter: true, python: "bytes-throughput",
            floor: "bytes-throughput", target: ">= 0.9x floor", measure: { try bytesThroughput(size: size) }),
        // Python: `conn.send(list_of_floats)` (pickle). No floor: it measures the codec.
        Workload(
            name: "double-array", unit: "MB/s", higherIsBetter: true, python: "double-array", floor: nil,
            target: ">= 1000 MB/s", measure: { try doubleArray(size: size) }),
        // Python: 2 processes, each `for _ in range(n): with v.get_lock(): v.value += 1` on a
        // `Value("q", 0)`. Swift: 2 fork-server processes, each `counter.add(1)` n times.
        // floor: 2 forked processes, each n `__atomic_fetch_add` on one MAP_SHARED word.
        Workload(
            name: "counter-atomic", unit: "M/s", higherIsBetter: true, python: "counter-locked",
            floor: "counter-atomic",
            target: ">= 100x Python's Value", measure: { try counter(locked: false, size: size) }),
        // The same, Swift under the value's lock: `counter.withLock { $0 += 1 }`.
        Workload(
            name: "counter-locked", unit: "M/s", higherIsBetter: true, python: "counter-locked", floor: nil,
            target: ">= 10x Python's Value", measure: { try counter(locked: true, size: size) }),
        // Python: an `Array("d", n)` (400 MB), each of 2 processes sums half (`sum(arr[lo:hi])`).
        // Swift: a `SharedArray<Double>`, each of 2 processes sums a slice.
        Workload(
            name: "array-sum", unit: "MB/s", higherIsBetter: true, python: "array-sum", floor: nil,
            target: ">= 5x Python, >= 1.6x array-sum-one", measure: { try arraySum(processes: 2, size: size) }),
        // One process sums the whole array (Swift: a child, like the two above).
        Workload(
            name: "array-sum-one", unit: "MB/s", higherIsBetter: true, python: "array-sum-one", floor: nil,
            target: "(the single-process reference)", measure: { try arraySum(processes: 1, size: size) }),
        // Python: a child `for i in range(n): q.put(i)` on a `Queue()`, the parent `q.get()` × n.
        // Swift: the same with a `Queue<Int>`, the child a fork-server process.
        Workload(
            name: "queue-small", unit: "msg/s", higherIsBetter: true, python: "queue-small", floor: nil,
            target: ">= 20x Python's Queue", measure: { try queueSmall(size: size) }),
        // Python: the same with `bytes(1024)` items. Swift: `[UInt8]` of 1,024 bytes.
        Workload(
            name: "queue-1kib", unit: "MB/s", higherIsBetter: true, python: "queue-1kib", floor: nil,
            target: ">= 10x Python's Queue", measure: { try queueKiB(size: size) }),
    ] + poolWorkloads(size: size)
}

// MARK: - Children used by the workloads

struct Nothing: ProcessTarget {
    func run() {}
}

/// Python: `def echo(conn): while True: conn.send(conn.recv())`
struct Echo: ProcessTarget {
    let connection: Connection<Int>
    func run() throws {
        while let message = try? connection.receive() { try connection.send(message) }
    }
}

/// Python: `for _ in range(messages): conn.recv_bytes()` then `conn.send_bytes(b"!")`.
struct ByteSink: ProcessTarget {
    let connection: Connection<[UInt8]>
    var messages: Int
    func run() throws {
        while true {
            for _ in 0..<messages {
                guard (try? connection.receiveBytes()) != nil else { return }
            }
            try connection.sendBytes([33])
        }
    }
}

/// Python: `for _ in range(messages): conn.recv()` (unpickles a list of floats), then acks.
struct DoubleSink: ProcessTarget {
    let connection: Connection<[Double]>
    var messages: Int
    func run() throws {
        while true {
            for _ in 0..<messages {
                guard let values = try? connection.receive(), values.count == 1_000_000 else { return }
            }
            try connection.send([])
        }
    }
}

// MARK: - One round of each workload

let clock = ContinuousClock()

func seconds(_ duration: Duration) -> Double {
    let (whole, attoseconds) = duration.components
    return Double(whole) + Double(attoseconds) / 1e18
}

/// Start + join of a child that does nothing; the median over `runs`, in ms.
func startJoin(_ method: StartMethod, runs: Int, warmup: Int) throws -> Double {
    var samples: [Double] = []
    for index in 0..<(warmup + runs) {
        let start = clock.now
        let child = ChildProcess(Nothing(), startMethod: method)
        try child.start()
        try child.join()
        if index >= warmup { samples.append(seconds(clock.now - start) * 1000) }
    }
    return median(samples)!
}

/// Round trips of a small typed message, each timed; the median, in µs.
func pingpong(size: Size) throws -> Double {
    let (mine, theirs) = try Connection<Int>.pair()
    let child = ChildProcess(Echo(connection: theirs))
    try child.start()
    defer {
        mine.close()
        try? child.join()
    }
    for number in 0..<size.pick(1000, tiny: 100) {
        try mine.send(number)
        _ = try mine.receive()
    }
    var samples: [Double] = []
    let count = size.pick(20_000, tiny: 1000)
    samples.reserveCapacity(count)
    for number in 0..<count {
        let start = clock.now
        try mine.send(number)
        _ = try mine.receive()
        samples.append(seconds(clock.now - start) * 1e6)
    }
    return median(samples)!
}

/// One-way 1 MiB byte messages until the child acks; the median over the passes, in MB/s.
func bytesThroughput(size: Size) throws -> Double {
    let messages = size.pick(1024, tiny: 32)
    let (mine, theirs) = try Connection<[UInt8]>.pair()
    let child = ChildProcess(ByteSink(connection: theirs, messages: messages))
    try child.start()
    defer {
        mine.close()
        try? child.join()
    }
    let payload = [UInt8](repeating: 0, count: 1 << 20)
    var samples: [Double] = []
    for _ in 0..<size.pick(3, tiny: 1) {
        let start = clock.now
        for _ in 0..<messages { try mine.sendBytes(payload) }
        _ = try mine.receiveBytes()
        samples.append(Double(messages * payload.count) / seconds(clock.now - start) / 1e6)
    }
    return median(samples)!
}

/// `[Double]` of 1M elements, encoded, sent, received and decoded; the median over the passes,
/// in MB/s of payload (8 bytes per element).
func doubleArray(size: Size) throws -> Double {
    let messages = size.pick(20, tiny: 2)
    let (mine, theirs) = try Connection<[Double]>.pair()
    let child = ChildProcess(DoubleSink(connection: theirs, messages: messages))
    try child.start()
    defer {
        mine.close()
        try? child.join()
    }
    let values = (0..<1_000_000).map { Double($0) * 0.5 }
    var samples: [Double] = []
    for _ in 0..<size.pick(3, tiny: 1) {
        let start = clock.now
        for _ in 0..<messages { try mine.send(values) }
        _ = try mine.receive()
        samples.append(Double(messages * values.count * 8) / seconds(clock.now - start) / 1e6)
    }
    return median(samples)!
}

// MARK: - Shared memory

/// Sums each part in a fork-server child of its own, all at once; the total.
func sumInChildren(_ parts: [SharedArray<Double>]) -> Double {
    let sums = Mutex([Double](repeating: 0, count: parts.count))
    DispatchQueue.concurrentPerform(iterations: parts.count) { index in
        let sum = try! ChildProcess.run(SumSlice(part: parts[index]), with: 0, startMethod: .forkserver)
        sums.withLock { $0[index] = sum }
    }
    return sums.withLock { $0.reduce(0, +) }
}

/// Python: `for _ in range(n): with v.get_lock(): v.value += 1`
struct CountUp: ProcessTarget {
    let counter: SharedValue<Int>
    var times: Int
    var locked: Bool
    func run() {
        if locked {
            for _ in 0..<times { counter.withLock { $0 += 1 } }
        } else {
            for _ in 0..<times { counter.add(1) }
        }
    }
}

/// Python: `sum(arr[lo:hi])`.
struct SumSlice: ProcessFunction {
    let part: SharedArray<Double>
    func callAsFunction(_ input: Int) -> Double {
        part.withUnsafeBufferPointer { buffer in
            // Four accumulators: the additions do not wait on one another.
            var sums = (0.0, 0.0, 0.0, 0.0)
            var index = 0
            while index + 4 <= buffer.count {
                sums.0 += buffer[index]
                sums.1 += buffer[index + 1]
                sums.2 += buffer[index + 2]
                sums.3 += buffer[index + 3]
                index += 4
            }
            while index < buffer.count {
                sums.0 += buffer[index]
                index += 1
            }
            return sums.0 + sums.1 + sums.2 + sums.3
        }
    }
}

/// 2 processes × n increments, from the first start to the last join; in millions per second.
func counter(locked: Bool, size: Size) throws -> Double {
    let times = size.pick(200_000, tiny: 2_000)
    let counter = try SharedValue(0)
    let start = clock.now
    let children = (0..<2).map { _ in
        ChildProcess(CountUp(counter: counter, times: times, locked: locked), startMethod: .forkserver)
    }
    for child in children { try child.start() }
    for child in children { try child.join() }
    let elapsed = seconds(clock.now - start)
    guard counter.load() == 2 * times else { fatalError("the count is \(counter.load()), not \(2 * times)") }
    return Double(2 * times) / elapsed / 1e6
}

/// A 400 MB array of Doubles, summed by `processes` children (each a slice), from the first
/// start to the last result; the median of 3 passes, in MB/s.
func arraySum(processes: Int, size: Size) throws -> Double {
    let count = size.pick(50_000_000, tiny: 500_000)
    let array = try SharedArray<Double>(count: count)
    array.withUnsafeMutableBufferPointer { buffer in
        for index in buffer.indices { buffer[index] = Double(index % 1000) }
    }
    let expected = (0..<count).reduce(0.0) { $0 + Double($1 % 1000) }
    var samples: [Double] = []
    for _ in 0..<size.pick(3, tiny: 1) {
        let start = clock.now
        let parts = (0..<processes).map { part in array[(count * part / processes)..<(count * (part + 1) / processes)] }
        let total = sumInChildren(parts)
        let elapsed = seconds(clock.now - start)
        guard total == expected else { fatalError("the sum is \(total), not \(expected)") }
        samples.append(Double(count * 8) / elapsed / 1e6)
    }
    return median(samples)!
}

// MARK: - Queues

/// Python: `for i in range(n): q.put(i)`.
struct PutNumbers: ProcessTarget {
    let queue: Queue<Int>
    var count: Int
    func run() throws {
        for number in 0..<count { try queue.put(number) }
    }
}

/// Python: `for _ in range(n): q.put(payload)` with `payload = bytes(1024)`.
struct PutKiBs: ProcessTarget {
    let queue: Queue<[UInt8]>
    var count: Int
    func run() throws {
        let payload = [UInt8](repeating: 7, count: 1024)
        for _ in 0..<count { try queue.put(payload) }
    }
}

/// One producer child puts `count` items while the parent gets them, from the start of the
/// child to the last item got (the join follows); the elapsed seconds.
private func drain<Element>(
    _ queue: Queue<Element>, count: Int, producer: some ProcessTarget, check: (Int, Element) -> Bool
) throws -> Double {
    let start = clock.now
    let child = ChildProcess(producer, startMethod: .forkserver)
    try child.start()
    for index in 0..<count {
        let item = try queue.get()
        guard check(index, item) else { fatalError("item \(index) is wrong") }
    }
    let elapsed = seconds(clock.now - start)
    try child.join()
    return elapsed
}

/// 200,000 `Int`s from a child to the parent through a `Queue`; in messages per second.
func queueSmall(size: Size) throws -> Double {
    let count = size.pick(200_000, tiny: 2_000)
    let queue = try Queue<Int>()
    let elapsed = try drain(queue, count: count, producer: PutNumbers(queue: queue, count: count)) { $0 == $1 }
    return Double(count) / elapsed
}

/// 50,000 items of 1 KiB (`[UInt8]`) from a child to the parent through a `Queue`; in MB/s of
/// payload.
func queueKiB(size: Size) throws -> Double {
    let count = size.pick(50_000, tiny: 500)
    let queue = try Queue<[UInt8]>()
    let elapsed = try drain(queue, count: count, producer: PutKiBs(queue: queue, count: count)) { $1.count == 1024 }
    return Double(count * 1024) / elapsed / 1e6
}
