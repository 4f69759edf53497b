import Glibc
import Testing

@testable import Multiprocessing

struct Check: ProcessTarget {
    var text: String
    var numbers: [Double]
    func run() throws {
        guard text == "héllo", numbers == [1.5, -2, .infinity] else { throw PlainError() }
    }
}

struct CheckName: ProcessTarget {
    var expected: String
    func run() throws {
        guard CurrentProcess.name == expected, CurrentProcess.isChild else { throw PlainError() }
    }
}

struct Square: ProcessFunction {
    var offset: Int
    func callAsFunction(_ input: [Int]) -> [Int] { input.map { $0 * $0 + offset } }
}

/// Kills its own fork server and checks that the next start gets a new one, while a worker
/// of the old server lives on (workers are the requester's children, not the server's).
struct ReplaceForkServer: ProcessTarget {
    func run() throws {
        let worker = ChildProcess(Sleep(seconds: 2), startMethod: .forkserver)
        try worker.start()
        guard let server = ForkServer.serverID, kill(server, SIGKILL) == 0 else { throw PlainError() }
        guard eventually(within: .seconds(5), { processIsGone(server) }) else { throw PlainError() }
        let next = ChildProcess(Succeed(), startMethod: .forkserver)
        try next.start()
        try next.join()
        guard ForkServer.serverID != server, worker.isAlive else { throw PlainError() }
        worker.kill()
        _ = try? worker.join()
    }
}

struct ThreeAtOnce: ProcessTarget {
    let barrier: ProcessBarrier
    func run() throws { _ = try barrier.wait(timeout: .seconds(30)) }
}

struct Fail: ProcessFunction {
    func callAsFunction(_ input: Int) throws -> Int { throw InventoryError(item: "input", missing: input) }
}

struct Big: ProcessFunction {
    func callAsFunction(_ count: Int) -> [UInt8] { [UInt8](repeating: 7, count: count) }
}

struct Forever: ProcessFunction {
    func callAsFunction(_ input: Int) async throws -> Int {
        try await Task.sleep(for: .seconds(3600))
        return input
    }
}

@Suite("Child processes", .timeLimit(.minutes(1)))
struct ChildProcessTests {
    @Test("a child runs its target and exits with status 0", arguments: StartMethod.allCases)
    func succeeds(method: StartMethod) throws {
        let child = ChildProcess(Succeed(), name: "quick", startMethod: method)
        #expect(child.pid == nil)
        #expect(!child.isAlive)
        #expect(child.description == "ChildProcess \"quick\" (not started)")
        try child.start()
        #expect(child.pid != nil)
        try child.join()
        #expect(child.description == "ChildProcess \"quick\" (pid \(child.pid!), exited with status 0)")
        #expect(child.termination == .exited(0))
        #expect(child.exitCode == 0)
        #expect(child.error == nil)
        #expect(!child.isAlive)
    }

    @Test("a target's stored properties travel to the child", arguments: StartMethod.allCases)
    func argumentsTravel(method: StartMethod) throws {
        let child = ChildProcess(Check(text: "héllo", numbers: [1.5, -2, .infinity]), startMethod: method)
        try child.start()
        try child.join()
    }

    @Test("a Codable error thrown in the child comes back as itself", arguments: StartMethod.allCases)
    func codableErrorComesBack(method: StartMethod) throws {
        let child = ChildProcess(ThrowInventory(), name: "stock-check", startMethod: method)
        try child.start()
        let error = try #require(throws: ChildProcessError.self) { try child.join() }
        #expect(error.processName == "stock-check")
        #expect(error.pid == child.pid)
        #expect(error.termination == .exited(1))
        let remote = try #require(error.remoteError)
        #expect(remote.typeName.hasSuffix("InventoryError"))
        #expect(remote.message == "3 × bolt missing")
        #expect(remote.underlying as? InventoryError == InventoryError(item: "bolt", missing: 3))
        #expect(error.description.contains("stock-check"))
        #expect(error.description.contains("3 × bolt missing"))
        #expect(child.error?.remoteError?.message == "3 × bolt missing")
    }

    @Test("an error that is not Codable keeps its type name and description")
    func plainErrorKeepsItsName() throws {
        let child = ChildProcess(ThrowPlain())
        try child.start()
        let error = try #require(throws: ChildProcessError.self) { try child.join() }
        #expect(error.remoteError?.typeName.hasSuffix("PlainError") == true)
        #expect(error.remoteError?.message == "plain failure")
        #expect(error.remoteError?.underlying == nil)
    }

    @Test("a child that calls fatalError reports the signal that ended it", arguments: StartMethod.allCases)
    func fatalErrorIsASignal(method: StartMethod) throws {
        let child = ChildProcess(CallFatalError(), startMethod: method)
        try child.start()
        let error = try #require(throws: ChildProcessError.self) { try child.join() }
        guard case .signaled(let signal) = error.termination else {
            Issue.record("expected a signal, got \(error.termination)")
            return
        }
        #expect([ProcessSignal.illegalInstruction, .trap, .abort].contains(signal))
        #expect(error.description.contains("was killed by SIG"))
    }

    @Test("a child killed with SIGKILL reports SIGKILL in words", arguments: StartMethod.allCases)
    func killedChild(method: StartMethod) throws {
        let child = ChildProcess(Sleep(), isDaemon: true, startMethod: method)
        try child.start()
        #expect(child.isAlive)
        child.kill()
        // Killed by this process's own request: not a failure, and join says so by returning.
        try child.join()
        #expect(child.termination == .signaled(.kill))
        #expect(child.exitCode == -SIGKILL)
        #expect(child.error == nil)
        #expect(child.description.contains("SIGKILL"))
    }

    @Test("a child killed by someone else is a failure that names the signal", arguments: StartMethod.allCases)
    func killedBySomeoneElse(method: StartMethod) throws {
        let child = ChildProcess(Sleep(), isDaemon: true, startMethod: method)
        try child.start()
        #expect(Glibc.kill(try #require(child.pid), SIGKILL) == 0)
        let error = try #require(throws: ChildProcessError.self) { try child.join() }
        #expect(error.termination == .signaled(.kill))
        #expect(error.description.contains("SIGKILL"))
    }

    @Test("terminate sends SIGTERM")
    func terminated() throws {
        let child = ChildProcess(Sleep(), isDaemon: true)
        try child.start()
        child.terminate()
        try child.join()  // ended as asked: Python's `for p in ps: p.terminate(); p.join()` works
        #expect(child.termination == .signaled(.terminate))
    }

    @Test("a child that exits by itself with a status reports it")
    func exitStatus() throws {
        let child = ChildProcess(ExitWith(status: 7))
        try child.start()
        let error = try #require(throws: ChildProcessError.self) { try child.join() }
        #expect(error.termination == .exited(7))
        #expect(child.exitCode == 7)
    }

    @Test("join with a timeout on a child that never ends returns false, and the child is still there")
    func joinTimesOut() throws {
        let child = ChildProcess(Sleep(), isDaemon: true)
        try child.start()
        let start = ContinuousClock.now
        #expect(try child.join(timeout: .milliseconds(200)) == false)
        #expect(ContinuousClock.now - start >= .milliseconds(200))
        #expect(child.isAlive)
        #expect(try child.join(timeout: .zero) == false)
        #expect(try child.join(timeout: .seconds(-1)) == false)
        child.kill()
        #expect(try child.join(timeout: .seconds(30)))
    }

    @Test("async join waits without blocking and supports a timeout", arguments: StartMethod.allCases)
    func asyncJoin(method: StartMethod) async throws {
        let sleeper = ChildProcess(Sleep(), isDaemon: true, startMethod: method)
        try await sleeper.start()
        #expect(try await sleeper.join(timeout: .milliseconds(100)) == false)
        sleeper.kill()
        try await sleeper.join()
        #expect(sleeper.termination == .signaled(.kill))

        let quick = ChildProcess(Sleep(seconds: 0.1), startMethod: method)
        try await quick.start()
        try await quick.join()
        #expect(quick.termination == .exited(0))
    }

    @Test("a type declared inside a function is refused at start, in the parent, with a clear error")
    func localTypeIsRefused() throws {
        struct Local: ProcessTarget {
            func run() {}
        }
        let child = ChildProcess(Local())
        do {
            try child.start()
            Issue.record("expected an error")
        } catch WireError.unencodable(let reason, _) {
            #expect(reason.contains("Local"))
            #expect(reason.contains("file scope"))
        }
        #expect(child.pid == nil)
    }

    @Test("a target that cannot be encoded fails start and starts nothing")
    func unencodableTarget() throws {
        let (end, _) = try Connection<String>.pair()
        end.close()
        let child = ChildProcess(Echo(connection: end))
        #expect(throws: ConnectionError.self) { try child.start() }
        #expect(child.pid == nil)
        #expect(!child.isAlive)
    }

    @Test("the fork server stays single-threaded, so forking it is safe")
    func forkServerIsSingleThreaded() throws {
        let child = ChildProcess(Succeed(), startMethod: .forkserver)
        try child.start()
        try child.join()
        let server = try #require(ForkServer.serverID)
        let status = try readFile("/proc/\(server)/status")
        let threads = status.split(separator: "\n").first { $0.hasPrefix("Threads:") }
        #expect(threads?.split(separator: "\t").last == "1", "\(threads ?? "no Threads line")")
    }

    @Test("a fork server that was killed is replaced; its workers live on")
    func forkServerIsReplaced() throws {
        // In a child of its own: killing the fork server of the test process would fail the
        // starts of other tests running at the same time.
        let scenario = ChildProcess(ReplaceForkServer())
        try scenario.start()
        try scenario.join()
    }

    @Test("a type the child cannot find is an error naming the type, not a hang")
    func unknownType() throws {
        let child = ChildProcess(unresolvableTypeName: "$s12NoSuchModule9NoSuchTypeVN")
        try child.start()
        let error = try #require(throws: ChildProcessError.self) { try child.join(timeout: .seconds(30)) }
        guard case .couldNotStart(let reason) = error.reason else {
            Issue.record("expected couldNotStart, got \(error.reason)")
            return
        }
        #expect(reason.contains("$s12NoSuchModule9NoSuchTypeVN"))
        #expect(error.description.contains("could not start"))
    }

    @Test("children run at the same time: three meet at a barrier only all three can pass")
    func childrenRunInParallel() throws {
        // No timing: the barrier opens only when all three wait at it at once, which cannot
        // happen if they run one after the other (each would time out alone).
        let barrier = try ProcessBarrier(parties: 3)
        let children = (0..<3).map { _ in ChildProcess(ThreeAtOnce(barrier: barrier)) }
        for child in children { try child.start() }
        for child in children { #expect(try child.join(timeout: .seconds(60))) }
    }

    @Test("names default to Process-N and are known inside the child")
    func names() throws {
        let unnamed = ChildProcess(Succeed())
        #expect(unnamed.name.hasPrefix("Process-"))
        let child = ChildProcess(CheckName(expected: "custom-name"), name: "custom-name")
        try child.start()
        try child.join()
        #expect(CurrentProcess.name == "MainProcess")
        #expect(!CurrentProcess.isChild)
    }

    @Test("a function runs in a child and its output comes back", arguments: StartMethod.allCases)
    func functionOutput(method: StartMethod) async throws {
        let output = try await ChildProcess.run(Square(offset: 1), with: [1, 2, 3], startMethod: method)
        #expect(output == [2, 5, 10])
    }

    @Test("a function can be run blocking too, and its error comes back")
    func blockingFunction() throws {
        #expect(try ChildProcess.run(Square(offset: 0), with: [4]) == [16])
        let error = try #require(throws: ChildProcessError.self) { try ChildProcess.run(Fail(), with: 1) }
        #expect(error.remoteError?.underlying as? InventoryError == InventoryError(item: "input", missing: 1))
    }

    @Test("a large function output does not deadlock the child on its way out")
    func largeFunctionOutput() async throws {
        let output = try await ChildProcess.run(Big(), with: 8 * 1024 * 1024)
        #expect(output.count == 8 * 1024 * 1024)
        #expect(output.allSatisfy { $0 == 7 })
    }

    @Test("many children started at once from many tasks all run and report", arguments: StartMethod.allCases)
    func manyAtOnce(method: StartMethod) async throws {
        let results = try await withThrowingTaskGroup(of: (Int, Int).self) { group in
            for number in 0..<24 {
                group.addTask { (number, try await ChildProcess.run(Double2(), with: number, startMethod: method)) }
            }
            var results: [Int: Int] = [:]
            for try await (number, doubled) in group { results[number] = doubled }
            return results
        }
        #expect(results.count == 24)
        #expect(results.allSatisfy { $0.value == $0.key * 2 })
    }

    @Test("a function given a timeout it does not meet is killed, and run returns nil")
    func functionTimeout() throws {
        let start = ContinuousClock.now
        #expect(try ChildProcess.run(Forever(), with: 1, timeout: .milliseconds(300)) == nil)
        #expect(ContinuousClock.now - start < .seconds(20))
        #expect(try ChildProcess.run(Double2(), with: 21, timeout: .seconds(30)) == 42)
    }

    @Test("the async form of a timed function run returns nil on timeout too")
    func asyncFunctionTimeout() async throws {
        #expect(try await ChildProcess.run(Forever(), with: 1, timeout: .milliseconds(300)) == nil)
        #expect(try await ChildProcess.run(Double2(), with: 4, timeout: .seconds(30)) == 8)
    }

    @Test("cancelling the task that runs a function kills the child")
    func cancellationKills() async throws {
        let task = Task { try await ChildProcess.run(Forever(), with: 1) }
        try await Task.sleep(for: .milliseconds(300))
        let start = ContinuousClock.now
        task.cancel()
        await #expect(throws: (any Error).self) { try await task.value }
        #expect(ContinuousClock.now - start < .seconds(20))
    }
}
