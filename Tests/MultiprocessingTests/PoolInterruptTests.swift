import Glibc
import Testing

@testable import Multiprocessing

/// A program with a pool, in a child of its own, for the SIGINT tests: it makes a pool,
/// sends its fork server's pid (0 if none) and its workers' on `report`, then waits for a
/// word on `report`. After it, it maps again and sends the workers' pids once more, and
/// whether its fork server is still the same one, alive.
struct PoolUnderInterrupt: ProcessTarget {
    let report: Connection<[Int32]>
    var startMethod: StartMethod
    /// Whether it becomes a process group of its own, as a shell makes a foreground job.
    var ownGroup: Bool
    /// Whether it handles SIGINT (here: ignores it) instead of dying of it.
    var handlesInterrupt: Bool

    func run() async throws {
        if ownGroup { setpgid(0, 0) }
        if handlesInterrupt { signal(SIGINT, SIG_IGN) }
        let pool = try await ProcessPool(workers: 2, startMethod: startMethod)
        guard try await pool.map(PoolSquare(), Array(0..<20)) == (0..<20).map({ $0 * $0 }) else {
            throw PlainError()
        }
        let server = startMethod == .forkserver ? ForkServer.serverID ?? 0 : 0
        try await report.send([server] + pool.workerPIDs.sorted())
        _ = try await report.receive()
        guard try await pool.map(PoolSquare(), Array(0..<20)) == (0..<20).map({ $0 * $0 }) else {
            throw PlainError()
        }
        // Then whether its fork server is the same and still alive (1) or not (0), seen from
        // here: once this program ends, its server goes too.
        let sameServer = startMethod != .forkserver || (ForkServer.serverID == server && !processIsGone(server))
        try await report.send(pool.workerPIDs.sorted() + [sameServer ? 1 : 0])
        pool.close()
        await pool.join()
    }
}

@Suite("Pool and SIGINT", .timeLimit(.minutes(1)))
struct PoolInterruptTests {
    /// Starts the program, returns it, its channel, and the pids it reported (fork server
    /// first, 0 if none).
    func start(_ method: StartMethod, ownGroup: Bool, handlesInterrupt: Bool) async throws -> (
        ChildProcess, Connection<[Int32]>, server: pid_t, workers: [pid_t]
    ) {
        let (mine, theirs) = try Connection<[Int32]>.pair()
        let program = ChildProcess(
            PoolUnderInterrupt(
                report: theirs, startMethod: method, ownGroup: ownGroup, handlesInterrupt: handlesInterrupt))
        try await program.start()
        let pids = try #require(try await mine.receive(timeout: .seconds(30)))
        #expect(pids.count == 3)
        return (program, mine, pids[0], Array(pids.dropFirst()))
    }

    @Test("SIGINT to a program with a pool ends it, and its workers are gone too", arguments: StartMethod.allCases)
    func programInterrupted(method: StartMethod) async throws {
        let (program, channel, server, workers) = try await start(method, ownGroup: false, handlesInterrupt: false)
        defer { channel.close() }
        let pid = try #require(program.pid)
        kill(pid, SIGINT)
        // It was killed by a signal: join throws that (a ChildProcessError); the termination says which.
        _ = try? await program.join(timeout: .seconds(30))
        #expect(program.termination == .signaled(.interrupt))
        // Orphaned workers die of their parent-death signal. (Reaping them is their new
        // parent's work: a zombie counts as gone.)
        #expect(eventually(within: .seconds(20)) { (workers + [server]).filter { $0 > 0 }.allSatisfy(processIsGone) })
    }

    @Test(
        "Ctrl-C to the whole process group: the program dies of it, its workers with it",
        arguments: StartMethod.allCases)
    func groupInterrupted(method: StartMethod) async throws {
        let (program, channel, server, workers) = try await start(method, ownGroup: true, handlesInterrupt: false)
        defer { channel.close() }
        let pid = try #require(program.pid)
        // Its own group (made before it started the pool): the test process is not in it.
        #expect(getpgid(pid) == pid)
        for worker in workers { #expect(getpgid(worker) == pid) }
        kill(-pid, SIGINT)
        _ = try? await program.join(timeout: .seconds(30))
        #expect(program.termination == .signaled(.interrupt))
        #expect(eventually(within: .seconds(20)) { (workers + [server]).filter { $0 > 0 }.allSatisfy(processIsGone) })
    }

    @Test(
        "a program that handles SIGINT keeps a working pool after Ctrl-C hit its group",
        arguments: StartMethod.allCases)
    func handledInterrupt(method: StartMethod) async throws {
        let (program, channel, _, workers) = try await start(method, ownGroup: true, handlesInterrupt: true)
        defer { channel.close() }
        let pid = try #require(program.pid)
        kill(-pid, SIGINT)
        // The workers ignore it: none died, the pool maps again with the same workers.
        try await channel.send([])
        let after = try #require(try await channel.receive(timeout: .seconds(30)))
        #expect(Array(after.prefix(2)) == workers)
        // So does the fork server.
        #expect(after.last == 1)
        try await program.join()
        #expect(program.termination == .exited(0))
    }
}
