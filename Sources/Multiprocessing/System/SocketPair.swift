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
    /// (already close-on-exec). `count` is 0 at end of stream. A non-blocking call that
    /// finds nothing throws `Errno.wouldBlock`.
    ///
    /// The kernel hands out the descriptors of one `sendmsg` with the first bytes of that
    /// send, and never those of two sends in one call; when it could not install them all
    /// (this process at its descriptor limit) it says so (`MSG_CTRUNC`): `truncated`.
    func receive(into buffer: UnsafeMutableRawBufferPointer, nonBlocking: Bool = false) throws(Errno) -> ReceivedBytes {
        let flags = nonBlocking ? Int32(MSG_DONTWAIT) : 0
        var count: Int32 = 0
        var truncated: Int32 = 0
        // 253 is SCM_MAX_FD, the most one message can carry; the buffer lives on the stack.
        return try withUnsafeTemporaryAllocation(of: Int32.self, capacity: 253) { fds throws(Errno) -> ReceivedBytes in
            let result = try systemCall {
                mp_receive_with_fds(
                    rawValue, buffer.baseAddress, buffer.count, fds.baseAddress, 253, &count, &truncated, flags)
            }
            return ReceivedBytes(
                count: result, descriptors: count > 0 ? Array(fds.prefix(Int(count))) : [], truncated: truncated != 0)
        }
    }
}

/// What one `recvmsg` brought: bytes, and the descriptors sent with them.
struct ReceivedBytes {
    var count: Int
    var descriptors: [Int32]
    /// The kernel dropped descriptors that were sent (`MSG_CTRUNC`).
    var truncated: Bool
}
