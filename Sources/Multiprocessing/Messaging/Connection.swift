import SystemPackage

/// The default largest message a connection accepts: 256 MiB. A frame that announces more
/// is refused with ``WireError/oversized(size:limit:)`` and skipped, so one bad message
/// cannot make a receiver allocate gigabytes.
public let defaultMaximumMessageSize = 256 * 1024 * 1024

/// One end of a two-way pipe between processes, carrying messages of type `Message`
/// (Python's `Connection` from `Pipe()`).
///
/// Make a pair with ``pair(maximumMessageSize:)``, keep one end and store the other in a
/// ``ProcessTarget``'s properties: it travels to the child with the target, and works there.
///
/// ```swift
/// struct Echo: ProcessTarget {
///     let connection: Connection<String>
///     func run() throws {
///         while let line = try? connection.receive() { try connection.send(line.uppercased()) }
///     }
/// }
/// let (mine, theirs) = try Connection<String>.pair()
/// let child = ChildProcess(Echo(connection: theirs))
/// try child.start()            // `theirs` moves into the child; this process's copy is closed
/// try mine.send("hello")
/// print(try mine.receive())    // "HELLO"
/// ```
///
/// - A connection end given to a child *moves*: once the child has started, this process's
///   copy is closed. That is what lets `receive()` throw ``ConnectionError/endOfStream``
///   when the child exits instead of waiting forever (Python's famous hang).
/// - Messages keep their boundaries; an empty message is a message; two threads receiving
///   on one end each get whole messages.
/// - Timed waits return `nil` (or `false`) when the time runs out; errors are thrown only
///   for what went wrong (the peer went away, a malformed message, this end closed).
public final class Connection<Message: Codable>: Sendable, Codable {
    let stream: MessageStream

    init(stream: MessageStream) { self.stream = stream }

    /// Makes a connected pair of two-way ends (Python's `Pipe()`).
    public static func pair(maximumMessageSize: Int = defaultMaximumMessageSize) throws -> (Connection, Connection) {
        let (first, second) = try makeStreamPair(maximumMessageSize: maximumMessageSize)
        return (Connection(stream: first), Connection(stream: second))
    }

    /// Makes a one-way pair (Python's `Pipe(duplex=False)`): messages go from `sender` to
    /// `receiver`. Using an end in the wrong direction does not compile.
    public static func oneWayPair(
        maximumMessageSize: Int = defaultMaximumMessageSize
    ) throws -> (receiver: ReceivingConnection<Message>, sender: SendingConnection<Message>) {
        let (first, second) = try makeStreamPair(maximumMessageSize: maximumMessageSize)
        return (ReceivingConnection(stream: first), SendingConnection(stream: second))
    }

    /// Sends a message, waiting while the pipe is full.
    /// - Throws: ``ConnectionError/peerGone`` when the other end is closed or its process has
    ///   exited; ``WireError`` when the message cannot be encoded or is too large (nothing
    ///   is sent, and the connection stays usable).
    public func send(_ message: Message) throws { try stream.sendValue(message) }
    /// Sends a message without blocking a thread.
    public func send(_ message: Message) async throws { try await stream.sendValue(message) }
    /// Sends a message if the receiver makes room for it within `timeout`; returns `false`,
    /// having sent nothing, if it does not (a full pipe: the receiver is slow, stopped or
    /// stuck). Zero or negative tries once. Once a message has started to go out it is sent
    /// whole (a message is never cut), so one larger than the free room can take longer.
    public func send(_ message: Message, timeout: Duration) throws -> Bool {
        try stream.sendValue(message, startBy: ContinuousClock.now.advanced(by: timeout))
    }
    /// Sends raw bytes as one message (Python's `send_bytes`).
    public func sendBytes(_ bytes: some Collection<UInt8>) throws { try stream.sendBytes(bytes) }

    /// Receives the next message, waiting as long as it takes.
    /// - Throws: ``ConnectionError/endOfStream`` once the other end is closed and every
    ///   message it sent has been received; ``WireError`` for a malformed message.
    public func receive() throws -> Message { try stream.receiveValue(deadline: nil)! }
    /// Receives the next message, or returns `nil` if none arrives within `timeout`.
    public func receive(timeout: Duration) throws -> Message? {
        try stream.receiveValue(deadline: Optional(timeout).deadline)
    }
    /// Receives the next message without blocking a thread.
    public func receive() async throws -> Message { try await stream.receiveValue(deadline: nil)! }
    /// Receives the next message without blocking a thread, or `nil` after `timeout`.
    public func receive(timeout: Duration) async throws -> Message? {
        try await stream.receiveValue(deadline: Optional(timeout).deadline)
    }
    /// Receives the next message as raw bytes (Python's `recv_bytes`).
    public func receiveBytes() throws -> [UInt8] { try stream.receivePayload(deadline: nil)! }
    /// Receives the next message as raw bytes, or `nil` after `timeout`.
    public func receiveBytes(timeout: Duration) throws -> [UInt8]? {
        try stream.receivePayload(deadline: Optional(timeout).deadline)
    }
    /// Receives the next message into `buffer` and returns its length (Python's
    /// `recv_bytes_into`). A message longer than the buffer throws
    /// ``ConnectionError/bufferTooSmall(needed:message:)``, which carries the message.
    public func receiveBytes(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        try stream.receiveBytes(into: buffer)
    }
    /// Whether a message can be received without waiting, waiting up to `timeout` for one.
    /// Zero or negative returns at once. Also `true` when the other end has closed (the
    /// next receive then throws).
    public func poll(timeout: Duration = .zero) throws -> Bool { try stream.poll(deadline: Optional(timeout).deadline) }

    /// Closes this end. Closing twice is harmless.
    public func close() { stream.close() }
    /// Whether this end is closed (by ``close()``, or because it moved to a child).
    public var isClosed: Bool { stream.isClosed }

    /// Encodes this end for another process: only the library's own encoder can (its
    /// descriptor travels beside the message), and the end then moves to the receiver.
    public func encode(to encoder: any Encoder) throws { try stream.encodeHandle(kind: .duplex, to: encoder) }
    /// Decodes an end received from another process, taking the descriptor that came with
    /// the message. Decoding an end of another kind (a sending end as a receiving one) throws.
    public init(from decoder: any Decoder) throws {
        stream = try MessageStream.decodeHandle(kind: .duplex, from: decoder)
    }
}

/// The receiving end of a one-way pipe (see ``Connection/oneWayPair(maximumMessageSize:)``).
public final class ReceivingConnection<Message: Codable>: Sendable, Codable {
    let stream: MessageStream
    init(stream: MessageStream) { self.stream = stream }

    /// Receives the next message; see `Connection.receive()`.
    public func receive() throws -> Message { try stream.receiveValue(deadline: nil)! }
    /// Receives the next message, or `nil` after `timeout`.
    public func receive(timeout: Duration) throws -> Message? {
        try stream.receiveValue(deadline: Optional(timeout).deadline)
    }
    /// Receives the next message without blocking a thread.
    public func receive() async throws -> Message { try await stream.receiveValue(deadline: nil)! }
    /// Receives the next message without blocking a thread, or `nil` after `timeout`.
    public func receive(timeout: Duration) async throws -> Message? {
        try await stream.receiveValue(deadline: Optional(timeout).deadline)
    }
    /// Receives the next message as raw bytes.
    public func receiveBytes() throws -> [UInt8] { try stream.receivePayload(deadline: nil)! }
    /// Receives the next message as raw bytes, or `nil` after `timeout`.
    public func receiveBytes(timeout: Duration) throws -> [UInt8]? {
        try stream.receivePayload(deadline: Optional(timeout).deadline)
    }
    /// Receives the next message into `buffer`; see ``Connection/receiveBytes(into:)``.
    public func receiveBytes(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        try stream.receiveBytes(into: buffer)
    }
    /// Whether a message can be received without waiting, waiting up to `timeout`.
    public func poll(timeout: Duration = .zero) throws -> Bool { try stream.poll(deadline: Optional(timeout).deadline) }
    /// Closes this end.
    public func close() { stream.close() }
    /// Whether this end is closed.
    public var isClosed: Bool { stream.isClosed }

    /// Encodes this end for another process: only the library's own encoder can (its
    /// descriptor travels beside the message), and the end then moves to the receiver.
    public func encode(to encoder: any Encoder) throws { try stream.encodeHandle(kind: .receiving, to: encoder) }
    /// Decodes an end received from another process, taking the descriptor that came with
    /// the message. Decoding an end of another kind (a sending end as a receiving one) throws.
    public init(from decoder: any Decoder) throws {
        stream = try MessageStream.decodeHandle(kind: .receiving, from: decoder)
    }
}

/// The sending end of a one-way pipe (see ``Connection/oneWayPair(maximumMessageSize:)``).
public final class SendingConnection<Message: Codable>: Sendable, Codable {
    let stream: MessageStream
    init(stream: MessageStream) { self.stream = stream }

    /// Sends a message; see `Connection.send(_:)`.
    public func send(_ message: Message) throws { try stream.sendValue(message) }
    /// Sends a message without blocking a thread.
    public func send(_ message: Message) async throws { try await stream.sendValue(message) }
    /// Sends a message if the receiver makes room for it within `timeout`; returns `false`,
    /// having sent nothing, if it does not (a full pipe: the receiver is slow, stopped or
    /// stuck). Zero or negative tries once. Once a message has started to go out it is sent
    /// whole (a message is never cut), so one larger than the free room can take longer.
    public func send(_ message: Message, timeout: Duration) throws -> Bool {
        try stream.sendValue(message, startBy: ContinuousClock.now.advanced(by: timeout))
    }
    /// Sends raw bytes as one message.
    public func sendBytes(_ bytes: some Collection<UInt8>) throws { try stream.sendBytes(bytes) }
    /// Closes this end: once every copy is closed, the receiver gets end-of-stream.
    public func close() { stream.close() }
    /// Whether this end is closed.
    public var isClosed: Bool { stream.isClosed }

    /// Encodes this end for another process: only the library's own encoder can (its
    /// descriptor travels beside the message), and the end then moves to the receiver.
    public func encode(to encoder: any Encoder) throws { try stream.encodeHandle(kind: .sending, to: encoder) }
    /// Decodes an end received from another process, taking the descriptor that came with
    /// the message. Decoding an end of another kind (a sending end as a receiving one) throws.
    public init(from decoder: any Decoder) throws {
        stream = try MessageStream.decodeHandle(kind: .sending, from: decoder)
    }
}

// MARK: - Shared by the three ends

func makeStreamPair(maximumMessageSize: Int) throws -> (MessageStream, MessageStream) {
    precondition(maximumMessageSize >= 0, "maximumMessageSize must not be negative")
    do {
        let (first, second) = try makeSocketPair()
        return (
            MessageStream(descriptor: first, maximumMessageSize: maximumMessageSize),
            MessageStream(descriptor: second, maximumMessageSize: maximumMessageSize)
        )
    } catch {
        throw ConnectionError.system(error, during: "creating a pipe (socketpair)")
    }
}

/// Which kind of end a handle on the wire is; decoding checks it, so a receiving end can
/// never turn into a sending one on the other side.
enum ConnectionKind: UInt8, Codable {
    case duplex, receiving, sending
}

private struct ConnectionHandle: Codable {
    var kind: ConnectionKind
    var descriptor: Int
    var maximumMessageSize: Int
}

extension MessageStream {
    /// The types decoding a connection's handle goes through (see ``ForkServerPrepared``).
    static var handleTypes: [any Decodable.Type] { [ConnectionHandle.self, ConnectionKind.self] }
}

extension Connection: CopyEncodable {
    func encodeCopy(to encoder: any Encoder) throws {
        try stream.encodeHandle(kind: .duplex, to: encoder, moving: false)
    }
}
extension ReceivingConnection: CopyEncodable {
    func encodeCopy(to encoder: any Encoder) throws {
        try stream.encodeHandle(kind: .receiving, to: encoder, moving: false)
    }
}
extension SendingConnection: CopyEncodable {
    func encodeCopy(to encoder: any Encoder) throws {
        try stream.encodeHandle(kind: .sending, to: encoder, moving: false)
    }
}

extension MessageStream {
    func encodeHandle(kind: ConnectionKind, to encoder: any Encoder, moving: Bool = true) throws {
        guard let outbox = encoder.userInfo[.descriptorOutbox] as? DescriptorOutbox else {
            throw EncodingError.invalidValue(
                self,
                .init(
                    codingPath: encoder.codingPath,
                    debugDescription:
                        "a connection end can only be encoded by swift-multiprocessing, to go to another process"))
        }
        if isClosed { throw ConnectionError.closed }
        let index = try outbox.add(rawDescriptor, moving: moving ? self : nil)
        var container = encoder.singleValueContainer()
        try container.encode(ConnectionHandle(kind: kind, descriptor: index, maximumMessageSize: maximumMessageSize))
    }

    static func decodeHandle(kind: ConnectionKind, from decoder: any Decoder) throws -> MessageStream {
        guard let inbox = decoder.userInfo[.descriptorInbox] as? DescriptorInbox else {
            throw DecodingError.dataCorrupted(
                .init(
                    codingPath: decoder.codingPath,
                    debugDescription: "a connection end can only be decoded by swift-multiprocessing"))
        }
        let handle = try decoder.singleValueContainer().decode(ConnectionHandle.self)
        guard handle.kind == kind else {
            throw WireError.typeMismatch(
                expected: "a \(kind) connection end", found: "a \(handle.kind) end",
                codingPath: decoder.codingPath.map(\.stringValue).joined(separator: "."))
        }
        return MessageStream(
            descriptor: try inbox.take(handle.descriptor), maximumMessageSize: handle.maximumMessageSize)
    }

    func receiveValue<Value: Decodable>(deadline: Deadline?) throws -> Value? {
        guard let frame = try receive(deadline: deadline) else { return nil }
        defer { recycle(frame.payload) }
        return try Self.decode(Value.self, from: frame)
    }

    func receiveValue<Value: Decodable>(deadline: Deadline?) async throws -> Value? {
        guard let frame = try await receive(deadline: deadline) else { return nil }
        defer { recycle(frame.payload) }
        return try Self.decode(Value.self, from: frame)
    }

    func sendBytes(_ bytes: some Collection<UInt8>) throws {
        let sent: Void? = try bytes.withContiguousStorageIfAvailable { buffer in
            try send(payload: UnsafeRawBufferPointer(buffer))
        }
        if sent == nil {
            let copy = Array(bytes)
            try copy.withUnsafeBytes { try send(payload: $0) }
        }
    }

    /// The next message's bytes; descriptors sent with it are closed (raw bytes carry no handles).
    func receivePayload(deadline: Deadline?) throws -> [UInt8]? {
        guard let frame = try receive(deadline: deadline) else { return nil }
        for descriptor in frame.descriptors { descriptor.closeIgnoringErrors() }
        return frame.payload
    }

    func receiveBytes(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        let payload = try receivePayload(deadline: nil)!
        guard payload.count <= buffer.count else {
            throw ConnectionError.bufferTooSmall(needed: payload.count, message: payload)
        }
        payload.withUnsafeBytes { buffer.copyMemory(from: $0) }
        return payload.count
    }
}
