import CMultiprocessing
import Glibc
import Synchronization
import SystemPackage

/// Unlinks this process's named shared memory when it exits, however it exits.
///
/// A small process of the library's, started on the first named segment this process
/// creates, holds one end of a socket; this process holds the other. Names go over it as
/// they are created ("+name") and unlinked ("-name"). When this process ends, crash and
/// SIGKILL included, the kernel closes its end; the watcher reads the end of the stream,
/// unlinks what is still listed, and exits. It has no parent-death signal (it must outlive
/// its parent long enough to clean up), and runs no user code.
final class SegmentWatcher: Sendable {
    static let shared = SegmentWatcher()

    private let channel = Mutex<MessageStream?>(nil)

    /// Lists `name` for unlinking at exit, starting the watcher on first use.
    func watch(_ name: String) throws {
        try channel.withLock { channel in
            if channel == nil { channel = try Self.start() }
            try channel!.sendValue("+" + name)
        }
    }

    /// Takes `name` off the list (it was unlinked).
    func forget(_ name: String) {
        channel.withLock { channel in _ = try? channel?.sendValue("-" + name) }
    }

    private static func start() throws -> MessageStream {
        let (mine, theirs) = try makeStreamPair(maximumMessageSize: 1024)
        defer { theirs.close() }
        let pid = try Launcher.spawnWatcher(socket: theirs.rawDescriptor)
        let process = try ProcessDescriptor(child: pid)
        Task.detached { await process.reapWhenExited() }
        return mine
    }

    /// The watcher's loop. Never returns.
    static func serve(control descriptor: FileDescriptor) -> Never {
        let control = MessageStream(descriptor: descriptor, maximumMessageSize: 1024)
        var names: Set<String> = []
        while true {
            guard let message = try? control.receiveValue(deadline: nil) as String? else { break }
            let name = String(message.dropFirst())
            if message.hasPrefix("+") { names.insert(name) } else { names.remove(name) }
        }
        for name in names { _ = shm_unlink("/" + name) }
        _exit(0)
    }
}
