import SystemPackage

extension CodingUserInfoKey {
    /// Where a handle (a connection end, later a queue or a lock) being encoded puts its
    /// descriptor, to travel beside the message as SCM_RIGHTS.
    static let descriptorOutbox = CodingUserInfoKey(rawValue: "swift-multiprocessing.descriptor-outbox")!
    /// Where a handle being decoded finds the descriptors that came with the message.
    static let descriptorInbox = CodingUserInfoKey(rawValue: "swift-multiprocessing.descriptor-inbox")!
}

/// Collects the descriptors of the handles inside a value while it is encoded.
///
/// A handle encodes only an index into this list; the descriptors themselves go out with
/// the message. Handles that *move* (a connection end: the receiving process takes it) are
/// listed so the sender can close its own copy once the message is on its way, which is
/// what makes end-of-stream work when the peer dies.
final class DescriptorOutbox {
    private(set) var descriptors: [FileDescriptor] = []
    private(set) var moved: [MessageStream] = []

    /// Adds a descriptor and returns its index in the message.
    func add(_ descriptor: FileDescriptor, moving stream: MessageStream? = nil) throws -> Int {
        guard descriptors.count < 253 else {
            throw WireError.unencodable("a message can carry at most 253 handles", codingPath: "")
        }
        descriptors.append(descriptor)
        if let stream { moved.append(stream) }
        return descriptors.count - 1
    }

    /// Closes the sender's copies of the handles that moved.
    func closeMoved() {
        for stream in moved { stream.close() }
    }

    /// Empties the outbox for the next message, returning the streams that moved with the
    /// last one (to close once it is sent).
    func reset() -> [MessageStream] {
        if descriptors.isEmpty && moved.isEmpty { return [] }
        let streams = moved
        descriptors.removeAll(keepingCapacity: true)
        moved.removeAll(keepingCapacity: true)
        return streams
    }
}

/// Hands the descriptors that came with a message to the handles decoded from it.
final class DescriptorInbox {
    private var descriptors: [FileDescriptor?]

    init(_ descriptors: [FileDescriptor]) { self.descriptors = descriptors }

    /// Takes the descriptor at `index`; each can be taken once.
    func take(_ index: Int) throws -> FileDescriptor {
        guard descriptors.indices.contains(index), let descriptor = descriptors[index] else {
            throw WireError.invalidData("the message has no descriptor number \(index) for this handle", codingPath: "")
        }
        descriptors[index] = nil
        return descriptor
    }

    /// Closes what no handle took (a malformed message, or a decode that failed halfway),
    /// so a bad message never leaks descriptors.
    func closeUnclaimed() {
        for case let descriptor? in descriptors { descriptor.closeIgnoringErrors() }
        descriptors = []
    }
}

extension MessageStream {
    /// Encodes `value` into a frame (header space first) and collects its handles.
    static func encodeFrame<Value: Encodable>(_ value: Value) throws -> (frame: [UInt8], outbox: DescriptorOutbox) {
        let outbox = DescriptorOutbox()
        var frame = [UInt8](repeating: 0, count: FrameHeader.size)
        try BinaryEncoder(userInfo: [.descriptorOutbox: outbox]).encode(value, appendingTo: &frame)
        return (frame, outbox)
    }

    /// Decodes a received frame, giving its descriptors to the handles inside; whatever is
    /// left unclaimed is closed.
    static func decode<Value: Decodable>(_ type: Value.Type, from frame: Frame) throws -> Value {
        // Most messages carry no handles: then no inbox (and no dictionary) is made.
        if frame.descriptors.isEmpty { return try BinaryDecoder().decode(type, from: frame.payload) }
        let inbox = DescriptorInbox(frame.descriptors)
        defer { inbox.closeUnclaimed() }
        return try BinaryDecoder(userInfo: [.descriptorInbox: inbox]).decode(type, from: frame.payload)
    }

    /// Sends one value, with the descriptors of the handles it contains. Connection ends
    /// inside it moved to the receiver: this process's copies are closed once it is sent.
    func sendValue<Value: Encodable>(_ value: Value) throws {
        for stream in try sendEncoded(value) ?? [] { stream.close() }
    }

    /// Sends one value if it can start before `deadline`; `false` means nothing was sent.
    func sendValue<Value: Encodable>(_ value: Value, startBy deadline: Deadline) throws -> Bool {
        guard let moved = try sendEncoded(value, startBy: deadline) else { return false }
        for stream in moved { stream.close() }
        return true
    }

    /// Sends one value without blocking a thread.
    func sendValue<Value: Encodable>(_ value: Value) async throws {
        let (frame, outbox) = try Self.encodeFrame(value)
        try await send(frame: frame, descriptors: outbox.descriptors)
        outbox.closeMoved()
    }
}
