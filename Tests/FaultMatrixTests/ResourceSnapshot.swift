import Glibc

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
            for (fd, target) in now.descriptors where before.descriptors[fd] != target {
                found.append("descriptor \(fd) -> \(target)")
            }
            for entry in now.sharedMemory.subtracting(before.sharedMemory)
            where entry.hasPrefix("mp") && !madeByOtherProcess(entry) {
                found.append("/dev/shm/\(entry)")
            }
            if found.isEmpty { return [] }
            try? await Task.sleep(for: .milliseconds(20))
        } while ContinuousClock.now < deadline
        return found
    }

    /// Whether a /dev/shm entry is another program's: the library names its segments
    /// `mp-<creator pid>-...`, and /dev/shm is the whole machine's, where the rest of the
    /// suite (run in parallel, in the test process) and other programs make theirs. A
    /// creator that is alive and neither this runner nor one of its descendants is not the
    /// case's (a case's creator that is still alive is one of them; one that is gone counts).
    private static func madeByOtherProcess(_ entry: String) -> Bool {
        let parts = entry.split(separator: "-")
        guard parts.count >= 3, parts[0] == "mp", let creator = Int32(parts[1]) else { return false }
        if creator == getpid() || descendantProcesses().contains(creator) { return false }
        return kill(creator, 0) == 0 || errno == EPERM
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

/// The names in a directory, without "." and "..".
func directoryEntries(_ path: String) -> [String] {
    guard let directory = opendir(path) else { return [] }
    defer { closedir(directory) }
    var names: [String] = []
    while let entry = readdir(directory) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        if name != "." && name != ".." { names.append(name) }
    }
    return names
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
