// mpi-engine-costs: rank 0's CPU in phases of one pool (idle, apply, maps whose requests carry
// 1, 16 and 256 tasks), split into the engine thread's busy rounds, its idle rounds (polling
// and sleeping) and the other threads (encoding, decoding, the pool's tasks). With
// SWIFT_MPI_ENGINE_STATS=1 the engine reads its thread's CPU clock once a round; without it
// only the process's CPU is known (the engine's fields are 0). One JSON line per phase.
// MPI_ENGINE_COSTS_PHASES=idle,apply,requests-of-1,... runs only those phases (empty: none,
// only the pool's start and warm-up; for the worker ranks' CPU, measured from outside).
import Glibc
import Multiprocessing
@_spi(Benchmarks) import MultiprocessingMPI

/// One phase's figures, printed as a JSON line named `mpi-engine-costs/<phase>`.
struct PhaseCosts {
    var phase: String
    var tasks: Int
    var requests: Int
    var wall: Double
    var processCPU: Double
    var engine: EngineStatistics

    func line(load: String) -> String {
        func ns(_ duration: Duration) -> Int {
            Int(duration.components.seconds) * 1_000_000_000 + Int(duration.components.attoseconds / 1_000_000_000)
        }
        let fields: [(String, String)] = [
            ("name", "\"mpi-engine-costs/\(phase)\""), ("unit", "\"s\""), ("value", "\(wall)"), ("samples", "1"),
            ("detail", "\"rank 0's CPU in one phase, load average \(load)\""),
            ("tasks", "\(tasks)"), ("requests", "\(requests)"), ("wall_s", "\(wall)"),
            ("process_cpu_s", "\(processCPU)"), ("counting", "\(engine.enabled)"),
            ("busy_rounds", "\(engine.busyRounds)"), ("idle_rounds", "\(engine.idleRounds)"),
            ("sleeps", "\(engine.sleeps)"), ("busy_cpu_ns", "\(ns(engine.busyCPU))"),
            ("idle_cpu_ns", "\(ns(engine.idleCPU))"), ("reading_ns", "\(ns(engine.readingCost))"),
            ("sends", "\(engine.sends)"), ("receives", "\(engine.receives)"),
            ("heartbeats_sent", "\(engine.heartbeatsSent)"), ("heartbeats_received", "\(engine.heartbeatsReceived)"),
        ]
        return "{" + fields.map { "\"\($0.0)\": \($0.1)" }.joined(separator: ", ") + "}"
    }
}

/// The first number of /proc/loadavg, as text.
func loadAverage() -> String {
    guard let file = fopen("/proc/loadavg", "r") else { return "?" }
    defer { fclose(file) }
    var buffer = [CChar](repeating: 0, count: 64)
    guard fgets(&buffer, Int32(buffer.count), file) != nil else { return "?" }
    let text = buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    return String(text.split(separator: " ").first ?? "?")
}

/// The phases asked for in MPI_ENGINE_COSTS_PHASES; nil: all.
let selectedPhases: Set<String>? = getenv("MPI_ENGINE_COSTS_PHASES").map {
    Set(String(cString: $0).split(separator: ",").map(String.init))
}

/// Runs `body` and prints its phase's figures.
func phase(_ name: String, tasks: Int, requests: Int, _ body: () async throws -> Void) async rethrows {
    if let selectedPhases, !selectedPhases.contains(name) { return }
    let before = world.engineStatistics
    let cpuBefore = processCPUSeconds()
    let start = clock.now
    try await body()
    let wall = seconds(clock.now - start)
    let costs = PhaseCosts(
        phase: name, tasks: tasks, requests: requests, wall: wall, processCPU: processCPUSeconds() - cpuBefore,
        engine: world.engineStatistics.since(before))
    print(costs.line(load: loadAverage()))
    fflush(nil)
}

func measureEngineCosts() async throws {
    let scale = tiny ? 10 : 1
    try await withMPIPool { pool in
        _ = try await pool.map(Square(), Array(0..<2_000), chunkSize: 1)
        // Nothing in flight but the services' waiting receives and the heartbeats.
        try await phase("idle", tasks: 0, requests: 0) { try await Task.sleep(for: .seconds(tiny ? 0.2 : 2)) }
        let applies = 2_000 / scale
        try await phase("apply", tasks: applies, requests: applies) {
            for number in 0..<applies {
                guard try await pool.apply(Square(), number) == number * number else { Failure.fail("wrong output") }
            }
        }
        // mapUnordered sends requests of exactly `chunkSize` tasks; a map of 20,000 sends 256.
        for (size, count) in [(1, 6_000), (16, 24_000), (256, 96_000)] {
            let total = count / scale
            try await phase("requests-of-\(size)", tasks: total, requests: (total + size - 1) / size) {
                var sum = 0
                for try await output in pool.mapUnordered(Square(), 0..<total, chunkSize: size) { sum &+= output }
                guard sum == (0..<total).reduce(0, { $0 &+ $1 * $1 }) else { Failure.fail("wrong outputs") }
            }
        }
        let count = 20_000 / scale
        try await phase("map-chunk1", tasks: count, requests: (count + 255) / 256) {
            let outputs = try await pool.map(Square(), Array(0..<count), chunkSize: 1)
            guard outputs.last == (count - 1) * (count - 1) else { Failure.fail("wrong outputs") }
        }
    }
}
