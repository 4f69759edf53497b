import SystemPackage

// Typed messages over a MessageStream: values are encoded with the binary codec, and the
// handles inside them travel as descriptors beside the bytes.

extension MessageStream: MovingHandle {}

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
    /// inside it move to the receiver: this process's copies are closed once they are sent.
    func sendValue<Value: Encodable>(_ value: Value) throws {
        _ = try sendEncoded(value)
    }

    /// Sends one value if it can start before `deadline`; `false` means nothing was sent.
    func sendValue<Value: Encodable>(_ value: Value, startBy deadline: Deadline) throws -> Bool {
        try sendEncoded(value, startBy: deadline)
    }

    /// Sends one value without blocking a thread.
    func sendValue<Value: Encodable>(_ value: Value) async throws {
        let (frame, outbox) = try Self.encodeFrame(value)
        try await send(frame: frame, descriptors: outbox.descriptors, moving: outbox.moved)
    }
}
