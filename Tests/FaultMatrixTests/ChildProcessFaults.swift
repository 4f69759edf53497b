import Glibc
import Testing

@testable import Multiprocessing

/// A child that arms `action` at `step` and then runs to its end.
struct ArmedChild: ProcessTarget {
    var step: String
    var action: FaultInjection.Action
    func run() {
        FaultInjection.arm(step, action: action)
    }
}

/// A fault armed in a process's work: at `step`, on its `hits + 1`-th pass.
struct Arming: Codable, Sendable, CustomStringConvertible {
    var step: String
    var hits: Int
    var action: FaultInjection.Action

    var description: String { "\(action) at \(step) (hit \(hits + 1))" }
    /// The value of ``FaultInjection/environmentVariable`` that arms it in a new process.
    var environmentValue: String { "\(step):\(hits):\(action.rawValue)" }
}

/// The bytes a child computes for `seed`: checked byte for byte by the parent, so a report
/// cut, doubled or mixed with another is seen.
func expectedOutput(seed: UInt64, count: Int) -> [UInt8] {
    var random = SeededRandom(seed: seed)
    var bytes = [UInt8](repeating: 0, count: count)
    // A word at a time: the tests run unoptimised, and megabytes are made per case.
    bytes.withUnsafeMutableBytes { raw in
        var offset = 0
        while offset + 8 <= count {
            raw.storeBytes(of: random.next(), toByteOffset: offset, as: UInt64.self)
            offset += 8
        }
        let last = random.next()
        for index in offset..<count { raw[index] = UInt8(truncatingIfNeeded: last >> ((index - offset) * 8)) }
    }
    return bytes
}

/// A function child: returns `expectedOutput(seed, count)`, with a fault armed first if asked
/// (it strikes in the report's steps: before it, in the middle of a large one, after it).
struct ComputeOutput: ProcessFunction {
    var arming: Arming?
    func callAsFunction(_ job: [UInt64]) -> [UInt8] {
        if let arming { FaultInjection.arm(arming.step, after: arming.hits, action: arming.action) }
        return expectedOutput(seed: job[0], count: Int(job[1]))
    }
}

/// A target child: arms its fault, if any, and ends.
struct FinishTarget: ProcessTarget {
    var arming: Arming?
    func run() {
        if let arming { FaultInjection.arm(arming.step, after: arming.hits, action: arming.action) }
    }
}

/// A middle process that starts `count` children itself, with a fault armed in its own
/// start protocol (between creating a child and handing it its work).
struct StartingParent: ProcessTarget {
    var arming: Arming
    var count: Int
    var method: StartMethod
    func run() async throws {
        FaultInjection.arm(arming.step, after: arming.hits, action: arming.action)
        var children: [ChildProcess] = []
        for _ in 0..<count {
            let child = ChildProcess(WaitForClose(connection: try Connection<Int>.pair().1), startMethod: method)
            try await child.start()
            children.append(child)
        }
        for child in children { child.kill() }
        for child in children { _ = try await child.join(timeout: .seconds(30)) }
    }
}

/// A grandchild of a parent-fault case: tells the runner its pid over its own connection
/// (handed down through the parent), then waits until that connection ends.
struct ReportingGrandchild: ProcessTarget {
    var connection: Connection<Int32>
    func run() {
        _ = try? connection.send(getpid())
        _ = try? connection.receive()
    }
}

/// The parent of a parent-fault case: starts one grandchild per connection end, one after
/// the other, and then waits (the runner signals it at a seeded moment).
struct SignalledParent: ProcessTarget {
    var ends: [Connection<Int32>]
    var method: StartMethod
    func run() async throws {
        var children: [ChildProcess] = []
        for end in ends {
            let child = ChildProcess(ReportingGrandchild(connection: end), startMethod: method)
            try await child.start()
            children.append(child)
        }
        // Waits for the signal; a bound, so a missed signal fails the case instead of hanging it.
        for child in children { _ = try await child.join(timeout: .seconds(40)) }
    }
}

/// The fork server's steps: they strike in a fork server started fresh, armed through the
/// environment, so the case runs in a process of its own whose server is its own (the
/// runner's server is part of its snapshot and must outlive the case).
struct ForkServerCase: ProcessFunction {
    struct Plan: Codable, Sendable {
        var arming: Arming
        var jobs: [[UInt64]]
    }

    func callAsFunction(_ plan: Plan) async throws -> CaseOutcome {
        setenv(FaultInjection.environmentVariable, plan.arming.environmentValue, 1)
        var outcome = CaseOutcome()
        for (index, job) in plan.jobs.enumerated() {
            let result = await ChildCheck.runFunction(job, arming: nil, method: .forkserver)
            // The first start made the server, armed: the ones it replaces are not.
            if index == 0 { unsetenv(FaultInjection.environmentVariable) }
            ChildCheck.judge(result, job: job, faulty: true, fault: plan.arming, into: &outcome)
        }
        // Works again: a last child through a server that is not armed. The armed one may
        // still be alive (its hit not reached, or its workers are the ones armed): end it.
        if let server = ForkServer.serverID {
            kill(server, SIGKILL)
            await waitUntil { kill(server, 0) != 0 }
        }
        let last: [UInt64] = [99, 64]
        ChildCheck.judge(
            await ChildCheck.runFunction(last, arming: nil, method: .forkserver), job: last, faulty: false,
            fault: plan.arming, into: &outcome)
        return outcome
    }
}

/// Waits until `condition` holds, for at most 10 s, looking every 0.2 ms. (Not `Task.sleep`:
/// its first use makes Dispatch open a timerfd for good, which the leak check would see.)
func waitUntil(_ condition: () -> Bool) async {
    let deadline = ContinuousClock.now.advanced(by: .seconds(10))
    while !condition() && ContinuousClock.now < deadline {
        usleep(200)
        await Task.yield()
    }
}

/// Runs children and judges what came back.
enum ChildCheck {
    enum Result {
        case output([UInt8])
        case succeeded
        case failed(String)
        case timedOut
    }

    static func runFunction(_ job: [UInt64], arming: Arming?, method: StartMethod) async -> Result {
        do {
            guard
                let output = try await ChildProcess.run(
                    ComputeOutput(arming: arming), with: job, timeout: .seconds(30), startMethod: method)
            else { return .timedOut }
            return .output(output)
        } catch {
            return .failed("\(error)")
        }
    }

    static func runTarget(arming: Arming?, method: StartMethod) async -> Result {
        let child = ChildProcess(FinishTarget(arming: arming), startMethod: method)
        do {
            try await child.start()
            guard try await child.join(timeout: .seconds(30)) else {
                child.kill()
                _ = try? await child.join(timeout: .seconds(10))
                return .timedOut
            }
            return .succeeded
        } catch {
            return .failed("\(error)")
        }
    }

    /// The words a clear error about a dead or unstartable child contains.
    static func isClear(_ error: String) -> Bool {
        let words = [
            "SIGKILL", "SIGSEGV", "SIGILL", "SIGTRAP", "exited with status", "could not start", "fork server",
            "EAGAIN", "EMFILE", "ENFILE",
        ]
        return words.contains { error.contains($0) }
    }

    /// Judges one child: a healthy child must give its output; the faulty one may succeed
    /// (the fault did not strike, or struck after its report) or fail with a clear error.
    static func judge(
        _ result: Result, job: [UInt64]?, faulty: Bool, fault: Arming?, reportSent: Bool = false,
        into outcome: inout CaseOutcome
    ) {
        switch result {
        case .output(let output):
            if let job, output != expectedOutput(seed: job[0], count: Int(job[1])) {
                outcome.problems.append("a child's output came back wrong (\(output.count) bytes)")
            }
        case .succeeded:
            break
        case .failed(let error):
            if !faulty {
                outcome.problems.append("a healthy child failed: \(error)")
            } else if reportSent && job != nil {
                // The whole report had gone out before the fault: the output is the answer.
                outcome.lost += 1
                outcome.problems.append("an output that was sent before \(fault?.description ?? "") was lost: \(error)")
            } else if !isClear(error) {
                outcome.problems.append("an unclear error: \(error)")
            } else if outcome.errorSeen.isEmpty {
                outcome.errorSeen = error
            }
        case .timedOut:
            outcome.problems.append("a child did not end within 30 s (\(faulty ? "faulty" : "healthy"))")
        }
    }
}

/// ChildProcess: children (functions and targets, both start methods, several at once) die
/// at every step of the start and report protocols; parents are signalled with children
/// running; the descriptor and process limits run out.
enum ChildProcessScenario: FaultScenario {
    static let object = "ChildProcess"

    /// The steps a child fault strikes at, and where each is armed.
    static let childSteps = [
        "child.afterStartMessage",  // the worker got its work (armed through the environment: spawn)
        "child.beforeReport",  // the work is done, the report not sent
        "stream.send.afterFirstWrite",  // a large report: header and part of the output sent
        "stream.send.midPayload",  // a large report: further writes
        "child.afterReport",  // the whole report sent, the process not yet ended
        "child.start.beforeHandOver",  // a middle process dies between creating a child and handing it its work
        "forkserver.beforeFork",  // a fresh fork server dies with a request taken
        "forkserver.afterFork",  // ... with a worker forked and not yet announced
        "forkserver.worker.beforeStart",  // a forked worker dies before it becomes one
    ]

    static func run(_ point: FaultPoint) async throws -> CaseOutcome {
        var random = point.random
        if let action = point.fault.childAction { return await childFault(action, point.index, &random) }
        if let signal = point.fault.parentSignal { return try await parentFault(signal, &random) }
        return try await spawnFailure(&random)
    }

    private static func childFault(_ action: FaultInjection.Action, _ index: Int, _ random: inout SeededRandom) async
        -> CaseOutcome
    {
        // Every step gets its turn over the points; the rest is drawn.
        // Every step in turn, so 50 points cover each five times or more.
        let step = childSteps[index % childSteps.count]
        var method: StartMethod = Bool.random(using: &random) ? .spawn : .forkserver
        let count = Int.random(in: 2...4, using: &random)
        let faulty = Int.random(in: 0..<count, using: &random)
        var outcome = CaseOutcome()
        switch step {
        case "child.start.beforeHandOver":
            let arming = Arming(step: step, hits: Int.random(in: 0..<count, using: &random), action: action)
            let result = await ChildCheck.runTarget(arming: nil, method: method)
            ChildCheck.judge(result, job: nil, faulty: false, fault: nil, into: &outcome)
            let middle = ChildProcess(StartingParent(arming: arming, count: count, method: method))
            do {
                try await middle.start()
                if try await !middle.join(timeout: .seconds(40)) {
                    middle.kill()
                    _ = try? await middle.join(timeout: .seconds(10))
                    outcome.problems.append("a parent dying at \(arming) did not end")
                }
                if action != .exitZero { outcome.problems.append("a parent survived \(arming)") }
            } catch {
                ChildCheck.judge(.failed("\(error)"), job: nil, faulty: true, fault: arming, into: &outcome)
            }
            // Its children must be gone: the runner's leak check sees any that is not.
            return outcome
        case let step where step.hasPrefix("forkserver."):
            let hits = step == "forkserver.worker.beforeStart" ? 0 : Int.random(in: 0..<count, using: &random)
            let jobs = (0..<count).map { _ in [random.next(), UInt64.random(in: 0...4096, using: &random)] }
            let plan = ForkServerCase.Plan(arming: Arming(step: step, hits: hits, action: action), jobs: jobs)
            do {
                guard let found = try await ChildProcess.run(ForkServerCase(), with: plan, timeout: .seconds(50)) else {
                    return CaseOutcome(problems: ["the fork-server case did not end within 50 s"])
                }
                return found
            } catch {
                return CaseOutcome(problems: ["the fork-server case failed: \(error)"])
            }
        default:
            break
        }
        // The environment arms a spawned worker only: a forked one is a copy of the server.
        if step == "child.afterStartMessage" { method = .spawn }
        let startMethod = method
        let isStream = step.hasPrefix("stream.")
        let hits = step == "stream.send.midPayload" ? Int.random(in: 0...2, using: &random) : 0
        let arming = Arming(step: step, hits: hits, action: action)
        // A report takes several writes only when larger than the socket's buffer.
        let jobs = (0..<count).map { index -> [UInt64] in
            let size =
                isStream && index == faulty
                ? UInt64.random(in: 400_000...2_000_000, using: &random)
                : UInt64.random(in: 0...70_000, using: &random)
            return [random.next(), size]
        }
        let faultyIsTarget = !isStream && Bool.random(using: &random)
        let viaEnvironment = step == "child.afterStartMessage"
        let results = await withTaskGroup(of: (Int, ChildCheck.Result).self) { group in
            // The faulty child first: armed through the environment, the variable is set only
            // until its process exists (the launcher starts one process at a time).
            let before = Set(childProcesses())
            if viaEnvironment { setenv(FaultInjection.environmentVariable, arming.environmentValue, 1) }
            group.addTask {
                let armed = viaEnvironment ? nil : arming
                if faultyIsTarget { return (faulty, await ChildCheck.runTarget(arming: armed, method: startMethod)) }
                return (faulty, await ChildCheck.runFunction(jobs[faulty], arming: armed, method: startMethod))
            }
            if viaEnvironment {
                await waitUntil { !Set(childProcesses()).subtracting(before).isEmpty }
                unsetenv(FaultInjection.environmentVariable)
            }
            for index in 0..<count where index != faulty {
                group.addTask { (index, await ChildCheck.runFunction(jobs[index], arming: nil, method: startMethod)) }
            }
            var results: [(Int, ChildCheck.Result)] = []
            for await result in group { results.append(result) }
            return results
        }
        for (index, result) in results {
            let isFaulty = index == faulty
            ChildCheck.judge(
                result, job: isFaulty && faultyIsTarget ? nil : jobs[index], faulty: isFaulty, fault: arming,
                reportSent: isFaulty && step == "child.afterReport", into: &outcome)
            guard isFaulty else { continue }
            // What must have happened, beyond "an output or a clear error".
            let beforeReport = step == "child.afterStartMessage" || step == "child.beforeReport"
            switch (result, action) {
            case (.output, _) where beforeReport:
                outcome.problems.append("a function succeeded although its process died (\(arming)) before reporting")
            case (.succeeded, let action) where beforeReport && action != .exitZero:
                outcome.problems.append("a target's join succeeded although its process died (\(arming))")
            case (.failed(let error), .exitZero) where faultyIsTarget:
                // Python's rule: a process that exits 0 succeeded, whatever it had left to do.
                outcome.problems.append("a target that called exit(0) (\(arming)) failed: \(error)")
            case (.failed(let error), .exitZero) where !error.contains("before reporting its output"):
                outcome.problems.append("a function whose process called exit(0) failed without saying so: \(error)")
            default:
                break
            }
        }
        return outcome
    }

    /// The runner starts a parent P with one connection end per grandchild (handed down
    /// through P to each grandchild, which reports its pid on it); after a seeded number of
    /// reports, the signal. P must end by it (nothing handles it), and every grandchild with
    /// it: each runner end then sees the end of the stream, and the runner's leak check sees
    /// no process left.
    private static func parentFault(_ signal: Int32, _ random: inout SeededRandom) async throws -> CaseOutcome {
        let method: StartMethod = Bool.random(using: &random) ? .spawn : .forkserver
        let count = Int.random(in: 1...4, using: &random)
        let reportsBefore = Int.random(in: 0...count, using: &random)
        let delay = UInt32.random(in: 0...3000, using: &random)
        var mine: [Connection<Int32>] = []
        var theirs: [Connection<Int32>] = []
        for _ in 0..<count {
            let (a, b) = try Connection<Int32>.pair()
            mine.append(a)
            theirs.append(b)
        }
        var outcome = CaseOutcome()
        let parent = ChildProcess(SignalledParent(ends: theirs, method: method))
        try await parent.start()
        var reported = 0
        for end in mine.prefix(reportsBefore) {
            do {
                if try await end.receive(timeout: .seconds(20)) == nil {
                    outcome.problems.append("a grandchild did not report within 20 s")
                }
                reported += 1
            } catch {
                outcome.problems.append("a grandchild's report failed before any signal: \(error)")
            }
        }
        // A seeded moment: P may be in the middle of starting the next grandchild.
        usleep(delay)
        kill(parent.pid!, signal)
        do {
            if try await !parent.join(timeout: .seconds(20)) {
                outcome.problems.append("the parent survived signal \(signal) (it handles nothing)")
                parent.kill()
                _ = try? await parent.join(timeout: .seconds(10))
            }
        } catch let error as ChildProcessError {
            if error.termination != .signaled(ProcessSignal(rawValue: signal)) {
                outcome.problems.append("the parent ended otherwise than by signal \(signal): \(error)")
            } else {
                outcome.errorSeen = "\(error)"
            }
        }
        // Every grandchild dies with P: each end reaches its end of stream (after the pid
        // report of a grandchild that started). A grandchild that outlived P holds its end open.
        for end in mine {
            var ended = false
            for _ in 0..<2 where !ended {
                do {
                    if try await end.receive(timeout: .seconds(20)) == nil {
                        outcome.problems.append("a grandchild outlived its parent by 20 s")
                        break
                    }
                } catch ConnectionError.endOfStream {
                    ended = true
                } catch {
                    outcome.problems.append("a grandchild's connection failed unclearly: \(error)")
                    ended = true
                }
            }
            end.close()
        }
        return outcome
    }

    /// The descriptor or the process limit runs out while children start (seeded limit and
    /// start method, several starts): each start succeeds with the right output or throws a
    /// clear error naming the cause; nothing is half-made; all works again once lifted.
    private static func spawnFailure(_ random: inout SeededRandom) async throws -> CaseOutcome {
        let method: StartMethod = Bool.random(using: &random) ? .spawn : .forkserver
        let count = Int.random(in: 2...6, using: &random)
        let jobs = (0..<count).map { _ in [random.next(), UInt64.random(in: 0...100_000, using: &random)] }
        let byDescriptors = Bool.random(using: &random)
        let spare = byDescriptors ? Int.random(in: 0...10, using: &random) : Int.random(in: 0...12, using: &random)
        var outcome = CaseOutcome()
        let attempt = { () async -> [ChildCheck.Result] in
            // Started one after another (the limit counts what is alive), run at once.
            await withTaskGroup(of: ChildCheck.Result.self) { group in
                for job in jobs { group.addTask { await ChildCheck.runFunction(job, arming: nil, method: method) } }
                var results: [ChildCheck.Result] = []
                for await result in group { results.append(result) }
                return results
            }
        }
        let results =
            byDescriptors
            ? try await Limits.withDescriptorLimit(spare: spare) { await attempt() }
            : try await Limits.withProcessLimit(spare: spare) { _ in await attempt() }
        for result in results {
            switch result {
            case .output(let output):
                if !jobs.contains(where: { output == expectedOutput(seed: $0[0], count: Int($0[1])) }) {
                    outcome.problems.append("a child's output came back wrong")
                }
            case .failed(let error):
                let cause = byDescriptors ? ["EMFILE", "descriptor"] : ["EAGAIN", "fork server"]
                if !cause.contains(where: error.contains) {
                    outcome.problems.append(
                        "a start under the \(byDescriptors ? "descriptor" : "process") limit failed unclearly: \(error)"
                    )
                } else if outcome.errorSeen.isEmpty {
                    outcome.errorSeen = error
                }
            case .succeeded: break
            case .timedOut: outcome.problems.append("a child under the limit did not end within 30 s")
            }
        }
        // Lifted: it works again.
        let job: [UInt64] = [7, 1000]
        ChildCheck.judge(
            await ChildCheck.runFunction(job, arming: nil, method: method), job: job, faulty: false, fault: nil,
            into: &outcome)
        return outcome
    }
}

@Suite("Fault matrix: ChildProcess", .serialized, .timeLimit(.minutes(10)))
struct ChildProcessFaultTests {
    /// One point, to look at a failing one again: `MP_CHILD_POINT=<fault>:<index>`.
    @Test(.timeLimit(.minutes(2)), .enabled(if: getenv("MP_CHILD_POINT") != nil))
    func onePoint() async throws {
        let parts = String(cString: getenv("MP_CHILD_POINT")!).split(separator: ":")
        let fault = try #require(Fault(rawValue: String(parts[0])))
        let point = FaultPoint(
            object: ChildProcessScenario.object, fault: fault, index: Int(parts[1])!, seed: FaultMatrix.seed)
        let outcome = try await ChildProcess.run(
            CaseRunner<ChildProcessScenario>(), with: point, timeout: .seconds(90))
        print(
            "\(point): \(outcome.map { "lost \($0.lost), problems \($0.problems), leaks \($0.leaks), error \($0.errorSeen)" } ?? "HANG")"
        )
        #expect(outcome != nil)
    }

    @Test("ChildProcess", arguments: Fault.allCases)
    func childProcess(_ fault: Fault) async throws {
        try await FaultMatrix.check(ChildProcessScenario.self, fault)
    }
}
