// The benchmark harness: each workload in Swift, its Python `multiprocessing` counterpart
// (Benchmarks/Python/bench.py) and a raw-syscall floor in C (Benchmarks/Floor/floor.c),
// run side by side in one invocation, with the ratios.
//
//     swift build -c release --product mp-benchmarks --product mp-floor
//     .build/release/mp-benchmarks [--size tiny|full] [--json FILE] [--only NAME]
//
// Run it from the package root (the Python script is found there).

import Glibc
import Multiprocessing

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

// MARK: - Measuring

let clock = ContinuousClock()

func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    return sorted.count % 2 == 1
        ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
}

func seconds(_ duration: Duration) -> Double {
    let (whole, attoseconds) = duration.components
    return Double(whole) + Double(attoseconds) / 1e18
}

struct Size {
    var tiny: Bool
    func pick(_ full: Int, tiny small: Int) -> Int { tiny ? small : full }
}

/// Start + join of a child that does nothing. Python: `p = ctx.Process(target=noop); p.start(); p.join()`.
func startJoin(_ method: StartMethod, runs: Int, warmup: Int) throws -> Double {
    var samples: [Double] = []
    for index in 0..<(warmup + runs) {
        let start = clock.now
        let child = ChildProcess(Nothing(), startMethod: method)
        try child.start()
        try child.join()
        if index >= warmup { samples.append(seconds(clock.now - start) * 1000) }
    }
    return median(samples)
}

/// Round trips of a small typed message. Python: `conn.send(i); conn.recv()` against `echo`.
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
    return median(samples)
}

/// One-way 1 MiB byte messages. Python: `conn.send_bytes(buf)` × N, then `conn.recv_bytes()` (ack).
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
    return median(samples)
}

/// `[Double]` of 1M elements, encoded, sent, received and decoded. Python: `conn.send(list_of_floats)`.
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
    return median(samples)
}

// MARK: - The counterparts

/// Runs a counterpart program and reads the `value` from the one JSON line it prints.
func counterpart(_ arguments: [String]) -> Double? {
    let command = arguments.map { "'\($0)'" }.joined(separator: " ")
    guard let pipe = popen(command, "r") else { return nil }
    var output = ""
    var buffer = [CChar](repeating: 0, count: 4096)
    while fgets(&buffer, Int32(buffer.count), pipe) != nil {
        output += String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
    let status = pclose(pipe)
    guard status == 0, let range = output.firstRange(of: "\"value\":") else {
        printError("counterpart failed (status \(status)): \(command)")
        return nil
    }
    let rest = output[range.upperBound...].drop { $0 == " " }
    return Double(rest.prefix { "0123456789.eE+-".contains($0) })
}

func printError(_ line: String) {
    var text = line + "\n"
    text.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}

// MARK: - The table

struct Row {
    var name: String
    var unit: String
    var swift: Double
    var python: Double?
    var floor: Double?
    var higherIsBetter: Bool
    var target: String
}

func format(_ value: Double?) -> String {
    guard let value else { return "—" }
    if value >= 100 { return String(Int(value.rounded())) }
    let scaled = (value * 100).rounded() / 100
    return "\(scaled)"
}

func ratio(_ swift: Double, _ other: Double?) -> String {
    guard let other, other > 0 else { return "—" }
    return format(swift / other) + "x"
}

var arguments = CommandLine.arguments.dropFirst()
var size = Size(tiny: false)
var jsonPath: String?
var only: String?
var swiftOnly = false
while let argument = arguments.popFirst() {
    switch argument {
    case "--size": size.tiny = arguments.popFirst() == "tiny"
    case "--json": jsonPath = arguments.popFirst()
    case "--only": only = arguments.popFirst()
    case "--swift-only": swiftOnly = true
    default:
        printError("usage: mp-benchmarks [--size tiny|full] [--json FILE] [--only NAME] [--swift-only]")
        exit(2)
    }
}

let sizeName = size.tiny ? "tiny" : "full"
let binDirectory = String(
    decoding: {
        var buffer = [UInt8](repeating: 0, count: 4096)
        let count = readlink("/proc/self/exe", &buffer, 4095)
        return buffer[0..<max(0, count)]
    }(), as: UTF8.self
).split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
let floorBinary = binDirectory + "/mp-floor"
let pythonScript = "Benchmarks/Python/bench.py"

struct Workload {
    var name: String
    var unit: String
    var higherIsBetter: Bool
    var python: String
    var floor: String?
    var target: String
    var measure: () throws -> Double
}

let workloads: [Workload] = [
    Workload(
        name: "spawn-start-join", unit: "ms", higherIsBetter: false, python: "spawn-start-join",
        floor: "spawn-start-join", target: "<= 0.1x Python spawn",
        measure: { try startJoin(.spawn, runs: size.pick(50, tiny: 3), warmup: size.pick(3, tiny: 1)) }),
    Workload(
        name: "forkserver-start-join", unit: "ms", higherIsBetter: false, python: "fork-start-join",
        floor: "fork-start-join", target: "<= 1 ms and <= 0.5x Python fork",
        measure: { try startJoin(.forkserver, runs: size.pick(300, tiny: 10), warmup: size.pick(10, tiny: 2)) }),
    Workload(
        name: "pingpong", unit: "us", higherIsBetter: false, python: "pingpong", floor: "pingpong",
        target: "<= 1.1x floor", measure: { try pingpong(size: size) }),
    Workload(
        name: "bytes-throughput", unit: "MB/s", higherIsBetter: true, python: "bytes-throughput",
        floor: "bytes-throughput", target: ">= 0.9x floor", measure: { try bytesThroughput(size: size) }),
    Workload(
        name: "double-array", unit: "MB/s", higherIsBetter: true, python: "double-array", floor: nil,
        target: ">= 1000 MB/s", measure: { try doubleArray(size: size) }),
]

var rows: [Row] = []
for workload in workloads where only == nil || only == workload.name {
    printError("running \(workload.name) (\(sizeName))…")
    let swift = try workload.measure()
    let python = swiftOnly ? nil : counterpart(["python3", pythonScript, workload.python, "--size", sizeName])
    let floor = swiftOnly ? nil : workload.floor.flatMap { counterpart([floorBinary, $0, "--size", sizeName]) }
    rows.append(
        Row(
            name: workload.name, unit: workload.unit, swift: swift, python: python, floor: floor,
            higherIsBetter: workload.higherIsBetter, target: workload.target))
}

print("| workload | unit | Swift | Python | floor | Swift/Python | Swift/floor | target |")
print("|---|---|---|---|---|---|---|---|")
for row in rows {
    print(
        "| \(row.name) | \(row.unit) | \(format(row.swift)) | \(format(row.python)) | \(format(row.floor)) "
            + "| \(ratio(row.swift, row.python)) | \(ratio(row.swift, row.floor)) | \(row.target) |")
}

if let jsonPath {
    func number(_ value: Double?) -> String { value.map { "\($0)" } ?? "null" }
    let objects = rows.map { row in
        "  {\"name\": \"\(row.name)\", \"unit\": \"\(row.unit)\", \"swift\": \(number(row.swift)), "
            + "\"python\": \(number(row.python)), \"floor\": \(number(row.floor)), "
            + "\"higherIsBetter\": \(row.higherIsBetter)}"
    }
    let json = "[\n" + objects.joined(separator: ",\n") + "\n]\n"
    guard let file = fopen(jsonPath, "w") else {
        printError("cannot write \(jsonPath)")
        exit(1)
    }
    fputs(json, file)
    fclose(file)
}
