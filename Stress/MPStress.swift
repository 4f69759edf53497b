// mp-stress: the stress scenarios of the reliability issue, each runnable alone.
//
//     swift run -c release mp-stress [all | pool-1m | workers-64 | starts-10k | queue-16x16]
//                                    [--size full|tiny] [--sample-every MS]
//
// Exits with status 1, after a sentence saying why, on any wrong result, a hang past a
// scenario's deadline, memory or descriptors not given back, a child left, or /dev/shm changed.

import ArgumentParser

@main
struct MPStress: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mp-stress",
        abstract: "Stress the library and check the parent gives back its memory, descriptors and children.",
        discussion: "Scenarios:\n"
            + scenarios.map { "  \($0.name): \($0.summary)" }.joined(separator: "\n")
            + "\n\nEach runs a warm-up round at the tiny size first; the measured round follows.")

    @Argument(help: "The scenario to run: all, \(scenarios.map(\.name).joined(separator: ", ")).")
    var scenario = "all"

    @Option(help: "full: the numbers of the reliability issue; tiny: a quick check.")
    var size = Size.full

    @Option(help: "How many measured rounds in a row, after the warm-up (growth is counted over all of them).")
    var rounds = 1

    @Option(help: "Seconds each measured round may take before it counts as a hang (default: the scenario's own).")
    var deadline: Int?

    @Option(help: "Milliseconds between two readings of the parent's memory and descriptors.")
    var sampleEvery = 100

    func validate() throws {
        guard scenario == "all" || scenarios.contains(where: { $0.name == scenario }) else {
            throw ValidationError(
                "no scenario named \(scenario); choose all, \(scenarios.map(\.name).joined(separator: ", "))")
        }
        guard deadline.map({ $0 > 0 }) ?? true else { throw ValidationError("--deadline must be positive") }
        guard rounds > 0 else { throw ValidationError("--rounds must be positive") }
        guard sampleEvery > 0 else { throw ValidationError("--sample-every must be positive") }
    }

    func run() async throws {
        ParentResources.fixMallocThresholds()
        let selected = scenarios.filter { scenario == "all" || $0.name == scenario }
        var outcomes: [Outcome] = []
        for scenario in selected {
            let outcome = await measure(
                scenario, size: size, rounds: rounds, deadline: deadline.map { .seconds($0) },
                sampleEvery: .milliseconds(sampleEvery))
            report(outcome)
            outcomes.append(outcome)
        }
        printTable(outcomes)
        let failed = outcomes.filter { !$0.failures.isEmpty }.map(\.name)
        if !failed.isEmpty {
            printError("FAIL: \(failed.joined(separator: ", "))")
            throw ExitCode.failure
        }
    }
}

/// The details of one scenario, as soon as it is done.
func report(_ outcome: Outcome) {
    let verdict = outcome.failures.isEmpty ? "PASS" : "FAIL"
    print("\(outcome.name) (\(outcome.size)): \(verdict) in \(format(outcome.seconds)) s: \(outcome.result)")
    for failure in outcome.failures { print("  failure: \(failure)") }
    let growth = outcome.end.residentBytes - outcome.start.residentBytes
    print(
        "  parent memory (MiB): start \(mebibytes(outcome.start.residentBytes)), "
            + "peak \(mebibytes(outcome.peak.residentBytes)), end \(mebibytes(outcome.end.residentBytes)), "
            + "growth \(growth >= 0 ? "+" : "")\(mebibytes(growth)) (limit \(mebibytes(memoryGrowthLimit)))")
    print(
        "  parent descriptors: start \(outcome.start.descriptors), peak \(outcome.peak.descriptors), "
            + "end \(outcome.end.descriptors)")
    print(
        "  children: \(outcome.childrenAtStart) before, \(outcome.childrenAtEnd) after; "
            + "\(outcome.samples) readings")
}

/// A Markdown table of every scenario run, for RELIABILITY.md.
func printTable(_ outcomes: [Outcome]) {
    print("")
    print(
        "| scenario | result | time | parent memory MiB start / peak / end (growth) | descriptors start / peak / end |")
    print("|---|---|---|---|---|")
    for outcome in outcomes {
        let growth = outcome.end.residentBytes - outcome.start.residentBytes
        print(
            "| `\(outcome.name)` | \(outcome.failures.isEmpty ? "pass" : "FAIL") | \(format(outcome.seconds)) s "
                + "| \(mebibytes(outcome.start.residentBytes)) / \(mebibytes(outcome.peak.residentBytes)) / "
                + "\(mebibytes(outcome.end.residentBytes)) (\(growth >= 0 ? "+" : "")\(mebibytes(growth))) "
                + "| \(outcome.start.descriptors) / \(outcome.peak.descriptors) / \(outcome.end.descriptors) |")
    }
}

/// `value` with one decimal.
func format(_ value: Double) -> String {
    let tenths = Int((value * 10).rounded())
    return "\(tenths / 10).\(tenths % 10)"
}
