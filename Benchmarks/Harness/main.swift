// The benchmark harness: each workload in Swift, its Python `multiprocessing` counterpart
// (Benchmarks/Python/bench.py) and a raw-syscall floor in C (Benchmarks/Floor/floor.c, which
// the harness compiles itself), in rounds within one invocation, with the ratios.
//
//     swift run -c release mp-benchmarks [--size tiny|full] [--rounds N] [--json FILE]
//                                        [--only NAME] [--swift-only | --no-python] [--strict]
//
// Run it from the package root (or run the binary from anywhere inside the package's .build).

import Glibc

let usage =
    "usage: mp-benchmarks [--size tiny|full] [--rounds N] [--json FILE] [--only NAME] [--swift-only | --no-python] [--strict]"

func exitWithUsage() -> Never {
    printError(usage)
    exit(2)
}

// Hidden: one fresh process's first pool start, for pool-start-first (see PoolWorkloads.swift).
if CommandLine.arguments.dropFirst().first == "--pool-start-first-once" {
    try printFirstPoolStart()
    exit(0)
}

var size = Size.full
var rounds: Int?
var jsonPath: String?
var only: String?
var measureFloor = true
var measurePython = true
var strict = false

var arguments = CommandLine.arguments.dropFirst()
while let argument = arguments.popFirst() {
    switch argument {
    case "--size":
        guard let value = arguments.popFirst().flatMap(Size.init(rawValue:)) else { exitWithUsage() }
        size = value
    case "--rounds":
        guard let value = arguments.popFirst().flatMap({ Int($0) }), value >= 1 else { exitWithUsage() }
        rounds = value
    case "--json":
        guard let value = arguments.popFirst() else { exitWithUsage() }
        jsonPath = value
    case "--only":
        guard let value = arguments.popFirst() else { exitWithUsage() }
        only = value
    case "--swift-only":
        (measureFloor, measurePython) = (false, false)
    case "--no-python":
        measurePython = false
    case "--strict":
        strict = true
    default:
        exitWithUsage()
    }
}

let selected = workloads(size: size).filter { only == nil || $0.name == only }
if selected.isEmpty {
    printError(
        "no workload named \(only ?? ""); the workloads are: "
            + workloads(size: size).map(\.name).joined(separator: ", "))
    exit(2)
}
let roundCount = rounds ?? size.defaultRounds

let harness = harnessDirectory()
let root = packageRoot(harnessDirectory: harness)
let floorBinary = measureFloor ? locateFloor(packageRoot: root, harnessDirectory: harness) : nil
var pythonScript: String?
if measurePython {
    if let root, findInPath("python3") != nil {
        pythonScript = root + "/Benchmarks/Python/bench.py"
    } else {
        let reason =
            root == nil ? "Benchmarks/Python/bench.py not found (run from the package root)" : "no python3 in PATH"
        printError("no Python, Python columns left empty: \(reason)")
    }
}

// Rounds outermost: a workload's rounds are spread over the whole run, so a spell of host
// load lands in one of them rather than in all of them.
var results = selected.map { WorkloadResult(workload: $0) }
for number in 1...roundCount {
    for index in results.indices {
        let workload = results[index].workload
        var round = Round(swift: try workload.measure())
        if let floorBinary, let name = workload.floor {
            round.floor = counterpart([floorBinary, name, "--size", size.rawValue])
        }
        if let pythonScript {
            round.python = counterpart(["python3", pythonScript, workload.python, "--size", size.rawValue])
        }
        results[index].rounds.append(round)
        printError(
            "round \(number)/\(roundCount) \(workload.name): Swift \(format(round.swift)) \(workload.unit)"
                + (round.floor.map { ", floor \(format($0)) (\(format(round.swiftOverFloor, suffix: "x")))" } ?? "")
                + (round.python.map { ", Python \(format($0)) (\(format(round.swiftOverPython, suffix: "x")))" } ?? ""))
    }
}

printTable(results)
if let jsonPath, !writeJSON(results, size: size, floor: floorBinary, to: jsonPath) {
    printError("cannot write \(jsonPath)")
    exit(1)
}

// CI runs with --strict: a floor.c that no longer builds, or a counterpart that no longer runs,
// must fail the run rather than pass as an empty column.
let missing = results.reduce(0) { count, result in
    count
        + result.rounds.filter { measureFloor && result.workload.floor != nil && $0.floor == nil }.count
        + result.rounds.filter { measurePython && $0.python == nil }.count
}
if strict && missing > 0 {
    printError("--strict: \(missing) counterpart figure\(missing == 1 ? "" : "s") missing (see above)")
    exit(1)
}
