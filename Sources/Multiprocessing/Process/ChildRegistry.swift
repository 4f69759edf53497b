import Glibc
import Synchronization
import SystemPackage

/// Every child this process started and has not reaped, for the two moments when no
/// ``ChildProcess`` object is there to do it:
/// - a `ChildProcess` released while its child still runs: the child is reaped when it
///   exits, so it never lingers as a zombie;
/// - the program's normal exit: daemon children are terminated, the others waited for
///   (Python's semantics); children of a process that dies abruptly get SIGKILL from the
///   kernel instead (their parent-death signal).
final class ChildRegistry: Sendable {
    static let shared = ChildRegistry()

    private struct Child {
        let process: ProcessDescriptor
        let isDaemon: Bool
        /// The `ChildProcess` that owns it, while one does.
        weak var object: ChildProcess?
    }

    private let children = Mutex<[pid_t: Child]>([:])

    private static let created = Atomic<Bool>(false)

    private init() {
        Self.created.store(true, ordering: .releasing)
        atexit { ChildRegistry.shared.finishAtExit() }
    }

    /// Ends daemon children and waits for the others, if any were ever started.
    static func finishAll() {
        if created.load(ordering: .acquiring) { shared.finishAtExit() }
    }

    func register(pid: pid_t, process: ProcessDescriptor, isDaemon: Bool, object: ChildProcess) {
        children.withLock { $0[pid] = Child(process: process, isDaemon: isDaemon, object: object) }
    }

    /// The `ChildProcess` objects whose children have not been reaped yet.
    var objects: [ChildProcess] {
        children.withLock { children in children.values.compactMap(\.object) }
    }

    func forget(pid: pid_t) {
        _ = children.withLock { $0.removeValue(forKey: pid) }
    }

    /// Takes over a child whose `ChildProcess` is gone: reaps it once it exits.
    func adopt(_ pid: pid_t) {
        guard
            let process = children.withLock({ children -> ProcessDescriptor? in
                children[pid]?.process
            })
        else { return }
        Task.detached {
            await process.reapWhenExited()
            ChildRegistry.shared.forget(pid: pid)
        }
    }

    /// Children started and not yet reaped.
    var count: Int { children.withLock(\.count) }

    private func finishAtExit() {
        let remaining = children.withLock { $0 }
        for child in remaining.values where child.isDaemon {
            try? child.process.send(signal: SIGTERM)
        }
        // A daemon that ignores SIGTERM gets a second to go, then SIGKILL: exit never hangs
        // on a daemon. Non-daemon children are waited for, as Python does.
        let grace = Optional(Duration.seconds(1)).deadline
        for child in remaining.values {
            if child.isDaemon, (try? child.process.descriptor.waitReadable(deadline: grace)) != true {
                try? child.process.send(signal: SIGKILL)
            }
            _ = try? child.process.reap(wait: true)
        }
    }
}
