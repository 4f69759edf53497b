import CMultiprocessing
import Glibc
import SystemPackage

/// A pidfd: a descriptor that names one process for good, so signalling or waiting on it
/// can never hit another process that reused the pid. It becomes readable when the
/// process exits.
struct ProcessDescriptor: Sendable {
    let descriptor: FileDescriptor

    /// Opens a pidfd for `pid`, which must be an unreaped child of this process (so the pid
    /// cannot have been reused yet).
    init(child pid: pid_t) throws(Errno) {
        descriptor = FileDescriptor(rawValue: try systemCall { mp_pidfd_open(pid) })
    }

    /// Sends `signal`; a process that has already exited is not an error.
    func send(signal: Int32) throws(Errno) {
        do {
            _ = try systemCall { mp_pidfd_send_signal(descriptor.rawValue, signal) }
        } catch .noSuchProcess {
            return
        }
    }

    /// How a reaped process ended, as the kernel says it.
    enum Exit: Equatable {
        case exited(status: Int32)
        case signaled(signal: Int32)
    }

    /// Reaps the process if it has exited. Returns `nil` while it still runs.
    func reap(wait: Bool) throws(Errno) -> Exit? {
        var code: Int32 = 0
        var status: Int32 = 0
        _ = try systemCall { mp_waitid_pidfd(descriptor.rawValue, WEXITED | (wait ? 0 : WNOHANG), &code, &status) }
        switch code {
        case 0: return nil
        case Int32(CLD_EXITED): return .exited(status: status)
        default: return .signaled(signal: status)
        }
    }

    func close() { descriptor.closeIgnoringErrors() }

    /// Waits (without blocking a thread) for the process to exit, reaps it and closes the
    /// pidfd: for children no one else waits for, so they never linger as zombies.
    func reapWhenExited() async {
        while true {
            do throws(Errno) {
                if try reap(wait: false) != nil { break }
            } catch {
                break  // already reaped, or not a child: nothing left to do
            }
            guard (try? await Reactor.shared.waitReadable(descriptor, deadline: nil)) != nil else { break }
        }
        close()
    }

    /// Ends and reaps a child of this process that has no pidfd (opening one failed). The
    /// pid is safe to use: an unreaped child's pid cannot be reused.
    static func killAndReap(child pid: pid_t) {
        _ = kill(pid, SIGKILL)
        var status: Int32 = 0
        _ = try? systemCall { waitpid(pid, &status, 0) }
    }
}
