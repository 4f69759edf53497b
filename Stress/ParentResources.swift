// What the parent holds, read from /proc: resident memory, open descriptors, child processes,
// and what /dev/shm holds. A stress scenario must give all of it back.

import Glibc
import Synchronization

/// One reading of the parent's resources.
struct ResourceReading: Sendable {
    /// Resident memory in bytes (/proc/self/statm, second field, times the page size).
    var residentBytes: Int
    /// Open descriptors (/proc/self/fd, not counting the one that lists it).
    var descriptors: Int
}

/// Reads /proc/self. Every read takes the same lock: a reading opens a descriptor for an
/// instant, and the sampler thread's must not be counted by a reading on another thread.
enum ParentResources {
    private static let readingLock = Mutex(())

    /// The resident memory and descriptor count now.
    static func read() -> ResourceReading {
        readingLock.withLock { _ in
            ResourceReading(residentBytes: residentBytes(), descriptors: descriptorCount())
        }
    }

    /// The same after giving back to the system the memory glibc's malloc keeps free
    /// (`malloc_trim(0)`, every arena): what is left is memory in use, so growth between two
    /// such readings is memory kept, not pages malloc caches for reuse.
    static func readTrimmed() -> ResourceReading {
        _ = mallocTrim?(0)
        return read()
    }

    /// glibc's `malloc_trim`, which its Swift module does not export (malloc.h is not in it).
    private static let mallocTrim: (@convention(c) (Int) -> Int32)? = {
        // RTLD_DEFAULT: the symbol as the program sees it, in the libc it is linked with.
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "malloc_trim") else { return nil }
        return unsafeBitCast(symbol, to: (@convention(c) (Int) -> Int32).self)
    }()

    /// The children of this process, of all its threads (a child belongs to the thread that
    /// started it: /proc/self/task/TID/children).
    static func children() -> Set<pid_t> {
        readingLock.withLock { _ in
            var pids = Set<pid_t>()
            for task in directoryEntries("/proc/self/task") {
                guard let text = readText("/proc/self/task/\(task)/children") else { continue }
                for field in text.split(separator: " ") {
                    if let pid = pid_t(field.trimmingWhitespace()) { pids.insert(pid) }
                }
            }
            return pids
        }
    }

    /// The names in /dev/shm.
    static func sharedMemoryNames() -> Set<String> {
        readingLock.withLock { _ in Set(directoryEntries("/dev/shm")) }
    }

    /// What one of our children is, for a message: its command name, or "gone".
    static func describe(_ pid: pid_t) -> String {
        let name = readText("/proc/\(pid)/comm")?.trimmingWhitespace() ?? "gone"
        let state = readText("/proc/\(pid)/stat").flatMap { stat -> String? in
            // The state follows the command name, which is in parentheses and may hold spaces.
            guard let close = stat.lastIndex(of: ")") else { return nil }
            return stat[stat.index(after: close)...].split(separator: " ").first.map(String.init)
        }
        return "\(pid) (\(name)\(state.map { ", state \($0)" } ?? ""))"
    }

    private static func residentBytes() -> Int {
        guard let text = readText("/proc/self/statm") else { return 0 }
        let fields = text.split(separator: " ")
        guard fields.count > 1, let pages = Int(fields[1]) else { return 0 }
        return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
    }

    private static func descriptorCount() -> Int {
        // The directory stream holds a descriptor of its own while it is read.
        max(0, directoryEntries("/proc/self/fd").count - 1)
    }

    private static func directoryEntries(_ path: String) -> [String] {
        guard let directory = opendir(path) else { return [] }
        defer { closedir(directory) }
        var names: [String] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    private static func readText(_ path: String) -> String? {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return nil }
        defer { close(descriptor) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = buffer.withUnsafeMutableBytes { Glibc.read(descriptor, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { break }
            bytes += buffer[0..<count]
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

extension StringProtocol {
    /// Without leading and trailing spaces and newlines.
    func trimmingWhitespace() -> String {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\n" || $0 == "\t" }
        guard let first = firstIndex(where: { !isSpace($0) }), let last = lastIndex(where: { !isSpace($0) }) else {
            return ""
        }
        return String(self[first...last])
    }
}
