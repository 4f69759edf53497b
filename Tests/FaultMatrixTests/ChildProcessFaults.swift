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

/// ChildProcess: a child dies before its report.
enum ChildProcessScenario: FaultScenario {
    static let object = "ChildProcess"

    static func run(_ point: FaultPoint) async throws -> CaseOutcome {
        var random = point.random
        guard let action = point.fault.childAction else { return CaseOutcome() }
        let method: StartMethod = Bool.random(using: &random) ? .spawn : .forkserver
        let child = ChildProcess(ArmedChild(step: "child.beforeReport", action: action), startMethod: method)
        try await child.start()
        do {
            try await child.join()
            return CaseOutcome(problems: ["join succeeded after \(action) before the report"])
        } catch let error as ChildProcessError {
            return CaseOutcome(errorSeen: "\(error)")
        }
    }
}

@Suite("Fault matrix")
struct FaultMatrixTests {
    @Test("ChildProcess", .timeLimit(.minutes(10)), arguments: [Fault.childKilled, .childSegfault, .childFatalError])
    func childProcess(_ fault: Fault) async throws {
        try await FaultMatrix.check(ChildProcessScenario.self, fault)
    }
}
