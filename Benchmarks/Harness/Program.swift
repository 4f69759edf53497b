// Running another program to completion: the Python counterpart, the floor, the C compiler.

import Glibc

/// What a finished program left behind.
struct ProgramOutput {
    /// The wait status, as `waitpid` gives it.
    var status: Int32
    var standardOutput: String

    var succeeded: Bool { status == 0 }

    /// "exit status 2", "killed by signal 9": for the one line that says a counterpart failed.
    var statusDescription: String {
        let signal = status & 0x7f
        return signal == 0 ? "exit status \((status >> 8) & 0xff)" : "killed by signal \(signal)"
    }
}

/// Runs `arguments` (the first one looked up in `PATH`, as a shell would) and waits for it.
/// Its standard output is captured; its standard error goes to the file at `standardErrorPath`
/// (created or truncated) if one is given, else to ours. Nil if it could not be started (not
/// found, not executable); the caller knows what that means for it.
///
/// posix_spawn rather than popen: no shell in between to quote the arguments for, and the
/// program starts with the default signal mask and dispositions whatever the library did to
/// this process's, like the same program started from a shell.
func runProgram(_ arguments: [String], standardErrorPath: String? = nil) -> ProgramOutput? {
    var ends: [Int32] = [-1, -1]
    guard pipe(&ends) == 0 else { return nil }
    let (reader, writer) = (ends[0], ends[1])

    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    // The program gets the pipe as its standard output and neither end under another number
    // (the pipe is not close-on-exec: Glibc's pipe2 is not visible from Swift).
    posix_spawn_file_actions_adddup2(&actions, writer, 1)
    posix_spawn_file_actions_addclose(&actions, writer)
    posix_spawn_file_actions_addclose(&actions, reader)
    if let standardErrorPath {
        posix_spawn_file_actions_addopen(&actions, 2, standardErrorPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    }

    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    var noSignals = sigset_t()
    sigemptyset(&noSignals)
    var allSignals = sigset_t()
    sigfillset(&allSignals)
    posix_spawnattr_setsigmask(&attributes, &noSignals)
    posix_spawnattr_setsigdefault(&attributes, &allSignals)
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

    let argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    var pid: pid_t = 0
    let spawnError = posix_spawnp(&pid, arguments[0], &actions, &attributes, argv, environ)
    // Ours closed, the pipe reaches end-of-file when the program exits (or closes its output).
    close(writer)
    guard spawnError == 0 else {
        close(reader)
        return nil
    }

    var output: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
        let count = read(reader, &buffer, buffer.count)
        if count > 0 {
            output += buffer[0..<count]
        } else if count < 0 && errno == EINTR {
            continue
        } else {
            break
        }
    }
    close(reader)

    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 {
        guard errno == EINTR else { return nil }
    }
    return ProgramOutput(status: status, standardOutput: String(decoding: output, as: UTF8.self))
}
