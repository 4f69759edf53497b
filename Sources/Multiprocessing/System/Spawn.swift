import CMultiprocessing
import Glibc
import SystemPackage

/// The descriptor number a started process finds its bootstrap socket on.
let bootstrapDescriptor: Int32 = 3

/// Starts a fresh copy of the running binary (`/proc/self/exe`, which names the file this
/// process was started from even if it was rebuilt or deleted since) with the library's
/// marker in its environment, so the C constructor catches it before `main`.
///
/// The child gets stdin, stdout and stderr, `socket` as descriptor 3, and nothing else:
/// every other descriptor is closed in the child (`closefrom`), whether or not it was
/// opened close-on-exec. Signal mask and dispositions are reset to the defaults. Descriptor
/// 3 loses close-on-exec through the exec, as it must to get there; the child sets it again
/// before anything else (`childMain`).
///
/// - Important: call this only on ``Reactor``'s thread, which lives as long as the process:
///   the child's parent-death signal fires when the *thread* that started it exits.
func spawnSelf(mode: String, socket: FileDescriptor, extraEnvironment: [String] = []) throws(Errno) -> pid_t {
    var actions = posix_spawn_file_actions_t()
    _ = try systemCallOnce { posix_spawn_file_actions_init(&actions) == 0 ? 0 : -1 }
    defer { posix_spawn_file_actions_destroy(&actions) }
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }

    // dup2 onto the same number clears close-on-exec (glibc >= 2.29), so this also works
    // when the socket already is descriptor 3. Each action is checked: a child started
    // without its closefrom would inherit every descriptor the program opened without
    // close-on-exec.
    var added = posix_spawn_file_actions_adddup2(&actions, socket.rawValue, bootstrapDescriptor)
    if added != 0 { throw Errno(rawValue: added) }
    added = mp_spawn_add_close_from(&actions, bootstrapDescriptor + 1)
    if added != 0 { throw Errno(rawValue: added) }

    var noSignals = sigset_t()
    sigemptyset(&noSignals)
    var allSignals = sigset_t()
    sigfillset(&allSignals)
    posix_spawnattr_setsigmask(&attributes, &noSignals)
    posix_spawnattr_setsigdefault(&attributes, &allSignals)
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

    let marker = "\(MP_CHILD_ENV)=\(mode):\(bootstrapDescriptor):\(getpid())"
    var environment: [UnsafeMutablePointer<CChar>?] = []
    var entry = environ
    let prefix = "\(MP_CHILD_ENV)="
    while let variable = entry.pointee {
        if strncmp(variable, prefix, prefix.utf8.count) != 0 { environment.append(strdup(variable)) }
        entry += 1
    }
    environment.append(strdup(marker))
    for variable in extraEnvironment { environment.append(strdup(variable)) }
    environment.append(nil)
    let arguments: [UnsafeMutablePointer<CChar>?] = [strdup(CommandLine.arguments.first ?? "swift-worker"), nil]
    defer {
        for pointer in environment { free(pointer) }
        for pointer in arguments { free(pointer) }
    }

    var pid: pid_t = 0
    let result = posix_spawn(&pid, "/proc/self/exe", &actions, &attributes, arguments, environment)
    if result != 0 { throw Errno(rawValue: result) }
    return pid
}
