import Glibc
import SystemPackage

/// The children of this process, of all its threads (a child belongs to the thread that
/// started it), that hold the socket `descriptor` refers to, found through /proc.
///
/// Used once, on a failure path: a fork server that died between forking a worker and
/// naming it leaves a worker only its socket can identify.
func childrenHolding(_ descriptor: FileDescriptor) -> [pid_t] {
    var status = stat()
    guard fstat(descriptor.rawValue, &status) == 0 else { return [] }
    let target = "socket:[\(status.st_ino)]"
    var holders: [pid_t] = []
    for thread in directoryEntries("/proc/self/task") {
        guard let list = readSmallFile("/proc/self/task/\(thread)/children") else { continue }
        for pid in list.split(separator: " ").compactMap({ pid_t($0) }) {
            let holds = directoryEntries("/proc/\(pid)/fd").contains { readLink("/proc/\(pid)/fd/\($0)") == target }
            if holds { holders.append(pid) }
        }
    }
    return holders
}

/// The names in a directory, without `.` and `..`; empty if it cannot be read.
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

private func readSmallFile(_ path: String) -> String? {
    let descriptor = open(path, O_RDONLY | O_CLOEXEC)
    guard descriptor >= 0 else { return nil }
    defer { _ = close(descriptor) }
    var bytes = [UInt8](repeating: 0, count: 4096)
    let count = read(descriptor, &bytes, bytes.count)
    return count >= 0 ? String(decoding: bytes[0..<count], as: UTF8.self) : nil
}

private func readLink(_ path: String) -> String? {
    var buffer = [UInt8](repeating: 0, count: 256)
    let count = buffer.withUnsafeMutableBytes {
        readlink(path, $0.baseAddress!.assumingMemoryBound(to: CChar.self), 255)
    }
    return count > 0 ? String(decoding: buffer[0..<count], as: UTF8.self) : nil
}
