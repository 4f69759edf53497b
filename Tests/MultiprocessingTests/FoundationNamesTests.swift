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
        let queue = try Queue<Int>(maxSize: 1, capacity: 4096)
        let joinable = try JoinableQueue<Int>(capacity: 4096)
        let operations = OperationQueue()
        let queueError: QueueError = .closed
        #expect(foundationProcess == nil && foundationPipe == nil)
        #expect(info == CurrentProcess.id)
        #expect(child.pid == nil && context.startMethod == .spawn)
        #expect(termination.exitCode == -9)
        #expect(queue.isEmpty && joinable.isEmpty && operations.operationCount == 0)
        #expect(queueError.description == "the queue is closed")
        a.close()
        b.close()
    }
}
