import Glibc
import SystemPackage

/// Starts a child by the chosen method and returns its pid. Either way the child is a
/// direct child of this process, reaped through its pidfd, with `socket` as its bootstrap
/// descriptor.
enum Launcher {
    static func launch(_ method: StartMethod, socket: FileDescriptor, typeName: String) throws -> pid_t {
        switch method {
        case .spawn:
            // From the reactor's thread, which lives as long as the process: see spawnSelf.
            return try Reactor.shared.runOnLoop { () throws(Errno) in try spawnSelf(mode: "worker", socket: socket) }
        case .forkserver:
            return try ForkServer.fork(socket: socket, typeName: typeName)
        }
    }
}
