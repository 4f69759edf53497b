import Glibc
import Synchronization
import SystemPackage
import Testing

@testable import Multiprocessing

// Security basics (see SECURITY.md): every descriptor the library opens is close-on-exec,
// shared memory is private to the user, nothing the library makes is reachable by a name
// (except a named `SharedMemory`, by design), and an unrelated program started while its
// objects exist inherits nothing.
//
// Each object is audited in a process of its own, which creates it alone: the test process
// runs many tests at once, and their descriptors, children and segments would blur the count.

/// The kinds of objects audited, one per case.
enum AuditedObject: String, Codable, CaseIterable, Sendable, CustomTestStringConvertible {
    case spawnedChild, forkServerChild, connectionPair, oneWayPair, connectionWithHandle
    case queue, queueWithHandle, joinableQueue
    case lock, recursiveLock, semaphore, boundedSemaphore, event, condition, barrier
    case sharedValue, sharedArray, sharedMemory
    case processPool, forkServerPool

    var testDescription: String { rawValue }
}

/// What an audit found.
struct AuditReport: Codable, Sendable {
    /// The descriptors the object added to the auditing process: number → what they point at.
    var added: [Int32: String]
    /// The processes it started (children of the auditing process), checked as well.
    var processes: Int
    /// Everything found wrong, a sentence each.
    var problems: [String]
}

struct AuditFailure: Error, Codable {
    var reason: String
}

/// Looks at processes through /proc: descriptors, their flags, what they point at, mappings.
enum SecurityProbe {
    /// `O_CLOEXEC` as /proc/<pid>/fdinfo shows it (the "flags:" line, octal).
    static let closeOnExecFlag = 0o2_000_000

    /// What is wrong with the descriptors above 2 and the shared mappings of process `pid`:
    /// a descriptor without close-on-exec, a socket with a name (a path or an abstract name),
    /// shared memory with a mode other than 0600 or another owner, a file in /dev/shm (other
    /// than `allowedSegments`) or in /tmp, held open or mapped.
    static func problems(of pid: pid_t, allowedSegments: Set<String> = []) -> [String] {
        var problems: [String] = []
        let named = namedUnixSockets()
        for name in entries(of: "/proc/\(pid)/fd") {
            guard let fd = Int32(name), fd > 2, let target = link("/proc/\(pid)/fd/\(fd)"),
                let info = try? readFile("/proc/\(pid)/fdinfo/\(fd)")
            else { continue }  // closed meanwhile (a directory being listed, a transient copy)
            let what = "process \(pid), descriptor \(fd) (\(target))"
            if let flags = fdinfoFlags(info), flags & closeOnExecFlag == 0 {
                problems.append("\(what) is not close-on-exec")
            }
            if target.hasPrefix("socket:["), let inode = UInt64(target.dropFirst(8).dropLast()),
                let path = named[inode]
            {
                problems.append("\(what) is a socket reachable by the name \"\(path)\"")
            }
            if target.hasPrefix("/memfd:") || target.hasPrefix("/dev/shm/") {
                var status = stat()
                if fstatat(AT_FDCWD, "/proc/\(pid)/fd/\(fd)", &status, 0) == 0 {
                    if status.st_mode & 0o777 != 0o600 {
                        problems.append("\(what) has mode \(String(status.st_mode & 0o777, radix: 8)), not 600")
                    }
                    if status.st_uid != geteuid() { problems.append("\(what) belongs to user \(status.st_uid)") }
                }
            }
            if target.hasPrefix("/dev/shm/") && !allowedSegments.contains(target) {
                problems.append("\(what) is a file in /dev/shm")
            }
            if target.hasPrefix("/tmp/") { problems.append("\(what) is a file in /tmp") }
        }
        for line in ((try? readFile("/proc/\(pid)/maps")) ?? "").split(separator: "\n") {
            guard let start = line.firstIndex(of: "/") else { continue }
            let path = String(line[start...])
            // ThreadSanitizer's runtime maps its own read-only shadow from a deleted file,
            // /tmp/tsan.rodata.<pid> (a fork-server worker inherits the server's): not the library's.
            if Sanitizer.thread && path.hasPrefix("/tmp/tsan.rodata.") && path.hasSuffix(" (deleted)") { continue }
            if (path.hasPrefix("/dev/shm/") && !allowedSegments.contains(path)) || path.hasPrefix("/tmp/") {
                problems.append("process \(pid) maps \(path)")
            }
        }
        return problems
    }

    /// The Unix sockets of this network namespace that have a name (a path, or "@" and an
    /// abstract name), by inode, from /proc/net/unix.
    static func namedUnixSockets() -> [UInt64: String] {
        var result: [UInt64: String] = [:]
        for line in ((try? readFile("/proc/net/unix")) ?? "").split(separator: "\n").dropFirst() {
            // Num RefCount Protocol Flags Type St Inode [Path]
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            if fields.count >= 8, let inode = UInt64(fields[6]) { result[inode] = fields[7...].joined(separator: " ") }
        }
        return result
    }

    /// The socket inodes process `pid` holds.
    static func socketLinks(of pid: pid_t) -> Set<String> {
        Set(
            entries(of: "/proc/\(pid)/fd").compactMap { link("/proc/\(pid)/fd/\($0)") }.filter {
                $0.hasPrefix("socket:")
            })
    }

    /// Starts an unrelated program the plain way (`posix_spawn` of /bin/sh, no file actions
    /// but its standard output) and returns what it inherited that it should not have: each
    /// descriptor above 2 other than the directory `ls` itself opens, and the library's
    /// child marker if it is in the environment.
    static func inheritedByExec() throws -> [String] {
        // A socket pair rather than a pipe: it is made close-on-exec at once (pipe2 is not
        // visible from Swift), so the program gets the write end as its output only.
        var outputEnds: [Int32] = [-1, -1]
        let streamAndCloseOnExec = Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
        guard socketpair(AF_UNIX, streamAndCloseOnExec, 0, &outputEnds) == 0 else { throw Errno(rawValue: errno) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, outputEnds[1], 1)
        let script = "ls -l /proc/self/fd; echo marker=${SWIFT_MULTIPROCESSING_CHILD-none}"
        let arguments: [UnsafeMutablePointer<CChar>?] = [strdup("sh"), strdup("-c"), strdup(script), nil]
        defer { for argument in arguments { free(argument) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, "/bin/sh", &actions, nil, arguments, environ)
        close(outputEnds[1])
        defer { close(outputEnds[0]) }
        guard spawned == 0 else { throw Errno(rawValue: spawned) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = read(outputEnds[0], &chunk, chunk.count)
            if count > 0 {
                bytes += chunk[0..<count]
            } else if count == 0 || errno != EINTR {
                break
            }
        }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let output = String(decoding: bytes, as: UTF8.self)
        var inherited: [String] = []
        var sawMarkerLine = false
        for line in output.split(separator: "\n") {
            if line.hasPrefix("marker=") {
                sawMarkerLine = true
                if line != "marker=none" { inherited.append("the environment holds the child \(line)") }
                continue
            }
            // "lr-x------ 1 root root 64 Dec  6 08:40 3 -> /proc/1234/fd"
            guard let arrow = line.range(of: " -> "),
                let number = line[..<arrow.lowerBound].split(separator: " ").last.flatMap({ Int32($0) })
            else { continue }
            let target = line[arrow.upperBound...]
            let ownListing = target.hasPrefix("/proc/") && target.hasSuffix("/fd")
            if number > 2 && !ownListing { inherited.append("descriptor \(number) -> \(target)") }
        }
        if !sawMarkerLine { inherited.append("the program did not run as expected: \(output)") }
        return inherited
    }

    static func entries(of directory: String) -> [String] {
        guard let handle = opendir(directory) else { return [] }
        defer { closedir(handle) }
        var names: [String] = []
        while let entry = readdir(handle) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) {
                String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    static func link(_ path: String) -> String? {
        var buffer = [CChar](repeating: 0, count: 512)
        let count = readlink(path, &buffer, 511)
        return count > 0 ? String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self) : nil
    }

    private static func fdinfoFlags(_ info: String) -> Int? {
        for line in info.split(separator: "\n") where line.hasPrefix("flags:") {
            return Int(line.dropFirst(6).trimmingPrefix(while: { $0 == " " || $0 == "\t" }), radix: 8)
        }
        return nil
    }
}

/// In a child: reports what is wrong with its own descriptors and with what a program it
/// starts inherits, then sleeps until killed (so its parent audits it alive).
struct ReportThenSleep: ProcessTarget {
    let report: SendingConnection<[String]>
    func run() async throws {
        let problems = SecurityProbe.problems(of: getpid()) + (try SecurityProbe.inheritedByExec())
        try await report.send(problems)
        try await Task.sleep(for: .seconds(3600))
    }
}

/// Creates one object in this (child) process alone, then audits this process, what a
/// program started now inherits, and every process the object started.
struct SecurityAudit: ProcessFunction {
    func callAsFunction(_ object: AuditedObject) async throws -> AuditReport {
        let before = openDescriptors()
        var problems: [String] = []
        var allowedSegments: Set<String> = []
        var kept: [Any] = []
        var finish: [@Sendable () async -> Void] = []

        switch object {
        case .spawnedChild, .forkServerChild:
            let (receiver, sender) = try Connection<[String]>.oneWayPair()
            let child = ChildProcess(
                ReportThenSleep(report: sender), isDaemon: true,
                startMethod: object == .spawnedChild ? .spawn : .forkserver)
            try await child.start()
            problems += try await receiver.receive().map { "in the child: \($0)" }
            kept.append(receiver)
            finish.append {
                child.kill()
                _ = try? await child.join()
            }
        case .connectionPair: kept.append(try Connection<Int>.pair())
        case .oneWayPair: kept.append(try Connection<Int>.oneWayPair())
        case .connectionWithHandle:
            // A handle received: its descriptor comes through recvmsg (MSG_CMSG_CLOEXEC).
            let (first, second) = try Connection<SharedValue<Int>>.pair()
            try await first.send(try SharedValue(7))
            kept.append(contentsOf: [first, second, try await second.receive()] as [Any])
        case .queue:
            let queue = try Queue<Int>()
            try await queue.put(1)
            kept.append(queue)
        case .queueWithHandle:
            let queue = try Queue<SharedValue<Int>>()
            try await queue.put(try SharedValue(7))
            guard let received = try await queue.get(timeout: .seconds(30)) else {
                throw AuditFailure(reason: "the item with a handle never came out of the queue")
            }
            kept.append(contentsOf: [queue, received] as [Any])
        case .joinableQueue:
            let queue = try JoinableQueue<Int>()
            try await queue.put(1)
            kept.append(queue)
        case .lock: kept.append(try ProcessLock())
        case .recursiveLock: kept.append(try RecursiveProcessLock())
        case .semaphore: kept.append(try ProcessSemaphore(value: 2))
        case .boundedSemaphore: kept.append(try BoundedProcessSemaphore(value: 2))
        case .event: kept.append(try ProcessEvent())
        case .condition: kept.append(try ProcessCondition())
        case .barrier: kept.append(try ProcessBarrier(parties: 2))
        case .sharedValue: kept.append(try SharedValue(0))
        case .sharedArray: kept.append(try SharedArray<Double>(count: 64))
        case .sharedMemory:
            let segment = try SharedMemory(creating: nil, size: 4096)
            allowedSegments.insert("/dev/shm/" + segment.name)
            kept.append(segment)
            finish.append { try? segment.unlink() }
        case .processPool, .forkServerPool:
            let pool = try await ProcessPool(workers: 2, startMethod: object == .processPool ? .spawn : .forkserver)
            if try await pool.map(Double2(), [1, 2, 3]) != [2, 4, 6] {
                problems.append("the pool gave a wrong result")
            }
            kept.append(pool)
            finish.append {
                pool.terminate()
                await pool.join()
            }
        }

        let after = openDescriptors()
        // (Less the directory each listing opens for itself.)
        let added = after.filter { before[$0.key] != $0.value && !$0.value.hasSuffix("/fd") }
        problems += SecurityProbe.problems(of: getpid(), allowedSegments: allowedSegments)
        problems += try SecurityProbe.inheritedByExec().map { "a program started here inherited \($0)" }

        // /dev/shm by name too: a random segment name carries its creator's pid. (Other tests
        // create segments at the same time, so only names of these processes count.)
        let ours = [getpid()] + childProcesses()
        for entry in SecurityProbe.entries(of: "/dev/shm") where !allowedSegments.contains("/dev/shm/" + entry) {
            if ours.contains(where: { entry.hasPrefix("mp-\($0)-") }) { problems.append("/dev/shm holds \(entry)") }
        }

        // The processes the object started: each must settle with nothing but close-on-exec
        // descriptors above 2 (a spawned process holds its bootstrap socket without the flag
        // for the instant between exec and its first instruction of library code).
        let children = childProcesses()
        for child in children {
            let settled = await becomesTrue(within: .seconds(20)) { SecurityProbe.problems(of: child).isEmpty }
            if !settled { problems += SecurityProbe.problems(of: child) }
        }
        if let server = ForkServer.serverID {
            // A fork-server worker holds nothing of the server's: not its control socket (it
            // could ask for workers, or answer as the server), nothing else of the requester.
            let serverSockets = SecurityProbe.socketLinks(of: server)
            for child in children where child != server {
                let shared = SecurityProbe.socketLinks(of: child).intersection(serverSockets)
                if !shared.isEmpty { problems.append("process \(child) holds the fork server's sockets \(shared)") }
            }
            // The server itself: its control socket, and only anonymous inodes besides (the
            // eventfd its blocking receive makes); no worker's socket stays with it.
            let serverHolds = await becomesTrue(within: .seconds(20)) {
                let targets = SecurityProbe.entries(of: "/proc/\(server)/fd").compactMap { Int32($0) }.filter { $0 > 2 }
                    .compactMap { SecurityProbe.link("/proc/\(server)/fd/\($0)") }
                return targets.filter { $0.hasPrefix("socket:") }.count == 1
                    && targets.allSatisfy { $0.hasPrefix("socket:") || $0.hasPrefix("anon_inode:") }
            }
            if !serverHolds {
                let held = SecurityProbe.entries(of: "/proc/\(server)/fd").map {
                    "\($0) -> \(SecurityProbe.link("/proc/\(server)/fd/\($0)") ?? "?")"
                }
                problems.append("the fork server holds more than its control socket: \(held)")
            }
        }

        for step in finish { await step() }
        withExtendedLifetime(kept) {}
        return AuditReport(added: added, processes: children.count, problems: problems)
    }
}

/// In a child, as another user (nobody): tries to reach `segment` by its name and a shared
/// value's memory file through the parent's /proc/<pid>/fd; returns the errno of each try
/// (0 if it succeeded).
struct TryAsAnotherUser: ProcessFunction {
    struct Targets: Codable, Sendable {
        var segment: String
        var parent: Int32
        var memoryFile: Int32
    }

    func callAsFunction(_ targets: Targets) throws -> [String: Int32] {
        try becomeNobody()
        func attempt(_ opened: Int32) -> Int32 {
            if opened >= 0 {
                close(opened)
                return 0
            }
            return errno
        }
        return [
            "shm_open read-write": attempt(shm_open("/" + targets.segment, O_RDWR | O_CLOEXEC, 0)),
            "shm_open read-only": attempt(shm_open("/" + targets.segment, O_RDONLY | O_CLOEXEC, 0)),
            "memory file by /proc": attempt(
                open("/proc/\(targets.parent)/fd/\(targets.memoryFile)", O_RDWR | O_CLOEXEC)),
        ]
    }
}

/// In a child, as another user (nobody): makes a segment of its own, readable and writable
/// by everyone, under `name`; a process of this user must still refuse to attach to it.
struct SquatSegment: ProcessFunction {
    func callAsFunction(_ name: String) throws -> Int32 {
        try becomeNobody()
        let opened = shm_open("/" + name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o666)
        guard opened >= 0 else { return errno }
        defer { close(opened) }
        guard fchmod(opened, 0o666) == 0, ftruncate(opened, 4096) == 0 else { return errno }
        return 0
    }
}

/// In a child given shared memory: tries to shrink and to grow every memory file it holds;
/// returns the errno of each try (0 if it succeeded).
struct ResizeMemoryFiles: ProcessFunction {
    let value: SharedValue<Int>
    let queue: Queue<Int>

    func callAsFunction(_ input: Int) -> [Int32] {
        var results: [Int32] = []
        for (fd, target) in openDescriptors() where target.hasPrefix("/memfd:") {
            for size in [0, 1 << 30] {
                results.append(ftruncate(fd, off_t(size)) == 0 ? 0 : errno)
            }
        }
        withExtendedLifetime((value, queue)) {}
        return results
    }
}

/// In a child: starts an unrelated program (sh listing its descriptors) again and again on
/// a thread of its own, while three tasks create, use and drop the library's objects and
/// start children of both kinds. A descriptor made without close-on-exec and flagged only
/// afterwards would reach one of those programs now and then.
struct ExecDuringUse: ProcessFunction {
    struct Report: Codable, Sendable {
        var programs: Int
        var inherited: [String]
    }

    final class Loop: Sendable {
        struct State {
            var stop = false
            var finished = false
            var programs = 0
            var inherited: [String] = []
        }
        let state = Mutex(State())
    }

    func callAsFunction(_ rounds: Int) async throws -> Report {
        let loop = Loop()
        onNewThread(after: .zero) {
            while !loop.state.withLock({ $0.stop }) {
                let inherited = (try? SecurityProbe.inheritedByExec()) ?? ["(sh could not be started)"]
                loop.state.withLock {
                    $0.programs += 1
                    $0.inherited += inherited
                }
            }
            loop.state.withLock { $0.finished = true }
        }
        defer { loop.state.withLock { $0.stop = true } }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for worker in 0..<3 {
                group.addTask {
                    for round in 0..<rounds {
                        let (first, second) = try Connection<SharedValue<Int>>.pair()
                        try await first.send(try SharedValue(round))
                        _ = try await second.receive()
                        let queue = try Queue<SharedValue<Int>>()
                        try await queue.put(try SharedValue(round))
                        _ = try await queue.get(timeout: .seconds(30))
                        _ = try ProcessLock()
                        _ = try SharedArray<Double>(count: 8)
                        let method: StartMethod = (worker + round) % 2 == 0 ? .spawn : .forkserver
                        _ = try await ChildProcess.run(Double2(), with: round, startMethod: method)
                    }
                }
            }
            try await group.waitForAll()
        }
        loop.state.withLock { $0.stop = true }
        while !loop.state.withLock({ $0.finished }) { try await Task.sleep(for: .milliseconds(5)) }
        return loop.state.withLock { Report(programs: $0.programs, inherited: $0.inherited) }
    }
}

/// Drops to the user and group "nobody" (65534), for good. Only root can.
private func becomeNobody() throws {
    guard setgroups(0, nil) == 0, setgid(65534) == 0, setuid(65534) == 0 else {
        throw Errno(rawValue: errno)
    }
}

@Suite("Security: descriptors, modes, names", .timeLimit(.minutes(1)))
struct SecurityTests {
    @Test(
        "an object's descriptors are close-on-exec, its memory 0600, nothing has a name, an exec'd program inherits none",
        arguments: AuditedObject.allCases)
    func audit(object: AuditedObject) async throws {
        let report = try await ChildProcess.run(SecurityAudit(), with: object)
        #expect(!report.added.isEmpty, "the audit saw no descriptor of \(object)")
        #expect(report.problems == [], "descriptors added: \(report.added)")
        let startsProcesses: Set<AuditedObject> = [
            .spawnedChild, .forkServerChild, .sharedMemory, .processPool, .forkServerPool,
        ]
        if startsProcesses.contains(object) { #expect(report.processes > 0) }
    }

    @Test(
        "a worker's program started by the work inherits neither its channel nor the marker",
        arguments: StartMethod.allCases)
    func workerExec(method: StartMethod) async throws {
        let (receiver, sender) = try Connection<[String]>.oneWayPair()
        let child = ChildProcess(ReportThenSleep(report: sender), isDaemon: true, startMethod: method)
        try await child.start()
        let problems = try await receiver.receive()
        child.kill()
        _ = try? await child.join()
        #expect(problems == [])
    }

    @Test("programs started while other threads create objects and children inherit none of them")
    func execDuringConcurrentUse() async throws {
        let report = try await ChildProcess.run(ExecDuringUse(), with: 4)
        #expect(report.programs > 0)
        #expect(report.inherited == [], "\(report.programs) programs")
    }

    @Test("a process holding shared memory cannot resize it under the others (a SIGBUS for them)")
    func memoryFilesAreSealed() async throws {
        let value = try SharedValue(42)
        let queue = try Queue<Int>()
        try await queue.put(7)
        let results = try await ChildProcess.run(ResizeMemoryFiles(value: value, queue: queue), with: 0)
        #expect(results.count == 4, "the child held \(results.count / 2) memory files, not 2")
        #expect(results.allSatisfy { $0 == EPERM }, "errnos: \(results)")
        if results.allSatisfy({ $0 == EPERM }) {
            #expect(value.load() == 42)
            #expect(try await queue.get(timeout: .seconds(10)) == 7)
        }
    }

    @Test("sockets the library makes cannot be reopened through /proc, even by this user")
    func socketsCannotBeReopened() throws {
        let (first, second) = try Connection<Int>.pair()
        let queue = try Queue<Int>()
        _ = queue
        for connection in [first, second] {
            let fd = connection.stream.rawDescriptor.rawValue
            let opened = open("/proc/self/fd/\(fd)", O_RDWR | O_CLOEXEC)
            let error = errno
            if opened >= 0 { close(opened) }
            #expect(opened < 0 && error == ENXIO, "descriptor \(fd) was reopened")
        }
    }

    @Test(
        "another user can neither open a named segment nor reach unnamed memory through /proc",
        .enabled(if: geteuid() == 0, "acting as another user needs root"))
    func anotherUserIsKeptOut() async throws {
        let segment = try SharedMemory(creating: nil, size: 4096)
        defer { try? segment.unlink() }
        let value = try SharedValue(42)
        // One of this process's memory files (the value's, or another test's: any will do).
        let memoryFile = try #require(
            openDescriptors().first { $0.value.hasPrefix("/memfd:swift-multiprocessing") }?.key)
        let targets = TryAsAnotherUser.Targets(segment: segment.name, parent: getpid(), memoryFile: memoryFile)
        let results = try await ChildProcess.run(TryAsAnotherUser(), with: targets)
        #expect(
            results == ["shm_open read-write": EACCES, "shm_open read-only": EACCES, "memory file by /proc": EACCES])
        withExtendedLifetime(value) {}
    }

    @Test(
        "a segment another user made under a name is refused: creating it fails, attaching throws",
        .enabled(if: geteuid() == 0, "acting as another user needs root"))
    func squattedSegmentIsRefused() async throws {
        let name = "mp-squat-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        // Unlinked by this process's segment watcher if the test never reaches its defer (a
        // time limit, a crash): the segment is nobody's, so nothing else would.
        try SegmentWatcher.shared.watch(name)
        defer {
            _ = shm_unlink("/" + name)
            SegmentWatcher.shared.forget(name)
        }
        #expect(try await ChildProcess.run(SquatSegment(), with: name) == 0)
        do {
            _ = try SharedMemory(attachingTo: name)
            Issue.record("attached to a segment of user nobody")
        } catch let error as SharedMemoryError {
            guard case .system(.permissionDenied, _) = error else {
                Issue.record("unexpected error: \(error)")
                return
            }
            #expect(error.description.contains("of user 65534 as user 0"))
        }
        do {
            _ = try SharedMemory(creating: name, size: 4096, unlinkWhenOwnerExits: false)
            Issue.record("created a segment over one of user nobody")
        } catch let error as SharedMemoryError {
            guard case .alreadyExists(name) = error else {
                Issue.record("unexpected error: \(error)")
                return
            }
        }
    }
}
