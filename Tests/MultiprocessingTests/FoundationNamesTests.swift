import Foundation
import Multiprocessing
import Testing

/// This file imports Foundation and the library together and uses both sides' names
/// unqualified: it compiles only if no public name of the library clashes with Foundation's.
@Suite("Names")
struct FoundationNamesTests {
    @Test("the library's names and Foundation's coexist unqualified")
    func namesCoexist() throws {
        let foundationProcess: Process? = nil
        let foundationPipe: Pipe? = nil
        let info = ProcessInfo.processInfo.processIdentifier
        let child = ChildProcess(Succeed())
        let context = ProcessContext(startMethod: .spawn)
        let signal: ProcessSignal = .kill
        let termination: Termination = .signaled(signal)
        let (a, b) = try Connection<String>.pair()
        #expect(foundationProcess == nil && foundationPipe == nil)
        #expect(info == CurrentProcess.id)
        #expect(child.pid == nil && context.startMethod == .spawn)
        #expect(termination.exitCode == -9)
        a.close()
        b.close()
    }
}
