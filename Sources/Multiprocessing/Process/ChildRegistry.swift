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
///
/// Entries are keyed by an id of their own, never by pid: a pid is free for reuse the
/// moment its process is reaped, and a new child may get it before the old entry is gone.
final class ChildRegistry: Sendable {
    static let shared = ChildRegistry()

    private struct Child {
        let process: ProcessDescriptor
        let isDaemon: Bool
        /// The `ChildProcess` that owns it, while one does.
        weak var object: ChildProcess?
    }

    private struct State {
        var children: [UInt64: Child] = [:]
        var nextID: UInt64 = 1
    }

    private let state = Mutex(State())

    private static let created = Atomic<Bool>(false)

    private init() {
        Self.created.store(true, ordering: .releasing)
        atexit { ChildRegistry.shared.finishAtExit() }
    }

    /// Ends daemon children and waits for the others, if any were ever started.
    static func finishAll() {
        if created.load(ordering: .acquiring) { shared.finishAtExit() }
    }

    /// Adds a child and returns its id.
    func register(process: ProcessDescriptor, isDaemon: Bool, object: ChildProcess) -> UInt64 {
        state.withLock { state in
            defer { state.nextID += 1 }
            state.children[state.nextID] = Child(process: process, isDaemon: isDaemon, object: object)
            return state.nextID
        }
    }

    /// The `ChildProcess` objects whose children have not been reaped yet.
    var objects: [ChildProcess] {
        state.withLock { state in state.children.values.compactMap(\.object) }
    }

    func forget(_ id: UInt64) {
        _ = state.withLock { $0.children.removeValue(forKey: id) }
    }

    /// Takes over a child whose `ChildProcess` is gone: reaps it once it exits.
    func adopt(_ id: UInt64) {
        guard let process = state.withLock({ $0.children[id]?.process }) else { return }
        Task.detached {
            await process.reapWhenExited()
            ChildRegistry.shared.forget(id)
        }
    }

    /// Children started and not yet reaped.
    var count: Int { state.withLock(\.children.count) }

    private func finishAtExit() {
        let remaining = state.withLock(\.children)
        for child in remaining.values where child.isDaemon {
            try? child.process.send(signal: SIGTERM)
        }
        // A daemon that ignores SIGTERM gets a second to go, then SIGKILL: exit never hangs
        // on a daemon. Non-daemon children are waited for, as Python does. A child whose
        // object lives is finished through it, so its outcome is read once, there.
        let grace = Optional(Duration.seconds(1)).deadline
        for child in remaining.values {
            if child.isDaemon, (try? child.process.descriptor.waitReadable(deadline: grace)) != true {
                try? child.process.send(signal: SIGKILL)
            }
            if let object = child.object {
                try? object.join()
            } else {
                _ = try? child.process.reap(wait: true)
            }
        }
    }
}
