// The MPI pool's side of issue 14's benchmarks, run under mpirun (rank 0 runs this `main`;
// the other ranks serve its pools). MPI/Benchmarks/compare.py runs it and mpi4py_bench.py in
// alternating rounds and prints the table; alone:
//
//     mpirun --allow-run-as-root --oversubscribe --enable-recovery -np 4 \
//         MPI/.build/release/mpi-benchmarks [--size tiny|full] [--only NAME]
//
// Prints one JSON object line per workload on stdout, as mpi4py_bench.py and bench.py do:
// {"name", "unit", "value", "samples", "detail"}. mpi-rank-killed kills a worker rank, so it
// runs last, and only when asked for by name or in a full list. mpi-engine-costs (rank 0's
// CPU split into per-message work and polling, for MPI/SCALING.md) runs only by name; run it
// with `-x SWIFT_MPI_ENGINE_STATS=1` for the engine thread's share (MPI/Benchmarks/engine_costs.py).
import Glibc
import Multiprocessing
@_spi(Benchmarks) import MultiprocessingMPI

struct Square: ProcessFunction {
    func callAsFunction(_ input: Int) -> Int { input * input }
}

/// Item `index` SIGKILLs its worker rank (the local worker's parent: the pool starts them
/// with `.spawn`), after writing the monotonic time to `stamp`.
struct KillRankAt: ProcessFunction {
    var index: Int
    var stamp: String
    func callAsFunction(_ input: Int) -> Int {
        if input == index {
            var now = timespec()
            clock_gettime(CLOCK_MONOTONIC, &now)
            let text = "\(Int(now.tv_sec) * 1_000_000_000 + now.tv_nsec)"
            let file = fopen(stamp, "w")
            fputs(text, file)
            fclose(file)
            kill(getppid(), SIGKILL)
            sleep(60)
        }
        return input * 2
    }
}

let clock = ContinuousClock()

func seconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
}

func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    return sorted.count % 2 == 1
        ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
}

/// The number written in the file at `path`, if there is one.
func readNumber(_ path: String) -> Int? {
    guard let file = fopen(path, "r") else { return nil }
    defer { fclose(file) }
    var buffer = [CChar](repeating: 0, count: 64)
    guard fgets(&buffer, Int32(buffer.count), file) != nil else { return nil }
    return buffer.withUnsafeBufferPointer { Int(String(cString: $0.baseAddress!)) }
}

/// CPU time this process used so far (all its threads), in seconds.
func processCPUSeconds() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
}

/// The wall clock, as the launcher's `time.time_ns()` reads it.
func wallNanoseconds() -> Int {
    var now = timespec()
    clock_gettime(CLOCK_REALTIME, &now)
    return Int(now.tv_sec) * 1_000_000_000 + now.tv_nsec
}

func monotonicNanoseconds() -> Int {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Int(now.tv_sec) * 1_000_000_000 + now.tv_nsec
}

func emit(_ name: String, _ unit: String, _ value: Double, samples: Int, _ detail: String) {
    let escaped = String(detail.map { $0 == "\"" ? "'" : $0 })
    print(
        "{\"name\": \"\(name)\", \"unit\": \"\(unit)\", \"value\": \(value), \"samples\": \(samples), \"detail\": \"\(escaped)\"}"
    )
    fflush(nil)
}

/// `--size tiny|full` and `--only NAME`.
func parseArguments() -> (tiny: Bool, only: String?) {
    var arguments = CommandLine.arguments.dropFirst()
    var tiny = false
    var only: String?
    while let argument = arguments.popFirst() {
        switch argument {
        case "--size": tiny = arguments.popFirst() == "tiny"
        case "--only": only = arguments.popFirst()
        default: Failure.fail("unknown argument \(argument)")
        }
    }
    return (tiny, only)
}

let (tiny, only) = parseArguments()

enum Failure {
    static func fail(_ text: String) -> Never {
        let line = Array("mpi-benchmarks: \(text)\n".utf8)
        _ = line.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
        exit(2)
    }
}

func wanted(_ name: String) -> Bool { only == nil || only == name }

// The MPI world starts once, before any timing: the ranks' own launch and MPI_Init are
// outside every figure, as in mpi4py_bench.py (where they happen before the script runs).
let world = try await MPIWorld.start()
let ranks = world.liveWorkerRanks.count

if wanted("mpi-start") {
    // From creating the pool until every worker rank has answered one task: the job's first
    // pool (the figure, as mpi4py_bench.py times its first executor), then later ones.
    var samples: [Double] = []
    var firstReady = 0
    for _ in 0..<(tiny ? 2 : 6) {
        let start = clock.now
        let pool = try await MPIPool()
        _ = try await pool.map(Square(), Array(0..<ranks), chunkSize: 1)
        samples.append(seconds(clock.now - start) * 1000)
        if firstReady == 0 { firstReady = wallNanoseconds() }
        pool.close()
        await pool.join()
    }
    if let launch = getenv("MPI_BENCH_LAUNCH_NS").flatMap({ Int(String(cString: $0)) }) {
        // The whole start as a user sees it: from just before mpirun to the first pool ready.
        emit(
            "mpi-start-launch", "ms", Double(firstReady - launch) / 1e6, samples: 1,
            "from just before mpirun to the first MPIPool's readiness (the program's start, MPI_Init, the pool)")
    }
    emit(
        "mpi-start", "ms", samples[0], samples: 1,
        "the job's first MPIPool() until each of the \(ranks) worker ranks answered one task (each rank starts a 1-worker local pool); later pools median \(median(Array(samples.dropFirst()))) ms"
    )
}

if wanted("mpi-map-chunk1") {
    let count = tiny ? 2_000 : 20_000
    try await withMPIPool { pool in
        let inputs = Array(0..<count)
        _ = try await pool.map(Square(), inputs, chunkSize: 1)
        var samples: [Double] = []
        var cpu: [Double] = []
        for _ in 0..<3 {
            let start = clock.now
            let cpuBefore = processCPUSeconds()
            let outputs = try await pool.map(Square(), inputs, chunkSize: 1)
            samples.append(Double(count) / seconds(clock.now - start))
            cpu.append((processCPUSeconds() - cpuBefore) / Double(count) * 1e6)
            guard outputs.last == (count - 1) * (count - 1) else { Failure.fail("wrong outputs") }
        }
        emit(
            "mpi-map-chunk1", "tasks/s", median(samples), samples: samples.count,
            "map of \(count) trivial tasks, chunk size 1, \(ranks) worker ranks; median of 3 maps; rank 0's CPU \(median(cpu)) us per task"
        )
    }
}

if wanted("mpi-apply-latency") {
    try await withMPIPool { pool in
        for number in 0..<100 { _ = try await pool.apply(Square(), number) }
        var samples: [Double] = []
        let cpuBefore = processCPUSeconds()
        for number in 0..<(tiny ? 200 : 2_000) {
            let start = clock.now
            let output = try await pool.apply(Square(), number)
            samples.append(seconds(clock.now - start) * 1e6)
            guard output == number * number else { Failure.fail("wrong output") }
        }
        let cpu = (processCPUSeconds() - cpuBefore) / Double(samples.count) * 1e6
        emit(
            "mpi-apply-latency", "us", median(samples), samples: samples.count,
            "apply on an idle pool of \(ranks) worker ranks; median of \(samples.count); rank 0's CPU \(cpu) us per apply (its MPI thread's polling included)"
        )
    }
}

if only == "mpi-engine-costs" {
    try await measureEngineCosts()
}

if only == "mpi-rank-killed" || (only == nil && !tiny) {
    // Last: it kills a worker rank for good.
    let stamp = "/tmp/mpi-benchmarks-killed-\(getpid())"
    defer { unlink(stamp) }
    let (ended, failed) = try await withMPIPool(startMethod: .spawn) { pool in
        let results = await pool.results(KillRankAt(index: 500, stamp: stamp), Array(0..<1000), chunkSize: 1)
        return (monotonicNanoseconds(), results.enumerated().filter { (try? $1.get()) != $0 * 2 })
    }
    guard let killedAt = readNumber(stamp) else { Failure.fail("item 500 left no stamp") }
    var named: Set<Int> = []
    for (_, result) in failed {
        if case .failure(let error) = result, case .rankLost = error.reason, let rank = error.rank {
            named.insert(rank)
        }
    }
    emit(
        "mpi-rank-killed", "s", Double(ended - killedAt) / 1e9, samples: 1,
        "item 500 of a 1,000-item map SIGKILLs its rank: the map ended with \(failed.count) failed items naming rank(s) \(named.sorted()), \(1000 - failed.count) correct; seconds from the kill to the map's end (liveness bound \(world.liveness.lostAfter))"
    )
}
