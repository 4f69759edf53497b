import Glibc
import SystemPackage

@testable import Multiprocessing

/// Targets and helpers shared by the tests. Types used as work must live in the test
/// binary: the child finds them by name there.

/// Ends at once, successfully.
struct Succeed: ProcessTarget {
    func run() {}
}

/// Sleeps for `seconds` (forever by default).
struct Sleep: ProcessTarget {
    var seconds: Double = 3600
    func run() async throws {
        try await Task.sleep(for: .seconds(seconds))
    }
}

/// A Codable error: it must come back to the parent as itself.
struct InventoryError: Error, Codable, Equatable, CustomStringConvertible {
    var item: String
    var missing: Int
    var description: String { "\(missing) × \(item) missing" }
}

/// An error that is not Codable: only its type name and description come back.
struct PlainError: Error, CustomStringConvertible {
    var description: String { "plain failure" }
}

struct ThrowInventory: ProcessTarget {
    func run() throws { throw InventoryError(item: "bolt", missing: 3) }
}

struct ThrowPlain: ProcessTarget {
    func run() async throws { throw PlainError() }
}

struct CallFatalError: ProcessTarget {
    func run() { fatalError("deliberate crash in a test child") }
}

struct ExitWith: ProcessTarget {
    var status: Int32
    func run() { exit(status) }
}

/// Whether a process is gone: no such pid, or a zombie (dead, waiting to be reaped by
/// whoever is its parent now).
func processIsGone(_ pid: pid_t) -> Bool {
    guard let stat = try? readFile("/proc/\(pid)/stat") else { return true }
    // The state follows the command name in parentheses: "pid (comm) S ...".
    guard let close = stat.lastIndex(of: ")") else { return true }
    let state = stat[stat.index(close, offsetBy: 2)]
    return state == "Z" || state == "X"
}

/// Waits up to `timeout` for `condition`; returns whether it became true.
func eventually(within timeout: Duration, _ condition: () -> Bool) -> Bool {
    let deadline = ContinuousClock.now.advanced(by: timeout)
    while ContinuousClock.now < deadline {
        if condition() { return true }
        usleep(10_000)
    }
    return condition()
}

/// Whether `condition` holds within `timeout`, looked at every 10 ms; the task sleeps in
/// between (`eventually` would hold a thread of the cooperative pool, which the library's
/// async work in the same test may need).
func becomesTrue(within timeout: Duration, _ condition: () -> Bool) async -> Bool {
    let deadline = ContinuousClock.now.advanced(by: timeout)
    while ContinuousClock.now < deadline {
        if condition() { return true }
        try? await Task.sleep(for: .milliseconds(10))
    }
    return condition()
}

/// The contents of a small text file.
func readFile(_ path: String) throws -> String {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw ConnectionError.system(.init(rawValue: errno), during: "open \(path)") }
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

/// The descriptors open in this process, with what they point at.
func openDescriptors() -> [Int32: String] {
    var result: [Int32: String] = [:]
    guard let directory = opendir("/proc/self/fd") else { return [:] }
    defer { closedir(directory) }
    var targets: [(Int32, String)] = []
    while let entry = readdir(directory) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        guard let fd = Int32(name) else { continue }
        var buffer = [CChar](repeating: 0, count: 512)
        let count = readlink("/proc/self/fd/\(fd)", &buffer, 511)
        targets.append(
            (fd, count > 0 ? String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self) : "?"))
    }
    for (fd, target) in targets { result[fd] = target }
    return result
}

/// The children of this process: of all its threads (a child belongs to the thread that
/// started it, and the library starts them from its reactor thread).
func childProcesses() -> [Int32] {
    var result: [Int32] = []
    guard let directory = opendir("/proc/self/task") else { return [] }
    defer { closedir(directory) }
    while let entry = readdir(directory) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        guard Int32(name) != nil, let list = try? readFile("/proc/self/task/\(name)/children") else { continue }
        result += list.split(separator: " ").compactMap { Int32($0) }
    }
    return result
}

/// `dup(2)` for tests that need a second descriptor for the same socket.
enum FileDescriptorCopy {
    static func duplicate(_ descriptor: FileDescriptor) -> FileDescriptor {
        FileDescriptor(rawValue: fcntl(descriptor.rawValue, F_DUPFD_CLOEXEC, 0))
    }
}

/// Runs `body` on a new thread of its own, after `delay`.
///
/// For tests that block a thread on purpose: a `Task` meant to unblock them would need a
/// thread of Swift's cooperative pool, which the blocked tests may be holding (two threads
/// on a two-core machine), and would never run.
func onNewThread(after delay: Duration, _ body: @escaping @Sendable () -> Void) {
    final class Job: Sendable {
        let delay: Duration
        let body: @Sendable () -> Void
        init(delay: Duration, body: @escaping @Sendable () -> Void) {
            self.delay = delay
            self.body = body
        }
    }
    let job = Unmanaged.passRetained(Job(delay: delay, body: body)).toOpaque()
    var thread = pthread_t()
    let created = pthread_create(
        &thread, nil,
        { context in
            let job = Unmanaged<Job>.fromOpaque(context!).takeRetainedValue()
            let (seconds, attoseconds) = job.delay.components
            usleep(UInt32(seconds * 1_000_000 + attoseconds / 1_000_000_000_000))
            job.body()
            return nil
        }, job)
    precondition(created == 0, "pthread_create failed")
    pthread_detach(thread)
}
