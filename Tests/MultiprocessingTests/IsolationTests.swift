import Glibc
import Testing

@testable import Multiprocessing

/// Checks `CurrentProcess.activeChildren` in a process of its own (the test process's list
/// holds the children of every test running in parallel).
struct ActiveChildren: ProcessTarget {
    func run() throws {
        guard CurrentProcess.activeChildren.isEmpty else { throw PlainError() }
        let sleeper = ChildProcess(Sleep(), isDaemon: true)
        let quick = ChildProcess(Succeed())
        try sleeper.start()
        try quick.start()
        try quick.join()
        guard CurrentProcess.activeChildren.map(\.pid) == [sleeper.pid] else { throw PlainError() }
        sleeper.kill()
        _ = try? sleeper.join()
        guard CurrentProcess.activeChildren.isEmpty else { throw PlainError() }
    }
}

/// Reports the descriptors open in the child (number → target) over a connection.
struct ReportDescriptors: ProcessTarget {
    let results: SendingConnection<[Int32: String]>
    func run() throws { try results.send(openDescriptors()) }
}

/// Starts `count` sleeping grandchildren, reports their pids, then sleeps until killed.
struct StartGrandchildren: ProcessTarget {
    var count: Int
    var method: StartMethod
    let results: SendingConnection<[Int32]>
    func run() async throws {
        var pids: [Int32] = []
        var children: [ChildProcess] = []
        for _ in 0..<count {
            let child = ChildProcess(Sleep(), isDaemon: true, startMethod: method)
            try await child.start()
            children.append(child)
            pids.append(child.pid!)
        }
        try await results.send(pids)
        try await Task.sleep(for: .seconds(3600))
        _ = children
    }
}

/// Runs a round of the library's features in this (child) process, then checks that it
/// left no descriptor and no child behind. Runs in a child so that tests running in
/// parallel in the test process cannot disturb the count.
struct LeakCheck: ProcessTarget {
    /// One round of everything: pipes to children, a child that throws, one killed, a
    /// function call, a `ChildProcess` dropped while its child runs; both start methods.
    func round() async throws {
        for method in StartMethod.allCases {
            let (mine, theirs) = try Connection<String>.pair()
            let echo = ChildProcess(Echo(connection: theirs), startMethod: method)
            try await echo.start()
            try await mine.send("ping")
            guard try await mine.receive() == "PING" else { throw PlainError() }
            mine.close()
            try await echo.join()

            let failing = ChildProcess(ThrowPlain(), startMethod: method)
            try await failing.start()
            _ = try? await failing.join()
            let killed = ChildProcess(Sleep(), isDaemon: true, startMethod: method)
            try await killed.start()
            killed.kill()
            _ = try? await killed.join()
            _ = try await ChildProcess.run(Double2(), with: 2, startMethod: method)
        }
        do {
            let dropped = ChildProcess(Sleep(seconds: 0.1))
            try await dropped.start()
        }
        // The dropped child is reaped when it ends: wait for that, however slow the machine.
        let deadline = ContinuousClock.now.advanced(by: .seconds(20))
        while ChildRegistry.shared.count != 0 && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        try await Task.sleep(for: .milliseconds(50))  // the reaper closes its pidfd just after
    }

    func run() async throws {
        // The first round starts what lives as long as the process (the reactor thread's
        // epoll and eventfd, the fork server and its socket, the runtime's own threads);
        // after that, a round must leave exactly what it found.
        try await round()
        let before = openDescriptors()
        try await round()
        try await round()
        let after = openDescriptors()
        var problems: [String] = []
        if after != before { problems.append("descriptors changed: before \(before), after \(after)") }
        let children = childProcesses()
        let zombies = children.filter { (try? readFile("/proc/\($0)/stat"))?.contains(") Z ") == true }
        if !zombies.isEmpty { problems.append("zombie children: \(zombies)") }
        // The fork server is the one child allowed to stay.
        if children.count > 1 { problems.append("children left: \(children)") }
        if ChildRegistry.shared.count != 0 { problems.append("registry still holds \(ChildRegistry.shared.count)") }
        if !problems.isEmpty { throw LeakError(problems: problems) }
    }
}

struct Double2: ProcessFunction {
    func callAsFunction(_ input: Int) -> Int { input * 2 }
}

struct LeakError: Error, Codable, CustomStringConvertible {
    var problems: [String]
    var description: String { problems.joined(separator: "; ") }
}

struct ExitWithoutJoining: ProcessTarget {
    let results: SendingConnection<[Int32]>
    func run() throws {
        let daemon = ChildProcess(Sleep(), isDaemon: true)
        let worker = ChildProcess(Sleep(seconds: 0.5))
        try daemon.start()
        try worker.start()
        try results.send([daemon.pid!, worker.pid!])
        // Returns without joining: exit must end the daemon and wait for the worker.
    }
}

@Suite("Isolation: descriptors, parent death, leaks", .timeLimit(.minutes(1)))
struct IsolationTests {
    @Test("no descriptor leaks into a child beyond those passed on purpose", arguments: StartMethod.allCases)
    func noDescriptorLeak(method: StartMethod) throws {
        // A descriptor opened *without* close-on-exec: posix_spawn's closefrom must still
        // keep it out of the child.
        var fds: [Int32] = [-1, -1]
        #expect(pipe(&fds) == 0)
        defer { close(fds[0]); close(fds[1]) }
        let leakyTarget = openDescriptors()[fds[0]]!

        let (receiver, sender) = try Connection<[Int32: String]>.oneWayPair()
        let child = ChildProcess(ReportDescriptors(results: sender), startMethod: method)
        try child.start()
        let seen = try receiver.receive()
        try child.join()
        #expect(!seen.values.contains(leakyTarget), "the child inherited \(leakyTarget)")
        // stdin, stdout, stderr, the bootstrap socket and the connection end it was given;
        // the Swift runtime may open a few of its own (eventfd, epoll) — none are pipes or
        // sockets other than those two.
        let sockets = seen.filter { $0.value.hasPrefix("socket:") }
        #expect(sockets.count == 2, "unexpected sockets in the child: \(seen)")
        // Standard streams may be pipes (swift test runs the tests with piped output).
        let pipes = seen.filter { $0.key > 2 && $0.value.hasPrefix("pipe:") }
        #expect(pipes.isEmpty, "pipes in the child: \(seen)")
    }

    @Test("a child is found by a socket it holds (how a fork server's stray worker is cleaned up)")
    func childFoundBySocket() throws {
        let (mine, theirs) = try Connection<String>.pair()
        let copy = FileDescriptorCopy.duplicate(theirs.stream.rawDescriptor)
        defer { copy.closeIgnoringErrors() }
        let child = ChildProcess(Echo(connection: theirs), isDaemon: true)
        try child.start()
        try mine.send("x")
        #expect(try mine.receive() == "X")
        // Another test's child being spawned holds all of this process's descriptors for an
        // instant (posix_spawn closes them in the child): look until only ours is seen. The
        // library scans only on its launcher thread, where no spawn runs meanwhile.
        #expect(eventually(within: .seconds(10)) { childrenHolding(copy) == [child.pid!] })
        mine.close()
        try child.join()
        #expect(eventually(within: .seconds(10)) { childrenHolding(copy).isEmpty })
    }

    @Test("active children lists the running children, like Python's active_children()")
    func activeChildren() throws {
        let child = ChildProcess(ActiveChildren())
        try child.start()
        try child.join()
    }

    @Test("children share the parent's stdout and stderr")
    func sharedStandardStreams() throws {
        let (receiver, sender) = try Connection<[Int32: String]>.oneWayPair()
        let child = ChildProcess(ReportDescriptors(results: sender))
        try child.start()
        let seen = try receiver.receive()
        try child.join()
        let mine = openDescriptors()
        #expect(seen[1] == mine[1])
        #expect(seen[2] == mine[2])
    }

    @Test(
        "when a parent is killed with SIGKILL its children are gone within a second",
        arguments: StartMethod.allCases)
    func childrenDieWithParent(method: StartMethod) throws {
        let (receiver, sender) = try Connection<[Int32]>.oneWayPair()
        let parent = ChildProcess(StartGrandchildren(count: 2, method: method, results: sender))
        try parent.start()
        let grandchildren = try #require(try receiver.receive(timeout: .seconds(30)))
        #expect(grandchildren.count == 2)
        #expect(grandchildren.allSatisfy { !processIsGone($0) })
        parent.kill()
        try parent.join()
        #expect(eventually(within: .seconds(1)) { grandchildren.allSatisfy(processIsGone) })
    }

    @Test("a run of every feature leaves no descriptor, zombie or child behind")
    func noLeaks() throws {
        let child = ChildProcess(LeakCheck())
        try child.start()
        try child.join()
    }

    @Test("at exit, daemon children are terminated and the others are waited for")
    func exitSemantics() throws {
        let (receiver, sender) = try Connection<[Int32]>.oneWayPair()
        let parent = ChildProcess(ExitWithoutJoining(results: sender))
        try parent.start()
        let pids = try receiver.receive()
        let start = ContinuousClock.now
        try parent.join()
        // The parent waited for the 0.5 s worker (not for the hour-long daemon).
        #expect(ContinuousClock.now - start >= .milliseconds(300))
        #expect(eventually(within: .seconds(2)) { pids.allSatisfy(processIsGone) })
    }
}
