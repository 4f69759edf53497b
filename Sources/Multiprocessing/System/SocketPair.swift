import CMultiprocessing
import Glibc
import SystemPackage

/// A connected pair of Unix stream sockets, both ends close-on-exec.
///
/// Stream sockets, not pipes: they are duplex, carry descriptors (SCM_RIGHTS) and let a
/// writer use `MSG_NOSIGNAL`, so a dead reader is an `EPIPE` error instead of a SIGPIPE.
func makeSocketPair() throws(Errno) -> (FileDescriptor, FileDescriptor) {
    var fds: [Int32] = [-1, -1]
    _ = try systemCall { socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) }
    return (FileDescriptor(rawValue: fds[0]), FileDescriptor(rawValue: fds[1]))
}

extension FileDescriptor {
    /// Sends `head` then `tail` in one call, with descriptors attached to the first byte when
    /// `descriptors` is not empty. Returns the number of bytes the kernel took (a stream
    /// socket may take fewer, and a non-blocking call with a full buffer throws `wouldBlock`).
    func send(
        _ head: UnsafeRawBufferPointer, _ tail: UnsafeRawBufferPointer = UnsafeRawBufferPointer(start: nil, count: 0),
        descriptors: [Int32] = [], nonBlocking: Bool = false
    ) throws(Errno) -> Int {
        let flags = nonBlocking ? Int32(MSG_DONTWAIT) : 0
        return try systemCall {
            descriptors.withUnsafeBufferPointer { fds in
                mp_send_with_fds(
                    rawValue, head.baseAddress, head.count, tail.baseAddress, tail.count, fds.baseAddress,
                    Int32(fds.count), flags)
            }
        }
    }

    /// Receives up to `buffer.count` bytes, and any descriptors that came with them
    /// (appended to `descriptors`, already close-on-exec). Returns 0 at end of stream.
    /// A non-blocking call that finds nothing throws `Errno.wouldBlock`.
    func receive(
        into buffer: UnsafeMutableRawBufferPointer, descriptors: inout [Int32], nonBlocking: Bool = false
    ) throws(Errno) -> Int {
        let flags = nonBlocking ? Int32(MSG_DONTWAIT) : 0
        var count: Int32 = 0
        var truncated: Int32 = 0
        // 253 is SCM_MAX_FD, the most one message can carry; the buffer lives on the stack.
        let received = try withUnsafeTemporaryAllocation(of: Int32.self, capacity: 253) { fds throws(Errno) -> Int in
            let result = try systemCall {
                mp_receive_with_fds(
                    rawValue, buffer.baseAddress, buffer.count, fds.baseAddress, 253, &count, &truncated, flags)
            }
            if count > 0 { descriptors.append(contentsOf: fds.prefix(Int(count))) }
            return result
        }
        return received
    }
}
