import CMultiprocessing
import Glibc
import SystemPackage

/// Starts children by the chosen method, one at a time, on the library's launcher thread.
/// Either way the child is a direct child of this process, reaped through its pidfd, with
/// `socket` as its bootstrap descriptor.
///
/// Why one thread of its own:
/// - a child's parent-death signal fires when the *thread* that started it exits, so
///   children (and the fork server, whose workers are this process's children too) are
///   started from a thread that lives as long as the process;
/// - a start is a few milliseconds of `posix_spawn` or a round trip to the fork server:
///   `async` callers suspend meanwhile instead of holding a thread of the cooperative pool,
///   and the fork server's socket needs no lock held across I/O, since only this thread
///   ever talks to it.
enum Launcher {
    private static let thread = JobThread()

    /// The launcher thread's id (`gettid`), starting the thread if need be. Every child of
    /// this process starts from that thread, so a limit on what this process starts can
    /// bind that thread alone (a pids cgroup holds single threads): the fault matrix sets
    /// one so, and the process's other threads stay free to run and reap meanwhile.
    static var threadID: pid_t { thread.run { mp_gettid() } }

    /// Starts a child, blocking the calling thread until it exists.
    static func launch(_ method: StartMethod, socket: FileDescriptor, typeName: String) throws -> pid_t {
        try thread.run { () throws -> pid_t in try launchHere(method, socket: socket, typeName: typeName) }
    }

    /// Starts a child; the calling task suspends until it exists.
    static func launch(_ method: StartMethod, socket: FileDescriptor, typeName: String) async throws -> pid_t {
        try await thread.run { try launchHere(method, socket: socket, typeName: typeName) }
    }

    /// Starts the process that unlinks named shared memory when this one exits (see
    /// ``SegmentWatcher``).
    static func spawnWatcher(socket: FileDescriptor) throws -> pid_t {
        try thread.run { () throws -> pid_t in
            do throws(Errno) {
                return try spawnSelf(mode: "segment-watcher", socket: socket)
            } catch {
                throw ConnectionError.system(error, during: "starting the shared memory watcher (posix_spawn)")
            }
        }
    }

    /// For tests: keeps the launcher thread busy until `gate` fires, and tells how many
    /// starts are waiting for it.
    static func hold(until gate: ThreadSignal) { thread.submit { gate.wait() } }
    static var waitingStarts: Int { thread.queued }

    private static func launchHere(_ method: StartMethod, socket: FileDescriptor, typeName: String) throws -> pid_t {
        switch method {
        case .spawn:
            do {
                return try spawnSelf(mode: "worker", socket: socket)
            } catch {
                throw ConnectionError.system(error, during: "starting a process (posix_spawn)")
            }
        case .forkserver:
            return try ForkServer.fork(socket: socket, typeName: typeName)
        }
    }
}
