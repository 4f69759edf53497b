import Glibc

@testable import Multiprocessing

/// What the rows of the synchronization objects (Lock, Barrier, SharedValue) share: the fault
/// a child arms, threads, polling waits, the parent faults and the descriptor limit.

/// A fault a child arms before it uses the object: `action` at `step`, on its `hits + 1`-th pass.
struct ArmedFault: Codable, Sendable, CustomStringConvertible {
    var step: String
    var hits: Int
    var action: FaultInjection.Action

    func arm() { FaultInjection.arm(step, after: hits, action: action) }

    var description: String { "\(action) at \(step) after \(hits) passes" }
}

/// A thread of the runner or of a child, joined with a bound.
final class FaultThread: Sendable {
    private let finished = ThreadSignal()

    init(_ body: @escaping @Sendable () -> Void) {
        let started = startDetachedThread { [finished] in
            body()
            finished.fire()
        }
        precondition(started == 0, "could not start a thread: \(started)")
    }

    /// Whether the thread ended within `timeout`.
    func join(timeout: Duration) -> Bool {
        finished.wait(deadline: Optional(timeout).deadline)
    }
}

/// Waits, sleeping the task between looks, until `condition` holds or `timeout` passes.
func eventually(timeout: Duration, _ condition: () -> Bool) async -> Bool {
    let deadline = ContinuousClock.now.advanced(by: timeout)
    while !condition() {
        if ContinuousClock.now >= deadline { return false }
        // Not `Task.sleep`: its first use makes Dispatch open a timer descriptor for good,
        // which the runner's leak check would count against the case.
        usleep(1000)
    }
    return true
}

/// A seeded start method: most cases fork (fast), some spawn.
func startMethod(_ random: inout SeededRandom) -> StartMethod {
    Int.random(in: 0..<4, using: &random) == 0 ? .spawn : .forkserver
}

/// Joins a child that used an object normally: it must end within the bound and succeed.
func joinSurvivor(_ child: ChildProcess, _ what: String) async -> [String] {
    do {
        guard try await child.join(timeout: .seconds(40)) else {
            child.kill()
            _ = try? await child.join(timeout: .seconds(10))
            return ["\(what) did not end within 40 s"]
        }
        return []
    } catch {
        return ["\(what) failed: \(error)"]
    }
}

/// Joins the child a fault was armed in: it must have died of it (a clear `ChildProcessError`).
func joinVictim(_ child: ChildProcess, _ fault: ArmedFault) async -> (problems: [String], error: String) {
    do {
        guard try await child.join(timeout: .seconds(40)) else {
            child.kill()
            _ = try? await child.join(timeout: .seconds(10))
            return (["the child armed with \(fault) did not end within 40 s"], "")
        }
        // A victim that runs to its end throws (`faultMissed`): a normal end is the
        // `exit(0)` the fault made, which the library reports as a success.
        if fault.action == .exitZero { return ([], "exited with status 0 in the middle of a step") }
        return (["the child armed with \(fault) ended normally"], "")
    } catch let error as ChildProcessError {
        if "\(error)".contains(PlainFailure.faultMissed.description) {
            return (["the child armed with \(fault) ran to its end: the fault never struck"], "")
        }
        return ([], "\(error)")
    } catch {
        return (["the child armed with \(fault) ended with an unexpected error: \(error)"], "")
    }
}

/// The parent faults: `parent` (already started, making and using the object with its own
/// children) gets the fault's signal once `progress()` reaches `threshold`; it must die of
/// that signal (nothing in the library handles SIGINT or SIGTERM in a child: the default
/// action ends it), and its children with it (the runner's leak check sees any survivor).
func signalParent(
    _ parent: ChildProcess, _ fault: Fault, progress: () -> Int, threshold: Int, random: inout SeededRandom
) async -> [String] {
    guard let signal = fault.parentSignal, let pid = parent.pid else { return ["no signal for \(fault)"] }
    var problems: [String] = []
    if !(await eventually(timeout: .seconds(30)) { progress() >= threshold }) {
        problems.append("the parent's tree made \(progress()) of \(threshold) operations in 30 s")
    }
    // A seeded moment within the next few milliseconds, so the signal lands anywhere.
    let delay = Int.random(in: 0..<3000, using: &random)
    if delay > 0 { usleep(UInt32(delay)) }
    kill(pid, signal)
    do {
        if try await parent.join(timeout: .seconds(30)) {
            problems.append("the parent ended normally after \(ProcessSignal(rawValue: signal))")
        } else {
            problems.append("the parent did not die within 30 s of \(ProcessSignal(rawValue: signal))")
            parent.kill()
            _ = try? await parent.join(timeout: .seconds(10))
        }
    } catch let error as ChildProcessError {
        if error.termination != .signaled(ProcessSignal(rawValue: signal)) {
            problems.append("the parent ended otherwise than by \(ProcessSignal(rawValue: signal)): \(error)")
        }
    } catch {
        problems.append("joining the parent threw \(error)")
    }
    return problems
}

/// The spawn-failure fault: lowers this process's descriptor limit to what it has open now
/// plus `headroom`, runs `attempt` until it throws (at most `rounds` times), and restores the
/// limit. The error must name the exhausted limit; `attempt` must leave nothing half-made
/// (the runner's leak check), and the object must work again afterwards (the caller checks).
func withDescriptorLimit(
    headroom: Int, rounds: Int, _ attempt: (Int) async throws -> Void
) async -> (problems: [String], error: String) {
    var saved = rlimit()
    getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &saved)
    // Descriptors are handed out lowest first: the limit is one more than the highest one
    // allowed, so count from the highest open now.
    let highest = Int(openDescriptors().keys.max() ?? 2)
    var lowered = saved
    lowered.rlim_cur = rlim_t(highest + 1 + headroom)
    setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &lowered)
    var outcome: (problems: [String], error: String) = ([], "")
    do {
        for round in 0..<rounds { try await attempt(round) }
        outcome.problems.append("nothing failed in \(rounds) rounds with \(headroom) descriptors to spare")
    } catch {
        let text = "\(error)"
        outcome.error = text
        if !(text.contains("Too many open files") || text.contains("EMFILE")) {
            outcome.problems.append("the error does not name the descriptor limit: \(text)")
        }
    }
    setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &saved)
    return outcome
}

extension ChildProcessError {
    /// How the child ended, if the error says.
    var termination: Termination? {
        if case .terminated(let termination) = reason { return termination }
        return nil
    }
}

/// A failure of a case's own process, said in a sentence.
struct PlainFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }

    /// What a child armed with a fault throws if it reaches its end alive.
    static let faultMissed = PlainFailure("the armed fault never struck")
}

/// The shared state of a case whose processes all hammer one object (a lock, a shared
/// value): a gate that starts them together, a stop event, and one operation.
protocol ContendedCase: Codable, Sendable {
    var gate: ProcessEvent { get }
    var stop: ProcessEvent { get }
    /// One operation of the kind `mode` (0..<4) names.
    func operate(mode: Int)
    /// One operation of the process's main thread (by default `operate` of a random mode).
    func operateOnMainThread(using random: inout SeededRandom) async
    /// Throws when the case saw operations fail (by default nothing to check).
    func checkFinished() throws
}

extension ContendedCase {
    func operateOnMainThread(using random: inout SeededRandom) async {
        operate(mode: Int.random(in: 0..<4, using: &random))
    }

    func checkFinished() throws {}
}

/// A process of a contended case: `threads` threads (the main one included) of `operations`
/// operations each (0: until `stop`), started together by the gate; for the parent faults,
/// its own `children` doing the same. A process armed with a fault that runs to its end
/// throws `faultMissed`.
struct ContendedUser<Case: ContendedCase>: ProcessTarget {
    var shared: Case
    var threads: Int
    var operations: Int
    var seed: UInt64
    var fault: ArmedFault?
    var children: Int = 0

    func run() async throws {
        fault?.arm()
        var random = SeededRandom(seed: seed)
        var started: [ChildProcess] = []
        for index in 0..<children {
            let child = ChildProcess(
                ContendedUser(
                    shared: shared, threads: threads, operations: operations, seed: seed &+ UInt64(index + 1)),
                startMethod: startMethod(&random))
            try await child.start()
            started.append(child)
        }
        guard try await shared.gate.wait(timeout: .seconds(30)) else { throw PlainFailure("the gate never opened") }
        let (shared, operations) = (self.shared, self.operations)
        let workers = (1..<max(1, threads)).map { thread in
            let threadSeed = seed &+ UInt64(thread) &* 7919
            return FaultThread {
                var random = SeededRandom(seed: threadSeed)
                var done = 0
                while operations == 0 ? !shared.stop.isSet : done < operations {
                    shared.operate(mode: Int.random(in: 0..<4, using: &random))
                    done += 1
                }
            }
        }
        var done = 0
        while operations == 0 ? !shared.stop.isSet : done < operations {
            await shared.operateOnMainThread(using: &random)
            done += 1
        }
        for worker in workers where !worker.join(timeout: .seconds(60)) {
            throw PlainFailure("a thread did not finish")
        }
        for child in started { try await child.join() }
        if fault != nil { throw PlainFailure.faultMissed }
        try shared.checkFinished()
    }
}
