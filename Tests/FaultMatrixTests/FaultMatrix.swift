import CMultiprocessing
import Glibc
import Testing

@testable import Multiprocessing

/// The fault matrix: each object of the library against each fault, at many seeded points.
///
/// A case runs in a process of its own, the *runner* (``CaseRunner``), started fresh for the
/// case: the runner is a child subreaper (orphans of the case come back to it), takes a
/// snapshot of its own descriptors, runs the scenario, and then checks that every process the
/// case made is gone and every descriptor it opened is closed. Nothing else runs in the
/// runner, so these checks are exact even while the rest of the suite runs in parallel. The
/// test process waits for the runner with a bound: a runner that overruns it is a hang.
///
/// Points are reproducible: `MP_FAULT_SEED` (default ``FaultMatrix/defaultSeed``) and the
/// object, fault and index of a point give its random numbers; `MP_FAULT_POINTS` (default 50)
/// is the number of points per object and fault. A failing case prints its seed; run the
/// same seed to see it again.

/// A fault injected into a case.
enum Fault: String, Codable, Sendable, CaseIterable, CustomTestStringConvertible {
    /// A child process using the object is SIGKILLed in the middle of a protocol step.
    case childKilled
    /// A child process segfaults in the middle of a protocol step.
    case childSegfault
    /// A child process calls `fatalError` in the middle of a protocol step.
    case childFatalError
    /// A child process calls `exit(0)` in the middle of a protocol step.
    case childExitZero
    /// The process that made the object and its children (the case's *parent*) is SIGKILLed.
    case parentKilled
    /// SIGINT to the case's parent.
    case parentInterrupted
    /// SIGTERM to the case's parent.
    case parentTerminated
    /// Starting a process or making the object fails: the descriptor limit (RLIMIT_NOFILE) or
    /// the process limit is exhausted.
    case spawnFailure

    var testDescription: String { rawValue }

    /// The action ``FaultInjection`` performs in a child, for the child faults.
    var childAction: FaultInjection.Action? {
        switch self {
        case .childKilled: .kill
        case .childSegfault: .segmentationFault
        case .childFatalError: .fatalError
        case .childExitZero: .exitZero
        default: nil
        }
    }

    /// The signal sent to the case's parent, for the parent faults.
    var parentSignal: Int32? {
        switch self {
        case .parentKilled: SIGKILL
        case .parentInterrupted: SIGINT
        case .parentTerminated: SIGTERM
        default: nil
        }
    }
}

/// One case: an object, a fault and the point's index, with the random numbers that choose
/// where and when the fault strikes.
struct FaultPoint: Codable, Sendable, CustomStringConvertible {
    var object: String
    var fault: Fault
    var index: Int
    var seed: UInt64

    /// The point's random numbers: the same for the same seed, object, fault and index.
    var random: SeededRandom {
        SeededRandom(
            seed: seed ^ stableHash(object) ^ stableHash(fault.rawValue) &* 31 ^ UInt64(index) &* 0x9E37_79B9_7F4A_7C15)
    }

    var description: String { "\(object)/\(fault.rawValue) point \(index) (MP_FAULT_SEED=\(seed))" }
}

/// SplitMix64: small, fast and the same on every run (the standard library's generator is
/// seeded at random).
struct SeededRandom: RandomNumberGenerator, Sendable {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// FNV-1a: a hash that does not change between processes (`Hasher` is seeded per process).
func stableHash(_ text: String) -> UInt64 {
    var hash: UInt64 = 0xCBF2_9CE4_8422_2325
    for byte in text.utf8 {
        hash ^= UInt64(byte)
        hash = hash &* 0x0000_0100_0000_01B3
    }
    return hash
}

/// What a case found.
struct CaseOutcome: Codable, Sendable {
    /// Messages or items a `put`/`send` had returned for that never arrived.
    var lost = 0
    /// What went wrong otherwise, each in a sentence: a missing or unclear error, a wrong
    /// result, a leak (added by the runner).
    var problems: [String] = []
    /// Leaks the runner found after the scenario: processes, descriptors, /dev/shm entries.
    var leaks: [String] = []
    /// The error the case expected and saw, for the record (empty when none was due).
    var errorSeen = ""

    init(lost: Int = 0, problems: [String] = [], errorSeen: String = "") {
        self.lost = lost
        self.problems = problems
        self.errorSeen = errorSeen
    }
}

/// A row of the matrix: one object's cases against every fault, run in a runner process.
protocol FaultScenario {
    /// The object's name in the matrix (and in RELIABILITY.md's table).
    static var object: String { get }
    /// Runs one case in the runner process: makes the object, starts the processes that
    /// use it, injects `point.fault`, and checks what the others saw.
    static func run(_ point: FaultPoint) async throws -> CaseOutcome
}

/// The runner: a fresh process per case (see ``FaultMatrix``).
struct CaseRunner<Scenario: FaultScenario>: ProcessFunction {
    func callAsFunction(_ point: FaultPoint) async throws -> CaseOutcome {
        _ = mp_set_child_subreaper(1)
        // Swift's backtracer spends most of a second on each crash it reports, and the
        // matrix crashes processes thousands of times: the case's processes (which inherit
        // this environment, the fork server included) crash without it.
        setenv("SWIFT_BACKTRACE", "enable=no", 1)
        // What the library makes once per process (the reactor, the fork server) is made
        // before the snapshot: it lives as long as the runner, by design.
        for method in [StartMethod.spawn, .forkserver] {
            let child = ChildProcess(Idle(), startMethod: method)
            try await child.start()
            try await child.join()
        }
        startSanitizerSymbolizer()
        let before = ResourceSnapshot.take()
        var outcome: CaseOutcome
        do {
            outcome = try await Scenario.run(point)
        } catch {
            outcome = CaseOutcome(problems: ["the scenario threw: \(error)"])
        }
        outcome.leaks = await ResourceSnapshot.leaks(since: before, within: .seconds(10))
        return outcome
    }
}

/// Under a sanitizer, starts its symbolizer now, before the runner's snapshot: TSan and ASan
/// start `llvm-symbolizer` (a child process with two pipes) at the first report a process
/// makes, suppressed reports included (a suppression is matched against symbolized frames),
/// and keep it for the process's life. Started during a case, it read as a leaked process
/// and two leaked descriptors (a TSan run, ProcessPool × fatalError); started in a case whose
/// descriptor limit was exhausted, it could not start at all, the report stayed
/// unsymbolized and so escaped its suppression. Without a sanitizer the entry point does
/// not exist and this does nothing.
func startSanitizerSymbolizer() {
    typealias SymbolizePC =
        @convention(c) (
            UnsafeMutableRawPointer?, UnsafePointer<CChar>?, UnsafeMutablePointer<CChar>?, Int
        ) -> Void
    // Any code address will do: the entry point's own (`main` is not in the dynamic symbol
    // table, so `dlsym` cannot find it).
    guard let entry = dlsym(nil, "__sanitizer_symbolize_pc") else { return }
    var text = [CChar](repeating: 0, count: 256)
    unsafeBitCast(entry, to: SymbolizePC.self)(entry, "%f", &text, text.count)
}

/// Does nothing: warms the runner up.
struct Idle: ProcessTarget {
    func run() {}
}

enum FaultMatrix {
    static let defaultSeed: UInt64 = 20_261_206

    static var seed: UInt64 {
        getenv("MP_FAULT_SEED").flatMap { UInt64(String(cString: $0)) } ?? defaultSeed
    }

    static var pointsPerFault: Int {
        getenv("MP_FAULT_POINTS").flatMap { Int(String(cString: $0)) } ?? 50
    }

    /// Where each object and fault's tally goes (a JSON file each); `Scripts/fault-table.py`
    /// turns them into RELIABILITY.md's table.
    static var reportDirectory: String {
        getenv("MP_FAULT_REPORT_DIR").map { String(cString: $0) } ?? "/tmp/mp-fault-matrix"
    }

    /// Runs every point of `Scenario` against `fault`, each in its own runner, each within
    /// `bound`; records the tally and fails the test for every hang, loss, leak or problem.
    static func check<Scenario: FaultScenario>(
        _ scenario: Scenario.Type, _ fault: Fault, bound: Duration = .seconds(60)
    ) async throws {
        var tally = FaultTally(object: Scenario.object, fault: fault, seed: seed)
        let start = ContinuousClock.now
        for index in 0..<pointsPerFault {
            let point = FaultPoint(object: Scenario.object, fault: fault, index: index, seed: seed)
            let outcome = try await ChildProcess.run(CaseRunner<Scenario>(), with: point, timeout: bound)
            tally.cases += 1
            guard let outcome else {
                tally.hangs += 1
                Issue.record("\(point): no end within \(bound) (a hang)")
                continue
            }
            tally.losses += outcome.lost
            tally.leaks += outcome.leaks.count
            tally.problems += outcome.problems.count
            if !outcome.errorSeen.isEmpty { tally.clearErrors += 1 }
            #expect(outcome.lost == 0, "\(point): \(outcome.lost) acknowledged messages lost")
            #expect(outcome.leaks.isEmpty, "\(point): leaked \(outcome.leaks)")
            #expect(outcome.problems.isEmpty, "\(point): \(outcome.problems)")
        }
        tally.seconds = Double((ContinuousClock.now - start).components.seconds)
        tally.write(to: reportDirectory)
    }
}

/// One object and fault's totals, for the report.
struct FaultTally: Codable {
    var object: String
    var fault: Fault
    var seed: UInt64
    var cases = 0
    var hangs = 0
    var losses = 0
    var leaks = 0
    var problems = 0
    /// Cases where an error was due and a clear one was seen.
    var clearErrors = 0
    var seconds = 0.0

    init(object: String, fault: Fault, seed: UInt64) {
        self.object = object
        self.fault = fault
        self.seed = seed
    }

    func write(to directory: String) {
        mkdir(directory, 0o755)
        let json =
            "{\"object\": \"\(object)\", \"fault\": \"\(fault.rawValue)\", \"seed\": \(seed), \"cases\": \(cases), "
            + "\"hangs\": \(hangs), \"losses\": \(losses), \"leaks\": \(leaks), \"problems\": \(problems), "
            + "\"clearErrors\": \(clearErrors), \"seconds\": \(seconds)}\n"
        let path = "\(directory)/\(object)-\(fault.rawValue).json"
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { return }
        defer { close(fd) }
        _ = json.utf8CString.withUnsafeBufferPointer { Glibc.write(fd, $0.baseAddress, $0.count - 1) }
    }
}
