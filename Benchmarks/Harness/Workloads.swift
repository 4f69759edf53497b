// The Swift side of each workload, next to the Python line it is compared with and the
// floor it is read against (Benchmarks/Python/bench.py and Benchmarks/Floor/floor.c hold
// the other two sides, under the same names).

import Multiprocessing

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
    ]
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

private let clock = ContinuousClock()

private func seconds(_ duration: Duration) -> Double {
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
