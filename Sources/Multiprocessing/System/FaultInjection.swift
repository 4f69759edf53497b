import Glibc
import Synchronization

/// Faults injected at named steps of the library's protocols, for the fault-matrix tests.
///
/// A protocol step that another process depends on (a frame half written, a queue item
/// copied but not yet published, a lock held) calls ``step(_:)`` with its name. Nothing
/// happens unless a test armed a fault for that name in this process: then the process dies
/// there, the way a real process dies (SIGKILL, a segmentation fault, `fatalError`, `exit(0)`
/// with its exit handlers), on the chosen hit. The tests prove that every other process sees
/// a clear error or carries on, with nothing lost that was acknowledged and nothing leaked.
///
/// Unarmed, a step costs one relaxed atomic load and a branch taken rarely: the library
/// carries the hooks in every build, so the code tested is the code shipped.
enum FaultInjection {
    /// How the process dies at the armed step.
    enum Action: String, Codable, Sendable, CaseIterable {
        /// `kill(getpid(), SIGKILL)`: no handler, no exit code, nothing flushed.
        case kill
        /// A store through an invalid address: a real SIGSEGV, not a raised one.
        case segmentationFault
        /// Swift's `fatalError`: the runtime reports and traps (SIGILL or SIGTRAP).
        case fatalError
        /// `exit(0)`: exit handlers run and the process reports success, mid-step.
        case exitZero
        /// Stops here for good (a hung peer): the step never completes.
        case hang
    }

    private struct Plan {
        var step: String
        /// Hits of `step` still to pass before the fault.
        var remaining: Int
        var action: Action
    }

    private static let isArmed = Atomic<Bool>(false)
    private static let plan = Mutex<Plan?>(nil)

    /// Arms `action` at the `hits + 1`-th time this process reaches `step`.
    static func arm(_ step: String, after hits: Int = 0, action: Action) {
        plan.withLock { $0 = Plan(step: step, remaining: hits, action: action) }
        isArmed.store(true, ordering: .releasing)
    }

    /// The environment variable that arms a fault in a process the library starts, before
    /// any of its own code runs: `"<step>:<hits>:<action>"`, e.g. `"forkserver.afterFork:0:kill"`.
    /// Read once, at the child's entry, and removed from the environment there, so only the
    /// process started with it is armed (a fork server's workers inherit its armed plan, as
    /// they inherit all of its memory). For steps a test cannot reach from inside the work: a
    /// fresh fork server, a worker before its work runs.
    static let environmentVariable = "SWIFT_MULTIPROCESSING_FAULT"

    /// Arms the fault named by ``environmentVariable``, if set, and removes the variable.
    static func armFromEnvironment() {
        guard let value = getenv(environmentVariable).map({ String(cString: $0) }) else { return }
        unsetenv(environmentVariable)
        let fields = value.split(separator: ":")
        guard fields.count == 3, let hits = Int(fields[1]), let action = Action(rawValue: String(fields[2])) else {
            return
        }
        arm(String(fields[0]), after: hits, action: action)
    }

    /// Removes any armed fault.
    static func disarm() {
        isArmed.store(false, ordering: .releasing)
        plan.withLock { $0 = nil }
    }

    /// Marks a protocol step; dies here if a fault is armed for it and its hit has come.
    @inline(__always)
    static func step(_ name: StaticString) {
        if _slowPath(isArmed.load(ordering: .relaxed)) { reached(name) }
    }

    private static func reached(_ name: StaticString) {
        let action: Action? = plan.withLock { plan in
            guard var current = plan, current.step == name.description else { return nil }
            if current.remaining > 0 {
                current.remaining -= 1
                plan = current
                return nil
            }
            plan = nil
            return current.action
        }
        guard let action else { return }
        isArmed.store(false, ordering: .relaxed)
        perform(action, at: name)
    }

    private static func perform(_ action: Action, at name: StaticString) {
        switch action {
        case .kill:
            Glibc.kill(getpid(), SIGKILL)
        case .segmentationFault:
            UnsafeMutablePointer<Int>(bitPattern: 8)!.pointee = 1
        case .fatalError:
            Swift.fatalError("fault injected at \(name)")
        case .exitZero:
            exit(0)
        case .hang:
            while true { sleep(3600) }
        }
        // SIGKILL is delivered before kill(2) returns to a single-threaded caller, and soon
        // after otherwise; nothing of the step may run meanwhile.
        while true { pause() }
    }
}
