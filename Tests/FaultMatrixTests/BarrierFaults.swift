import Glibc
import Testing

@testable import Multiprocessing

/// Barrier: `ProcessBarrier` with parties in several processes, some processes with several
/// party threads, some parties waiting through the `async` form, over several rounds.
///
/// The promise checked: a party that dies never hangs the others. Dying after it arrived
/// (waiting, or inside the barrier's own section) breaks the barrier for the others with
/// `ProcessBarrierError.partyDied` naming it, unless its generation had opened already; dying
/// before it arrives is noticed by the others' timeout (`timedOut`: nobody knows it was to
/// come). Every party sees the same outcome for each generation; a generation that passes
/// gives each party its own index; `reset()` makes the barrier usable again.

/// How a party's wait in a round ended, in the shared results.
enum RoundResult: Int, CustomStringConvertible {
    case none = 0, passed, partyDied, timedOut, aborted, reset, other

    init(_ error: any Error) {
        switch error {
        case ProcessBarrierError.partyDied: self = .partyDied
        case ProcessBarrierError.timedOut: self = .timedOut
        case ProcessBarrierError.aborted: self = .aborted
        case ProcessBarrierError.reset: self = .reset
        default: self = .other
        }
    }

    var description: String {
        switch self {
        case .none: "none"
        case .passed: "passed"
        case .partyDied: "partyDied"
        case .timedOut: "timedOut"
        case .aborted: "aborted"
        case .reset: "reset"
        case .other: "another error"
        }
    }
}

/// Everything the processes of a barrier case share.
struct BarrierCase: Codable, Sendable {
    let barrier: ProcessBarrier
    let parties: Int
    let rounds: Int
    /// Per party and round: a `RoundResult`, the index + 1 a passed wait returned, and the
    /// pid a `partyDied` named.
    let results: SharedArray<Int>
    let indices: SharedArray<Int>
    let named: SharedArray<Int>
    /// The round the victim is in (it stores it before each wait), and the last round it
    /// began to wait in, so the others can let it arrive first.
    let victimRound: SharedValue<Int>
    /// Passed waits, all parties together (the parent faults' progress).
    let passes: SharedValue<Int>
    /// Processes ready to begin (their children started): the runner opens the gate once all
    /// are, so that no round starts while a process is still starting (a timeout then).
    let ready: SharedValue<Int>
    let gate: ProcessEvent

    init(parties: Int, rounds: Int) throws {
        barrier = try ProcessBarrier(parties: parties)
        self.parties = parties
        self.rounds = rounds
        results = try SharedArray<Int>(count: parties * rounds)
        indices = try SharedArray<Int>(count: parties * rounds)
        named = try SharedArray<Int>(count: parties * rounds)
        victimRound = try SharedValue(-1)
        passes = try SharedValue(0)
        ready = try SharedValue(0)
        gate = try ProcessEvent()
    }

    /// Records a wait's outcome; `false` once the party must stop (the barrier broke).
    func record(party: Int, round: Int, _ outcome: Result<Int, any Error>) -> Bool {
        let slot = party * rounds + round
        switch outcome {
        case .success(let index):
            indices[slot] = index + 1
            results[slot] = RoundResult.passed.rawValue
            passes.add(1)
            return true
        case .failure(let error):
            if case ProcessBarrierError.partyDied(let pid) = error { named[slot] = Int(pid) }
            results[slot] = RoundResult(error).rawValue
            return false
        }
    }
}

/// Where the victim places itself in each round, so that the step it is armed at is passed.
enum Arrival: String, Codable {
    /// Anywhere.
    case any
    /// After every other party waits (the steps of the party that opens a generation).
    case last
    /// Before the others (the steps of a party that waits); `slow`: the others come 120 ms
    /// later, so the victim sleeps at least one slice.
    case first, firstSlow
}

/// One process's parties: `threads` party threads (the first through the `async` form when
/// `async`), waiting `rounds` times each, or until the barrier breaks.
struct BarrierUser: ProcessTarget {
    var shared: BarrierCase
    var firstParty: Int
    var threads: Int
    var usesAsync: Bool
    var isVictim = false
    var arrival = Arrival.any
    var timeout: Duration
    var fault: ArmedFault?
    /// For the parent faults: children to start, each with these parties.
    var children: [BarrierUser] = []

    func run() async throws {
        fault?.arm()
        var random = SeededRandom(seed: UInt64(firstParty) &* 31 &+ 7)
        var started: [ChildProcess] = []
        for child in children {
            let process = ChildProcess(child, startMethod: startMethod(&random))
            try await process.start()
            started.append(process)
        }
        shared.ready.add(1)
        guard try await shared.gate.wait(timeout: .seconds(30)) else { throw PlainFailure("the gate never opened") }
        let workers = (1..<max(1, threads)).map { thread in
            FaultThread { [self] in partyLoop(party: firstParty + thread) }
        }
        if usesAsync {
            for round in 0..<shared.rounds {
                await arrive(round)
                let outcome: Result<Int, any Error>
                do { outcome = .success(try await shared.barrier.wait(timeout: timeout)) } catch {
                    outcome = .failure(error)
                }
                if !shared.record(party: firstParty, round: round, outcome) { break }
            }
        } else {
            partyLoop(party: firstParty)
        }
        for worker in workers where !worker.join(timeout: .seconds(60)) {
            throw PlainFailure("a party thread did not finish")
        }
        for child in started { try await child.join() }
        if fault != nil { throw PlainFailure.faultMissed }
    }

    private func partyLoop(party: Int) {
        for round in 0..<shared.rounds {
            arriveBlocking(round)
            let outcome: Result<Int, any Error>
            do { outcome = .success(try shared.barrier.wait(timeout: timeout)) } catch { outcome = .failure(error) }
            if !shared.record(party: party, round: round, outcome) { break }
        }
    }

    private func arrive(_ round: Int) async { arriveBlocking(round) }

    /// Orders the arrivals as `arrival` asks (a bounded wait: a victim that died is not waited for).
    private func arriveBlocking(_ round: Int) {
        // The victim waits for the others (alive); the others give a victim that may be dead
        // only a moment.
        let deadline = ContinuousClock.now.advanced(by: isVictim ? .seconds(2) : .milliseconds(300))
        if isVictim {
            if arrival == .last {
                while shared.barrier.waitingCount < shared.parties - 1, ContinuousClock.now < deadline { usleep(500) }
            }
            shared.victimRound.store(round)
        } else if arrival == .first || arrival == .firstSlow {
            while shared.victimRound.load() < round, ContinuousClock.now < deadline { usleep(500) }
            usleep(arrival == .firstSlow ? 120_000 : 2000)
        }
    }
}

enum BarrierScenario: FaultScenario {
    static let object = "Barrier"

    /// What the others see when the victim dies at a step in round d.
    enum Expectation {
        /// Round d breaks with `partyDied` naming the victim.
        case diedInRound
        /// Round d passes (the victim opened it), round d + 1 breaks with `partyDied` (the
        /// section it died in is repaired by the next arrival).
        case diedNextRound
        /// Round d times out (the victim never arrived).
        case timeoutInRound
        /// Round d passes, round d + 1 times out.
        case timeoutNextRound
        /// Either round d breaks with `partyDied`, or it passes (everyone else arrived before
        /// the death was noticed: the victim counted) and round d + 1 times out.
        case diedOrTimeoutNext
    }

    static let steps: [(step: String, arrival: Arrival, expect: Expectation)] = [
        ("barrier.arrive.begin", .any, .timeoutInRound),
        ("barrier.arrive.recorded", .first, .diedInRound),
        ("barrier.arrive.counted", .first, .diedInRound),
        ("barrier.arrived", .first, .diedOrTimeoutNext),
        ("barrier.waiting", .firstSlow, .diedOrTimeoutNext),
        ("barrier.open.halfway", .last, .diedNextRound),
        ("monitor.beforeWake", .last, .timeoutNextRound),
        ("barrier.opened", .last, .timeoutNextRound),
        ("barrier.released", .first, .timeoutNextRound),
    ]

    /// How long a party waits: far more than the liveness check (200 ms), so that a
    /// `timedOut` where `partyDied` was due is a real miss, yet short enough for a matrix.
    /// (1 s was too short on the project's VM with a load average of 40: a round now and
    /// then timed out before any fault.)
    static let timeout: Duration = .seconds(2)
    /// The parent faults' parties run many quick rounds before the kill: a stall of one of
    /// them then breaks the barrier before the fault (seen once in 50 at 2 s, load 44).
    static let parentTimeout: Duration = .seconds(5)

    static func run(_ point: FaultPoint) async throws -> CaseOutcome {
        var random = point.random
        switch point.fault {
        case .childKilled, .childSegfault, .childFatalError, .childExitZero:
            return try await childFault(point, &random)
        case .parentKilled, .parentInterrupted, .parentTerminated:
            return try await parentFault(point, &random)
        case .spawnFailure:
            return try await spawnFailure(&random)
        }
    }

    /// After a case: the barrier reset, every party passes `rounds` rounds (threads of the
    /// runner), with distinct indices.
    static func reusable(_ barrier: ProcessBarrier, parties: Int) throws -> [String] {
        barrier.reset()
        let indices = try SharedIndices(count: parties)
        let threads = (0..<parties).map { party in
            FaultThread {
                for _ in 0..<2 {
                    guard let index = try? barrier.wait(timeout: .seconds(20)) else { return }
                    indices.add(party: party, index)
                }
            }
        }
        for thread in threads where !thread.join(timeout: .seconds(60)) {
            return ["a party of the reset barrier did not finish"]
        }
        let seen = indices.all
        if seen.count != 2 * parties || Set(seen).count != parties {
            return ["the reset barrier gave the indices \(seen) to \(parties) parties over 2 rounds"]
        }
        return []
    }

    static func childFault(_ point: FaultPoint, _ random: inout SeededRandom) async throws -> CaseOutcome {
        let (step, arrival, expect) = steps[point.index % steps.count]
        let others = Int.random(in: 1...2, using: &random)
        var otherThreads: [Int] = []
        for _ in 0..<others { otherThreads.append(Int.random(in: 1...2, using: &random)) }
        let parties = 1 + otherThreads.reduce(0, +)
        let hits = Int.random(in: 0...2, using: &random)
        let rounds = hits + 2
        let shared = try BarrierCase(parties: parties, rounds: rounds)
        let fault = ArmedFault(step: step, hits: hits, action: point.fault.childAction!)
        var users = [
            BarrierUser(
                shared: shared, firstParty: 0, threads: 1, usesAsync: false, isVictim: true, arrival: arrival,
                timeout: timeout, fault: fault)
        ]
        var next = 1
        for threads in otherThreads {
            users.append(
                BarrierUser(
                    shared: shared, firstParty: next, threads: threads, usesAsync: Bool.random(using: &random),
                    arrival: arrival, timeout: timeout))
            next += threads
        }
        let children = users.map { ChildProcess($0, startMethod: startMethod(&random)) }
        for child in children { try await child.start() }
        let victimPID = Int(children[0].pid ?? 0)
        _ = await eventually(timeout: .seconds(30)) { shared.ready.load() == children.count }
        shared.gate.set()
        var outcome = CaseOutcome()
        let victim = await joinVictim(children[0], fault)
        outcome.problems += victim.problems
        for (index, child) in children.enumerated().dropFirst() {
            outcome.problems += await joinSurvivor(child, "barrier user \(index)")
        }
        let died = shared.victimRound.load()
        outcome.problems += judge(shared, survivors: 1..<parties, deathRound: died, victim: victimPID, expect: expect)
            .map { "\($0) (the victim died at \(step) in round \(died))" }
        outcome.errorSeen = "\(ProcessBarrierError.partyDied(pid: pid_t(victimPID))) / timedOut"
        outcome.problems += try reusable(shared.barrier, parties: parties)
        return outcome
    }

    /// Checks the survivors' results against what the death at a step in `deathRound` makes due.
    static func judge(
        _ shared: BarrierCase, survivors: Range<Int>, deathRound d: Int, victim: Int, expect: Expectation
    ) -> [String] {
        var problems: [String] = []
        func result(_ party: Int, _ round: Int) -> RoundResult {
            RoundResult(rawValue: shared.results[party * shared.rounds + round]) ?? .other
        }
        // Every survivor sees the same thing in every round, and passed rounds give distinct indices.
        var outcomes: [RoundResult] = []
        for round in 0..<shared.rounds {
            let seen = survivors.map { result($0, round) }
            let first = seen[0]
            if seen.contains(where: { $0 != first }) {
                problems.append("round \(round): the parties disagree: \(seen)")
            }
            if first == .passed {
                let indices = survivors.map { shared.indices[$0 * shared.rounds + round] }
                if Set(indices).count != indices.count { problems.append("round \(round): indices \(indices)") }
            }
            if first == .partyDied {
                let pids = Set(survivors.map { shared.named[$0 * shared.rounds + round] })
                if pids != [victim] { problems.append("round \(round): partyDied named \(pids), not \(victim)") }
            }
            outcomes.append(first)
        }
        guard d >= 0 else { return problems + ["the victim never reached a round"] }
        func expectRounds(_ failure: RoundResult, at round: Int) -> Bool {
            for r in 0..<shared.rounds {
                let due: RoundResult = r < round ? .passed : r == round ? failure : .none
                if outcomes[r] != due { return false }
            }
            return true
        }
        let ok: Bool
        switch expect {
        case .diedInRound: ok = expectRounds(.partyDied, at: d)
        case .diedNextRound: ok = expectRounds(.partyDied, at: d + 1)
        case .timeoutInRound: ok = expectRounds(.timedOut, at: d)
        case .timeoutNextRound: ok = expectRounds(.timedOut, at: d + 1)
        case .diedOrTimeoutNext: ok = expectRounds(.partyDied, at: d) || expectRounds(.timedOut, at: d + 1)
        }
        if !ok { problems.append("the survivors saw \(outcomes), not what \(expect) makes due") }
        return problems
    }

    static func parentFault(_ point: FaultPoint, _ random: inout SeededRandom) async throws -> CaseOutcome {
        // The parent's party, two children's, and the runner's: many rounds, until the kill.
        let childThreads = [Int.random(in: 1...2, using: &random), Int.random(in: 1...2, using: &random)]
        let parties = 1 + childThreads.reduce(0, +) + 1
        // Rounds enough for the kill to come first, however late the runner gets to send it
        // (a tree once finished 400 rounds between the threshold and the signal).
        let shared = try BarrierCase(parties: parties, rounds: 20_000)
        let runnerParty = parties - 1
        var children: [BarrierUser] = []
        var next = 1
        for threads in childThreads {
            children.append(
                BarrierUser(
                    shared: shared, firstParty: next, threads: threads, usesAsync: Bool.random(using: &random),
                    timeout: parentTimeout))
            next += threads
        }
        let parent = ChildProcess(
            BarrierUser(
                shared: shared, firstParty: 0, threads: 1, usesAsync: Bool.random(using: &random),
                timeout: parentTimeout, children: children),
            startMethod: startMethod(&random))
        try await parent.start()
        _ = await eventually(timeout: .seconds(30)) { shared.ready.load() == 1 + children.count }
        shared.gate.set()
        let runner = FaultThread {
            for round in 0..<shared.rounds {
                let outcome: Result<Int, any Error>
                do { outcome = .success(try shared.barrier.wait(timeout: parentTimeout)) } catch {
                    outcome = .failure(error)
                }
                if !shared.record(party: runnerParty, round: round, outcome) { break }
            }
        }
        var outcome = CaseOutcome()
        let threshold = Int.random(in: 1...(parties * 30), using: &random)
        outcome.problems += await signalParent(
            parent, point.fault, progress: { shared.passes.load() }, threshold: threshold, random: &random)
        // The runner's party must be let go: by a clear error, within its timeout and a check.
        if !runner.join(timeout: .seconds(20)) {
            outcome.problems.append("the runner's party still waits 20 s after the parent's death")
        } else {
            var last = RoundResult.none
            var named = 0
            for round in 0..<shared.rounds {
                let slot = runnerParty * shared.rounds + round
                guard let result = RoundResult(rawValue: shared.results[slot]), result != .none else { break }
                last = result
                named = shared.named[slot]
            }
            switch last {
            case .timedOut: outcome.errorSeen = "\(ProcessBarrierError.timedOut)"
            case .partyDied: outcome.errorSeen = "\(ProcessBarrierError.partyDied(pid: pid_t(named)))"
            default: outcome.problems.append("the runner's party ended its waits with \(last)")
            }
            if !outcome.problems.isEmpty {
                let seen = (0..<shared.rounds).map { shared.results[runnerParty * shared.rounds + $0] }
                    .prefix { $0 != 0 }.map { RoundResult(rawValue: $0) ?? .other }
                outcome.problems.append("the runner's party saw \(seen.suffix(3)) after \(seen.count) rounds")
            }
        }
        outcome.problems += try reusable(shared.barrier, parties: parties)
        return outcome
    }

    static func spawnFailure(_ random: inout SeededRandom) async throws -> CaseOutcome {
        var made: [BarrierCase] = []
        var children: [ChildProcess] = []
        let headroom = Int.random(in: 0...16, using: &random)
        let methods = (0..<8).map { _ in startMethod(&random) }
        let limited = await withDescriptorLimit(headroom: headroom, rounds: 8) { round in
            // One party in the child, one here: the child's arrival opens each round.
            let object = try BarrierCase(parties: 1, rounds: 3)
            object.gate.set()
            made.append(object)
            let child = ChildProcess(
                BarrierUser(shared: object, firstParty: 0, threads: 1, usesAsync: false, timeout: .seconds(20)),
                startMethod: methods[round])
            try await child.start()
            children.append(child)
        }
        var outcome = CaseOutcome(problems: limited.problems, errorSeen: limited.error)
        for (index, child) in children.enumerated() {
            do {
                _ = try await child.join(timeout: .seconds(40))
            } catch {
                let text = "\(error)"
                if !(text.contains("Too many open files") || text.contains("descriptor")) {
                    outcome.problems.append("child \(index), started near the limit, failed unclearly: \(text)")
                }
            }
        }
        made = []
        children = []
        // With the limit back: a barrier between a child and a thread here works.
        let shared = try BarrierCase(parties: 2, rounds: 3)
        shared.gate.set()
        let child = ChildProcess(
            BarrierUser(shared: shared, firstParty: 0, threads: 1, usesAsync: false, timeout: .seconds(20)),
            startMethod: startMethod(&random))
        try await child.start()
        let here = FaultThread {
            for round in 0..<3 {
                let outcome: Result<Int, any Error>
                do { outcome = .success(try shared.barrier.wait(timeout: .seconds(20))) } catch {
                    outcome = .failure(error)
                }
                if !shared.record(party: 1, round: round, outcome) { break }
            }
        }
        outcome.problems += await joinSurvivor(child, "the barrier party after the limit was restored")
        if !here.join(timeout: .seconds(30)) { outcome.problems.append("the runner's party did not finish") }
        if shared.passes.load() != 6 {
            outcome.problems.append("\(shared.passes.load()) passes after the limit, not 6")
        }
        return outcome
    }
}

/// Indices a reset barrier gave, collected from the runner's threads.
final class SharedIndices: Sendable {
    private let storage: SharedArray<Int>
    private let next: SharedValue<Int>

    init(count: Int) throws {
        storage = try SharedArray<Int>(count: 2 * count)
        next = try SharedValue(0)
    }

    func add(party: Int, _ index: Int) {
        let slot = next.add(1) - 1
        storage[slot] = index
    }

    var all: [Int] { Array(storage[0..<next.load()]) }
}

// Not `.serialized`, unlike the other rows: a barrier case mostly waits (a party's death
// before it arrives shows only through the others' 2 s timeout), so its 8 faults run at once
// at little cost, and one after another they took 8 minutes of the suite.
@Suite("Fault matrix: Barrier")
struct BarrierFaultTests {
    @Test("Barrier", .timeLimit(.minutes(10)), arguments: Fault.allCases)
    func barrier(_ fault: Fault) async throws {
        try await FaultMatrix.check(BarrierScenario.self, fault)
    }
}
