/// A handle that goes to other processes as a *copy*: the sender keeps its own, and any
/// number of children may hold one (Python's way with every pipe end).
///
/// Connection ends *move* by default: once a child has started with an end, this process's
/// copy is closed, so that the receiver sees the end of the stream when the child exits
/// instead of waiting forever (Python's most famous hang). Wrap an end in `Shared` to hand
/// the same end to many children, for example many producers writing to one receiver:
///
/// ```swift
/// struct Producer: ProcessTarget {
///     let results: Shared<SendingConnection<Int>>
///     var number: Int
///     func run() throws { try results.handle.send(number * number) }
/// }
/// let (receiver, sender) = try Connection<Int>.oneWayPair()
/// let children = (1...4).map { ChildProcess(Producer(results: Shared(sender), number: $0)) }
/// for child in children { try child.start() }
/// sender.close()   // this process's copy: the receiver sees the end once every child is done
/// ```
///
/// Whoever holds a copy keeps the other end from seeing the end of the stream: close the
/// copies you do not use, as in Python. Handles that are shared by nature (queues, locks,
/// shared memory) travel as copies without this wrapper.
public struct Shared<Handle: Codable & Sendable>: Codable, Sendable {
    /// The handle: in the sender, the original; in a receiver, its own copy.
    public let handle: Handle

    /// Wraps `handle` so that it is copied, not moved, into the processes it is sent to.
    public init(_ handle: Handle) { self.handle = handle }

    /// Encodes a copy of the handle; the original stays open here.
    /// - Throws: `EncodingError` if `Handle` is not one of the library's handles.
    public func encode(to encoder: any Encoder) throws {
        guard let copyable = handle as? any CopyEncodable else {
            throw EncodingError.invalidValue(
                handle,
                .init(
                    codingPath: encoder.codingPath,
                    debugDescription: "\(Handle.self) is not a handle of swift-multiprocessing that can be shared"))
        }
        try copyable.encodeCopy(to: encoder)
    }

    /// Decodes the copy that came with a message.
    public init(from decoder: any Decoder) throws { handle = try Handle(from: decoder) }
}

/// A handle that can encode a copy of itself instead of moving (see ``Shared``).
protocol CopyEncodable {
    func encodeCopy(to encoder: any Encoder) throws
}
