import Glibc
import Testing

@testable import Multiprocessing

/// The "spawn failure" fault: limits that make opening a descriptor or starting a process
/// fail at a chosen point, set in the runner process of a case (see ``FaultMatrix``).
///
/// - ``withDescriptorLimit(spare:_:)`` lowers RLIMIT_NOFILE so that exactly `spare` more
///   descriptors can be opened; the next `open`, `socketpair`, `memfd_create` fails with EMFILE.
/// - ``withProcessLimit(spare:_:)`` lets exactly `spare` more *tasks* (processes or threads)
///   start from the runner's launcher thread and in its descendants (the fork server
///   included); the next `fork`, `clone`, `posix_spawn` or `pthread_create` there fails
///   with EAGAIN.
///
/// The process limit is the hard one: RLIMIT_NPROC does not bind root (the kernel exempts
/// uid 0 of the initial user namespace, and any process with CAP_SYS_RESOURCE or
/// CAP_SYS_ADMIN), and CI runs as root. So it uses, in this order:
/// 1. a pids cgroup (v1, `/sys/fs/cgroup/pids` writable, as on this machine and CI): a fresh
///    cgroup under the runner's own, holding the runner's launcher thread (the one thread
///    every child starts from, ``Launcher/threadID``) and its descendants, its `pids.max`
///    set to what they have now plus `spare`. It binds root and counts every descendant,
///    the fork server's workers too, but not the runner's other threads: with the whole
///    runner inside, Dispatch could not start a thread once the children had used the
///    spare tasks (it retries `pthread_create` forever, a second apart), so the task that
///    would reap them never ran, and the zombies kept the tasks: a case hung (the fault
///    matrix saw it once, on a loaded machine, where idle Dispatch threads had exited).
/// 2. as root without it: the runner's real and effective uid become an unused uid (the
///    saved uid stays 0, so root comes back afterwards) and RLIMIT_NPROC is set; the
///    kernel counts the tasks of the real uid. Processes started before (the fork server,
///    running as root) are NOT bound: only what the runner spawns itself.
/// 3. not root: RLIMIT_NPROC over the tasks this uid already runs on the machine (racy when
///    the user runs other programs meanwhile).
///
/// The RLIMIT_NPROC ways count the runner's own threads as well (Swift's cooperative pool,
/// the library's reactor): a thread the runtime starts afterwards uses up one of the
/// `spare` tasks. A scenario should expect the failure at `spare` or a little earlier;
/// ``ProcessLimit/mechanism`` says which way was taken.
enum Limits {
    /// Runs `body` with RLIMIT_NOFILE lowered so that exactly `spare` more descriptors can be
    /// opened in this process, then restores the limit (also when `body` throws).
    ///
    /// Children started meanwhile inherit the lowered limit (a child closes every descriptor
    /// it did not get first, so it starts with few).
    static func withDescriptorLimit<T>(spare: Int, _ body: () async throws -> T) async throws -> T {
        var saved = rlimit()
        guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &saved) == 0 else {
            throw LimitError.failed("getrlimit(RLIMIT_NOFILE)", errno)
        }
        var lowered = saved
        lowered.rlim_cur = rlim_t(descriptorLimit(leaving: spare))
        guard setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &lowered) == 0 else {
            throw LimitError.failed("setrlimit(RLIMIT_NOFILE)", errno)
        }
        defer { _ = setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &saved) }
        return try await body()
    }

    /// The RLIMIT_NOFILE soft limit that leaves exactly `spare` free descriptor numbers: a
    /// new descriptor takes the lowest free number, and fails with EMFILE once that number
    /// reaches the limit, so the free numbers below the limit are what can still be opened.
    static func descriptorLimit(leaving spare: Int) -> Int {
        let open = Set(openDescriptors().keys)
        var limit = 0
        var free = 0
        while free < spare {
            if !open.contains(Int32(limit)) { free += 1 }
            limit += 1
        }
        // Descriptors above the limit stay usable; nothing new is numbered past it.
        return limit
    }

    /// Runs `body` while only `spare` more tasks (processes or threads) may start from this
    /// process (its children, see ``Limits`` for exactly what) and in its descendants, then
    /// lifts the limit (also when `body` throws). See ``Limits`` for how, and what counts.
    static func withProcessLimit<T>(spare: Int, _ body: (ProcessLimit) async throws -> T) async throws -> T {
        let limit = try ProcessLimit.impose(spare: spare)
        defer { limit.lift() }
        return try await body(limit)
    }
}

/// Why a limit could not be set.
enum LimitError: Error, CustomStringConvertible {
    case failed(String, Int32)

    var description: String {
        switch self {
        case .failed(let call, let code): "\(call) failed: \(String(cString: strerror(code))) (errno \(code))"
        }
    }
}

/// A process limit in force (see ``Limits/withProcessLimit(spare:_:)``).
struct ProcessLimit {
    /// How the limit binds.
    enum Mechanism: String {
        /// A pids cgroup holding the runner's launcher thread and every descendant.
        case cgroup
        /// RLIMIT_NPROC under a borrowed uid (root without a writable pids cgroup).
        case borrowedUID
        /// RLIMIT_NPROC of the calling user.
        case rlimit
    }

    var mechanism: Mechanism
    /// The cgroup made for the limit and the one the processes came from (`.cgroup`).
    fileprivate var cgroup: (made: String, original: String)?
    /// The RLIMIT_NPROC before (`.borrowedUID`, `.rlimit`).
    fileprivate var savedLimit = rlimit()

    static let cgroupRoot = "/sys/fs/cgroup/pids"

    fileprivate static func impose(spare: Int) throws -> ProcessLimit {
        if let limit = try? imposeWithCgroup(spare: spare) { return limit }
        var limit = ProcessLimit(mechanism: geteuid() == 0 ? .borrowedUID : .rlimit)
        guard getrlimit(__rlimit_resource_t(__RLIMIT_NPROC.rawValue), &limit.savedLimit) == 0 else {
            throw LimitError.failed("getrlimit(RLIMIT_NPROC)", errno)
        }
        var tasks: Int
        if limit.mechanism == .borrowedUID {
            // A uid nobody else runs as, so the kernel's count is this process's threads.
            let uid = uid_t(0x7000_0000) + uid_t(getpid())
            guard setResUID(uid, uid, 0) == 0 else { throw LimitError.failed("setresuid", errno) }
            tasks = directoryEntries("/proc/self/task").count
        } else {
            tasks = tasksOfUser(getuid())
        }
        var lowered = limit.savedLimit
        lowered.rlim_cur = rlim_t(tasks + spare)
        guard setrlimit(__rlimit_resource_t(__RLIMIT_NPROC.rawValue), &lowered) == 0 else {
            let code = errno
            limit.lift()
            throw LimitError.failed("setrlimit(RLIMIT_NPROC)", code)
        }
        return limit
    }

    /// A pids cgroup under the runner's own, holding its launcher thread and its descendants.
    private static func imposeWithCgroup(spare: Int) throws -> ProcessLimit {
        guard let table = readTextFile("/proc/self/cgroup"),
            let line = table.split(separator: "\n").first(where: {
                $0.split(separator: ":").dropFirst().first == "pids"
            }),
            let path = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false).last
        else { throw LimitError.failed("no pids cgroup (v1)", ENOENT) }
        let original = cgroupRoot + (path == "/" ? "" : String(path))
        removeStaleCgroups(in: original)
        let made = "\(original)/mp-fault-\(getpid())"
        guard mkdir(made, 0o755) == 0 || errno == EEXIST else { throw LimitError.failed("mkdir \(made)", errno) }
        let limit = ProcessLimit(mechanism: .cgroup, cgroup: (made, original))
        // The launcher thread first (`tasks` moves one thread), then the descendants (a
        // process started meanwhile lands where its launching thread is by then: in the
        // new cgroup).
        let launcher = Launcher.threadID
        guard writeTextFile("\(made)/tasks", "\(launcher)") else {
            let code = errno
            limit.lift()
            throw LimitError.failed("moving the launcher thread \(launcher) to \(made)", code)
        }
        for pid in descendantProcesses() { _ = writeTextFile("\(made)/cgroup.procs", "\(pid)") }
        guard let current = readTextFile("\(made)/pids.current").flatMap({ Int($0.filter(\.isNumber)) }),
            writeTextFile("\(made)/pids.max", "\(current + spare)")
        else {
            let code = errno
            limit.lift()
            throw LimitError.failed("setting \(made)/pids.max", code)
        }
        return limit
    }

    /// Lifts the limit: the processes go back to their cgroup (the runner's launcher thread
    /// with its process, listed in `cgroup.procs` by it) and the one made is removed, or root
    /// and the RLIMIT_NPROC before come back.
    fileprivate func lift() {
        switch mechanism {
        case .cgroup:
            guard let (made, original) = cgroup else { return }
            _ = writeTextFile("\(made)/pids.max", "max")
            let members = readTextFile("\(made)/cgroup.procs")?.split(separator: "\n") ?? []
            for pid in members { _ = writeTextFile("\(original)/cgroup.procs", String(pid)) }
            rmdir(made)
        case .borrowedUID:
            var saved = savedLimit
            _ = setrlimit(__rlimit_resource_t(__RLIMIT_NPROC.rawValue), &saved)
            _ = setResUID(0, 0, 0)
        case .rlimit:
            var saved = savedLimit
            _ = setrlimit(__rlimit_resource_t(__RLIMIT_NPROC.rawValue), &saved)
        }
    }

    /// Removes the empty cgroups of runners that died with a limit in force (killed at their
    /// bound): a cgroup with processes in it cannot be removed, so live ones stay.
    private static func removeStaleCgroups(in directory: String) {
        for name in directoryEntries(directory) where name.hasPrefix("mp-fault-") {
            guard let pid = Int32(name.dropFirst("mp-fault-".count)), kill(pid, 0) != 0 else { continue }
            rmdir("\(directory)/\(name)")
        }
    }

    /// The tasks (threads) running under `uid` on the machine, as RLIMIT_NPROC counts them.
    private static func tasksOfUser(_ uid: uid_t) -> Int {
        var count = 0
        for entry in directoryEntries("/proc") where Int32(entry) != nil {
            guard let status = readTextFile("/proc/\(entry)/status") else { continue }
            var owned = false
            var threads = 0
            for line in status.split(separator: "\n") {
                if line.hasPrefix("Uid:") {
                    owned = line.split(whereSeparator: \.isWhitespace).dropFirst().first == "\(uid)"
                }
                if line.hasPrefix("Threads:") {
                    threads = Int(line.split(whereSeparator: \.isWhitespace).last ?? "") ?? 0
                }
            }
            if owned { count += threads }
        }
        return count
    }
}

/// `setresuid(2)`, which Glibc's Swift module does not declare (it needs _GNU_SOURCE): found
/// by name in the C library, whose wrapper changes the uids of every thread of the process.
func setResUID(_ real: uid_t, _ effective: uid_t, _ saved: uid_t) -> Int32 {
    typealias SetResUID = @convention(c) (uid_t, uid_t, uid_t) -> Int32
    guard let symbol = dlsym(nil, "setresuid") else {
        errno = ENOSYS
        return -1
    }
    return unsafeBitCast(symbol, to: SetResUID.self)(real, effective, saved)
}

/// Writes `text` to a file that exists (a cgroup control file); false and errno on failure.
func writeTextFile(_ path: String, _ text: String) -> Bool {
    let fd = open(path, O_WRONLY | O_CLOEXEC)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    let written = text.utf8CString.withUnsafeBufferPointer { write(fd, $0.baseAddress, $0.count - 1) }
    return written == text.utf8.count
}

// MARK: - The limits themselves, each checked in a runner process of its own

/// Probes a limit in a fresh process (limits belong to a process, and the test process runs
/// the rest of the suite): how many pipes or processes could still be made, and the error.
struct LimitProbe: ProcessFunction {
    struct Found: Codable, Sendable {
        var made = 0
        var error = ""
        var worksAfter = false
    }

    func callAsFunction(_ kind: String) async throws -> Found {
        var found = Found()
        if kind == "descriptors" {
            // Two descriptors a pair: 5 spare makes 2 pairs, and the third fails.
            var pairs: [(Connection<Int>, Connection<Int>)] = []
            try await Limits.withDescriptorLimit(spare: 5) {
                do {
                    while pairs.count < 10 { pairs.append(try Connection<Int>.pair()) }
                } catch {
                    found.error = "\(error)"
                }
            }
            found.made = pairs.count
            pairs = []
            found.worksAfter = (try? Connection<Int>.pair()) != nil
        } else {
            // Children that wait on a pipe until this process closes its end.
            var children: [(ChildProcess, Connection<Int>)] = []
            let method: StartMethod = kind == "processes" || kind == "idle" ? .spawn : .forkserver
            try await Limits.withProcessLimit(spare: 12) { _ in
                do {
                    while children.count < 20 {
                        let (mine, theirs) = try Connection<Int>.pair()
                        let child = ChildProcess(WaitForClose(connection: theirs), startMethod: method)
                        try await child.start()
                        children.append((child, mine))
                    }
                } catch {
                    found.error = "\(error)"
                }
                if kind == "idle" {
                    // Every spare task used, and this process idle long enough for Dispatch
                    // to end its idle threads (5 s): the children are then ended and joined
                    // under the limit, which takes threads here again. With this process
                    // itself under the limit, that hung (see ``Limits``).
                    try await Task.sleep(for: .seconds(7))
                    for (child, connection) in children {
                        connection.close()
                        _ = try? await child.join(timeout: .seconds(20))
                    }
                }
            }
            found.made = children.count
            for (child, connection) in children {
                connection.close()
                do {
                    try await child.join()
                } catch {
                    // A child that started but could not make its work thread under the
                    // limit exits with an error of its own: also a failure to start.
                    if found.error.isEmpty { found.error = "\(error)" }
                }
            }
            let after = ChildProcess(Idle(), startMethod: method)
            if (try? await after.start()) != nil { found.worksAfter = (try? await after.join()) != nil }
        }
        return found
    }
}

/// Waits until the other end of its connection closes.
struct WaitForClose: ProcessTarget {
    var connection: Connection<Int>
    func run() {
        _ = try? connection.receive()
    }
}

@Suite("Fault matrix: limits", .timeLimit(.minutes(2)))
struct LimitsTests {
    @Test("a lowered descriptor limit fails the next socketpair with EMFILE, and is lifted after")
    func descriptorLimit() async throws {
        let found = try #require(try await ChildProcess.run(LimitProbe(), with: "descriptors", timeout: .seconds(60)))
        #expect(found.made == 2)
        #expect(found.error.contains("Too many open files") || found.error.contains("EMFILE"), "\(found.error)")
        #expect(found.worksAfter)
    }

    @Test(
        "a process limit binds root too: starting a child fails, and works again after",
        arguments: ["processes", "forkserver", "idle"])
    func processLimit(_ kind: String) async throws {
        let found = try #require(try await ChildProcess.run(LimitProbe(), with: kind, timeout: .seconds(60)))
        #expect(found.made < 20, "the limit did not bind: \(found.made) children started")
        #expect(!found.error.isEmpty)
        #expect(found.worksAfter)
    }
}
