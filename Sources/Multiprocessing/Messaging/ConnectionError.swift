import CMultiprocessing
import SystemPackage

/// What can go wrong on a connection, besides a malformed message (``WireError``).
public enum ConnectionError: Error, Sendable, CustomStringConvertible {
    /// The peer closed its end, or exited: no message will come. Raised only once every
    /// message sent before that has been received.
    case endOfStream
    /// The peer went away in the middle of a message: `received` of `expected` bytes came.
    case peerClosedMidMessage(expected: Int, received: Int)
    /// This end was closed (by ``Connection/close()``, or because it was handed to a child
    /// process, which took it).
    case closed
    /// The message is larger than the buffer given to `receiveBytes(into:)`; it was
    /// received whole and is here, so nothing is lost.
    case bufferTooSmall(needed: Int, message: [UInt8])
    /// The peer cannot receive any more (it closed its end or exited).
    case peerGone
    /// Descriptors sent with a message (the handles inside it) were dropped by the kernel
    /// on their way here, most often because this process is at its descriptor limit
    /// (`RLIMIT_NOFILE`). That one message is refused; the connection stays in step and
    /// later messages come through.
    case descriptorsLost(expected: Int, received: Int)
    /// A system call failed.
    case system(Errno, during: String)

    /// A sentence saying what went wrong.
    public var description: String {
        switch self {
        case .endOfStream: "end of stream: the other end of the connection was closed or its process exited"
        case .peerClosedMidMessage(let expected, let received):
            "the other end went away in the middle of a message (\(received) of \(expected) bytes arrived)"
        case .closed: "this end of the connection is closed"
        case .bufferTooSmall(let needed, _): "the message has \(needed) bytes, more than the buffer holds"
        case .peerGone: "cannot send: the other end of the connection was closed or its process exited"
        case .descriptorsLost(let expected, let received):
            "a message carried \(expected) handles but only \(received) arrived: the system dropped the rest "
                + "(is this process at its descriptor limit, RLIMIT_NOFILE?); the message was refused"
        case .system(let errno, let during):
            // The symbol too ("EMFILE"): the words alone ("Too many open files") do not say
            // which limit to look at, and the symbol is what one searches for.
            if let name = mp_errno_name(errno.rawValue) {
                "\(during) failed: \(errno) (\(String(cString: name)))"
            } else {
                "\(during) failed: \(errno)"
            }
        }
    }
}
