import CMultiprocessing
import Glibc
import SystemPackage

/// Runs one system call, retrying it while it fails with `EINTR` (a handled signal must
/// never break a wait, a read or a write), and turns `-1` into a thrown `Errno`.
///
/// Every call into libc that can fail goes through here, so the retry and the error
/// conversion are written once.
@inline(__always)
func systemCall<Result: FixedWidthInteger>(_ body: () -> Result) throws(Errno) -> Result {
    while true {
        let result = body()
        if result != -1 { return result }
        let error = Errno(rawValue: errno)
        if error != .interrupted { throw error }
    }
}

/// Like ``systemCall(_:)`` but without retrying on `EINTR`, for calls where an
/// interruption must be seen by the caller (none yet) or that must not be repeated
/// (`close`: Linux releases the descriptor even when it reports `EINTR`).
@inline(__always)
func systemCallOnce<Result: FixedWidthInteger>(_ body: () -> Result) throws(Errno) -> Result {
    let result = body()
    if result == -1 { throw Errno(rawValue: errno) }
    return result
}

extension FileDescriptor {
    /// Makes `target` a copy of this descriptor, close-on-exec like every descriptor of the
    /// library (`dup3(2)` with `O_CLOEXEC`: `dup2` would clear the flag, and a program
    /// started meanwhile would inherit the copy).
    func duplicate(as target: Int32) throws(Errno) {
        if rawValue == target {
            _ = try systemCall { mp_set_cloexec(target, 1) }  // dup3 refuses the same number
        } else {
            _ = try systemCall { mp_dup_cloexec(rawValue, target) }
        }
    }

    /// Closes the descriptor, ignoring `EINTR` (the descriptor is released anyway on Linux;
    /// retrying could close a descriptor another thread has just opened).
    func closeIgnoringErrors() {
        _ = Glibc.close(rawValue)
    }
}

/// Writes a line to standard error with one `write(2)` (C's `stderr` is shared mutable
/// state to Swift 6, and one write keeps lines from different processes whole).
func printToStandardError(_ line: String) {
    var text = line
    text.append("\n")
    text.withUTF8 { bytes in _ = write(2, bytes.baseAddress, bytes.count) }
}
