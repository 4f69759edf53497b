import SystemPackage

/// What can go wrong with a named ``SharedMemory`` segment.
public enum SharedMemoryError: Error, Sendable, CustomStringConvertible {
    /// A name must be 1 to 200 characters, without `/` or NUL.
    case invalidName(String)
    /// A size must be at least 1 byte.
    case invalidSize(Int)
    /// A segment of that name exists already (``SharedMemory/init(creating:size:unlinkWhenOwnerExits:)``).
    case alreadyExists(String)
    /// No segment has that name (``SharedMemory/init(attachingTo:)``).
    case notFound(String)
    /// A system call failed.
    case system(Errno, during: String)

    /// A sentence saying what went wrong.
    public var description: String {
        switch self {
        case .invalidName(let name):
            "\"\(name)\" is not a valid shared memory name (1 to 200 characters, no \"/\")"
        case .invalidSize(let size): "a shared memory segment needs at least 1 byte, not \(size)"
        case .alreadyExists(let name): "a shared memory segment named \"\(name)\" exists already"
        case .notFound(let name): "no shared memory segment is named \"\(name)\""
        case .system(let errno, let during): "\(during) failed: \(errno)"
        }
    }
}
