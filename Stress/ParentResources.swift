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

    /// Fixes glibc malloc's thresholds at their defaults (128 KiB) for the rest of the program.
    ///
    /// By default glibc raises both after the program frees a large block: the mmap threshold
    /// up to the block's size (at most 32 MiB), the trim threshold to twice that. A million
    /// results are such blocks, so afterwards memory freed at the top of a thread's arena is
    /// kept, and `malloc_trim` does not return the top of a thread's arena either. Measured
    /// here: the same pool-1m round left between 2.5 and 24 MiB more resident memory, from
    /// one run to the next, and not growing over rounds. Setting the thresholds turns that
    /// adjustment off (mallopt(3)), so the resident memory after a trim is what is in use.
    static func fixMallocThresholds() {
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "mallopt") else { return }
        let mallopt = unsafeBitCast(symbol, to: (@convention(c) (Int32, Int32) -> Int32).self)
        let (trimThreshold, mmapThreshold): (Int32, Int32) = (-1, -3)  // M_TRIM_THRESHOLD, M_MMAP_THRESHOLD
        _ = mallopt(trimThreshold, 128 * 1024)
        _ = mallopt(mmapThreshold, 128 * 1024)
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

    /// Whether a /dev/shm entry was made by another program. The scenarios name no segment,
    /// so the library could only have made one here under the names it chooses itself,
    /// `mp-PID-RANDOM` after the creator: any other name is another program's (the test
    /// suites of other checkouts on the machine make `fm-pool-ledger-…` ones), and so is a
    /// library name whose PID is alive and neither this process nor one of its descendants.
    static func isOtherProgramsSegment(_ name: String) -> Bool {
        let parts = name.split(separator: "-")
        guard parts.count == 3, parts[0] == "mp", var pid = pid_t(parts[1]) else { return true }
        let me = getpid()
        // Up the tree from the creator: reaching this process makes it ours.
        while pid > 1 {
            if pid == me { return false }
            guard let parent = parentOf(pid) else { return pid != pid_t(parts[1]) }
            pid = parent
        }
        return true
    }

    /// The parent of a live process, from /proc/PID/stat; `nil` if it is gone.
    private static func parentOf(_ pid: pid_t) -> pid_t? {
        guard let stat = readText("/proc/\(pid)/stat"), let close = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        return fields.count > 1 ? pid_t(fields[1]) : nil
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
