// Runs one scenario and measures the parent around it: a warm-up round first, then the
// measured round with its deadline, the parent's memory and descriptors sampled throughout,
// and what must be given back checked at the end.

import Glibc

/// How much the parent's resident memory may grow over a measured round, after glibc's free
/// memory is given back on both sides (`malloc_trim`).
///
/// 4 MiB: a leak proportional to the work shows far above it (pool-1m: 4 bytes per task;
/// starts-10k: 420 bytes per child; queue-16x16: 10 bytes per item), while what is left
/// below it is noise no program controls: the pages of thread stacks and malloc arenas
/// first touched in the measured round, the kernel's rounding of what is mapped.
let memoryGrowthLimit = 4 << 20

/// How long the end state may take to settle: children are reaped and descriptors closed by
/// the library's threads, a moment after the last call returns.
let settleTime = Duration.seconds(5)

/// What one scenario did, and what it cost the parent.
struct Outcome {
    var name: String
    var size: Size
    var seconds: Double
    var result: String
    var failures: [String]
    var start: ResourceReading
    var peak: ResourceReading
    var end: ResourceReading
    var samples: Int
    var childrenAtStart: Int
    var childrenAtEnd: Int
}

/// Runs `scenario` at `size`, `rounds` times in a row, after a warm-up round at the tiny size.
func measure(
    _ scenario: Scenario, size: Size, rounds: Int, deadline: Duration?, sampleEvery interval: Duration
) async -> Outcome {
    let sharedMemoryBefore = ParentResources.sharedMemoryNames()

    // Warm-up: the fork server, the library's threads, the cooperative pool's threads and
    // the runtime's caches start on first use and stay for the program's life; they are not
    // growth.
    printError("\(scenario.name): warm-up round (tiny)")
    var failures: [String] = []
    do {
        _ = try await withDeadline(scenario, .tiny) { try await scenario.run(.tiny) }
    } catch {
        failures.append("warm-up round: \(error)")
    }
    await settleAfterWarmUp()

    let childrenAtStart = ParentResources.children()
    let start = ParentResources.readTrimmed()
    printError("\(scenario.name): measured round (\(size)), deadline \(deadline ?? scenario.deadline(size))")
    let sampler = Sampler(interval: interval)
    let clock = ContinuousClock()
    let began = clock.now
    var result = ""
    var settled = true
    var end = start
    for round in 1...rounds {
        do {
            result = try await withDeadline(scenario, size, deadline) { try await scenario.run(size) }
        } catch {
            failures.append("\(error)")
            break
        }
        if rounds > 1 {
            settled = await settle(children: childrenAtStart, descriptors: start.descriptors)
            end = ParentResources.readTrimmed()
            printError(
                "\(scenario.name): after round \(round) of \(rounds): resident \(mebibytes(end.residentBytes)) MiB, "
                    + "\(end.descriptors) descriptors")
        }
    }
    let elapsed = clock.now - began
    let peaks = sampler.stop()

    settled = await settle(children: childrenAtStart, descriptors: start.descriptors)
    end = ParentResources.readTrimmed()
    let childrenAtEnd = ParentResources.children()

    if end.descriptors != start.descriptors {
        failures.append(
            "descriptors: \(end.descriptors) open after the round, \(start.descriptors) before "
                + "(still different after \(settleTime))")
    }
    let growth = end.residentBytes - start.residentBytes
    if growth > memoryGrowthLimit {
        failures.append(
            "resident memory grew by \(mebibytes(growth)) MiB over the round, more than the "
                + "\(mebibytes(memoryGrowthLimit)) MiB allowed")
    }
    let extra = childrenAtEnd.subtracting(childrenAtStart)
    if !extra.isEmpty {
        failures.append(
            "children left after the round: "
                + extra.sorted().map(ParentResources.describe).joined(separator: ", "))
    }
    if !settled && extra.isEmpty && end.descriptors == start.descriptors {
        failures.append("the end state took longer than \(settleTime) to settle")
    }
    // Other programs on the machine (test suites of this library among them) come and go in
    // /dev/shm meanwhile: only a segment the library could have made for this program counts
    // against the scenario (`isOtherProgramsSegment`).
    let added = ParentResources.sharedMemoryNames().subtracting(sharedMemoryBefore)
    let ours = added.filter { !ParentResources.isOtherProgramsSegment($0) }.sorted()
    if !ours.isEmpty {
        failures.append("/dev/shm has new entries: \(ours.joined(separator: ", "))")
    }

    return Outcome(
        name: scenario.name, size: size, seconds: seconds(elapsed), result: result, failures: failures, start: start,
        peak: ResourceReading(
            residentBytes: max(peaks.resident, start.residentBytes, end.residentBytes),
            descriptors: max(peaks.descriptors, start.descriptors, end.descriptors)),
        end: end, samples: peaks.samples, childrenAtStart: childrenAtStart.count, childrenAtEnd: childrenAtEnd.count)
}

/// Runs `body`, ending the program with a message if it passes the scenario's deadline.
private func withDeadline<Value>(
    _ scenario: Scenario, _ size: Size, _ chosen: Duration? = nil, _ body: () async throws -> Value
) async throws -> Value {
    let deadline = chosen ?? scenario.deadline(size)
    let watchdog = Watchdog(deadline: deadline) {
        let children = ParentResources.children().sorted().map(ParentResources.describe)
        return "\(scenario.name) (\(size)) did not finish within \(deadline): a hang. "
            + "Progress: \(StressProgress.summary). "
            + "Children now: \(children.isEmpty ? "none" : children.joined(separator: ", "))"
    }
    defer { watchdog.disarm() }
    StressProgress.reset()
    return try await body()
}

/// Waits until the children are `children` and `descriptors` are open (when given), at most
/// ``settleTime``. Returns whether they were.
private func settle(children: Set<pid_t>?, descriptors: Int?) async -> Bool {
    let clock = ContinuousClock()
    let deadline = clock.now + settleTime
    while true {
        let childrenSettled = children.map { ParentResources.children() == $0 } ?? true
        let descriptorsSettled = descriptors.map { ParentResources.read().descriptors == $0 } ?? true
        if childrenSettled && descriptorsSettled { return true }
        if clock.now >= deadline { return false }
        try? await Task.sleep(for: .milliseconds(20))
    }
}

/// Waits until the children and the descriptor count stay the same over 200 ms (at most
/// ``settleTime``): the warm-up round's workers may still be being reaped when it returns.
private func settleAfterWarmUp() async {
    let clock = ContinuousClock()
    let deadline = clock.now + settleTime
    var last = (ParentResources.children(), ParentResources.read().descriptors)
    var steady = 0
    while steady < 10 && clock.now < deadline {
        try? await Task.sleep(for: .milliseconds(20))
        let now = (ParentResources.children(), ParentResources.read().descriptors)
        steady = now == last ? steady + 1 : 0
        last = now
    }
}

/// `bytes` in MiB, one decimal.
func mebibytes(_ bytes: Int) -> String {
    let tenths = (bytes * 10 + (bytes >= 0 ? 1 : -1) * (1 << 19)) / (1 << 20)
    return "\(tenths < 0 && tenths > -10 ? "-" : "")\(tenths / 10).\(abs(tenths % 10))"
}

/// A duration in seconds.
func seconds(_ duration: Duration) -> Double {
    let (whole, fraction) = duration.components
    return Double(whole) + Double(fraction) / 1e18
}
