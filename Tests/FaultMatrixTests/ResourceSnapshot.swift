import Glibc

@testable import Multiprocessing  // directoryEntries (System/ProcFS.swift)

/// What a runner process holds: its descriptors (with what they point at) and the entries of
/// /dev/shm. Taken before a case and compared after it.
struct ResourceSnapshot {
    var descriptors: [Int32: String]
    var sharedMemory: Set<String>
    /// This process's descendants (children, theirs, ...): before a case, the fork server.
    var descendants: Set<Int32>

    static func take() -> ResourceSnapshot {
        ResourceSnapshot(
            descriptors: openDescriptors(), sharedMemory: Set(directoryEntries("/dev/shm")),
            descendants: Set(descendantProcesses()))
    }

    /// What the case left behind, once `within` has passed without it going away: a
    /// descendant process still running or unreaped (orphans come back to the runner, a
    /// subreaper, and are reaped here), a descriptor not open before, a new /dev/shm entry.
    static func leaks(since before: ResourceSnapshot, within bound: Duration) async -> [String] {
        var found: [String] = []
        let deadline = ContinuousClock.now.advanced(by: bound)
        repeat {
            reapAdoptedOrphans()
            let now = take()
            found = []
            let left = now.descendants.subtracting(before.descendants)
            if !left.isEmpty { found.append("processes still alive or unreaped: \(left.sorted())") }
            // The library makes no timer descriptor: one is libdispatch's, opened once per
            // process the first time it arms a timer of a kind (clock) it had not armed before.
            for (fd, target) in now.descriptors
            where before.descriptors[fd] != target && target != "anon_inode:[timerfd]" {
                found.append("descriptor \(fd) -> \(target)")
            }
            for entry in now.sharedMemory.subtracting(before.sharedMemory)
            where entry.hasPrefix("mp") && !isForeignSharedMemory(entry) {
                found.append("/dev/shm/\(entry)")
            }
            if found.isEmpty { return [] }
            // Not `Task.sleep`: libdispatch would open a timer descriptor for the rest of the
            // runner's life on the first one, and the next look would count it as a leak.
            usleep(20_000)
        } while ContinuousClock.now < deadline
        return found
    }

    /// Whether a /dev/shm entry was made by a process outside this runner's tree: another test
    /// of the suite, or of another build on the machine, running at the same time (the
    /// directory is shared by all). The library names entries `mp-<creator pid>-<random>`,
    /// and makes none itself (only a user's `SharedMemory(name:)` does): an entry of a case is
    /// made by a process of the runner's tree, alive or a zombie not yet reaped (orphans come
    /// back to the runner). A creator that is gone, or not under the runner, is someone else.
    private static func isForeignSharedMemory(_ entry: String) -> Bool {
        // The first number in the name (tests make names of their own, `mp-squat-<pid>-...`).
        guard var pid = entry.split(separator: "-").lazy.compactMap({ Int32($0) }).first else { return true }
        let runner = getpid()
        while pid > 1 {
            if pid == runner { return false }
            guard let stat = readTextFile("/proc/\(pid)/stat"), let close = stat.lastIndex(of: ")") else {
                return true
            }
            // "pid (command) state ppid ...".
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            guard fields.count > 1, let parent = Int32(fields[1]) else { return true }
            pid = parent
        }
        return true
    }

    /// Reaps the zombies among this process's children. Called once the case's own
    /// `ChildProcess` objects are done: what remains are orphans adopted by the runner.
    private static func reapAdoptedOrphans() {
        for pid in childProcesses() {
            var status: Int32 = 0
            _ = waitpid(pid, &status, WNOHANG)
        }
    }
}

/// The descriptors open in this process, with what they point at.
func openDescriptors() -> [Int32: String] {
    var result: [Int32: String] = [:]
    for name in directoryEntries("/proc/self/fd") {
        guard let fd = Int32(name) else { continue }
        var buffer = [CChar](repeating: 0, count: 512)
        let count = readlink("/proc/self/fd/\(fd)", &buffer, 511)
        guard count > 0 else { continue }  // the directory's own descriptor, closed by now
        result[fd] = String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
    return result
}

/// The children of a process (this one by default), of all its threads.
func childProcesses(of pid: String = "self") -> [Int32] {
    var result: [Int32] = []
    for task in directoryEntries("/proc/\(pid)/task") {
        guard Int32(task) != nil, let list = readTextFile("/proc/\(pid)/task/\(task)/children") else { continue }
        result += list.split(separator: " ").compactMap { Int32($0) }
    }
    return result
}

/// This process's descendants: its children, theirs, and so on (a child started through the
/// fork server is the fork server's child).
func descendantProcesses() -> [Int32] {
    var result: [Int32] = []
    var next = childProcesses()
    while let pid = next.popLast() {
        result.append(pid)
        next += childProcesses(of: String(pid))
    }
    return result
}

/// A small text file's contents, or nil.
func readTextFile(_ path: String) -> String? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let count = read(fd, &chunk, chunk.count)
        if count <= 0 { break }
        bytes += chunk[0..<count]
    }
    return String(decoding: bytes, as: UTF8.self)
}
