/// The blocking forms: the same operations for threads that are not the cooperative pool's
/// (a worker's own thread, `main` before any task). They block the calling thread until the
/// engine thread completes the operation; never call them from a task.
extension RankChannel {
    /// Sends the elements from the array's own storage, blocking until MPI is done with them.
    public func sendElements<Element: BitwiseCopyable>(_ elements: [Element]) throws {
        _ = try sendPayloadBlocking(SendPayload(elements), deadline: nil)
    }

    /// Sends the elements, blocking at most `timeout`; false if it timed out.
    public func sendElements<Element: BitwiseCopyable>(_ elements: [Element], timeout: Duration) throws -> Bool {
        try sendPayloadBlocking(SendPayload(elements), deadline: .now + timeout)
    }

    /// Sends raw bytes, blocking.
    public func sendBytes(_ bytes: [UInt8]) throws {
        try sendElements(bytes)
    }

    /// Sends raw bytes, blocking at most `timeout`; false if it timed out.
    public func sendBytes(_ bytes: [UInt8], timeout: Duration) throws -> Bool {
        try sendElements(bytes, timeout: timeout)
    }

    /// Sends a value on the library's binary wire, blocking; one-machine handles are refused.
    public func send<Value: Encodable>(_ value: Value) throws {
        try sendElements(try RankWire.encode(value))
    }

    /// Sends a value, blocking at most `timeout`; false if it timed out.
    public func send<Value: Encodable>(_ value: Value, timeout: Duration) throws -> Bool {
        try sendElements(try RankWire.encode(value), timeout: timeout)
    }

    /// Receives the next message as an array (into the new array's storage), blocking.
    public func receiveElements<Element: BitwiseCopyable>(of type: Element.Type) throws -> [Element] {
        try receiveElementsBlocking(of: type, deadline: nil)!
    }

    /// Receives the next message as an array, blocking at most `timeout`; nil if none came.
    public func receiveElements<Element: BitwiseCopyable>(of type: Element.Type, timeout: Duration) throws
        -> [Element]?
    {
        try receiveElementsBlocking(of: type, deadline: .now + timeout)
    }

    /// Receives the next message's bytes, blocking.
    public func receiveBytes() throws -> [UInt8] {
        try receiveElements(of: UInt8.self)
    }

    /// Receives the next message's bytes, blocking at most `timeout`; nil if none came.
    public func receiveBytes(timeout: Duration) throws -> [UInt8]? {
        try receiveElements(of: UInt8.self, timeout: timeout)
    }

    /// Receives the next message as a value of `type`, blocking.
    public func receive<Value: Decodable>(_ type: Value.Type) throws -> Value {
        try RankWire.decode(type, from: try receiveBytes())
    }

    /// Receives the next message as a value of `type`, blocking at most `timeout`; nil if
    /// none came.
    public func receive<Value: Decodable>(_ type: Value.Type, timeout: Duration) throws -> Value? {
        guard let bytes = try receiveBytes(timeout: timeout) else { return nil }
        return try RankWire.decode(type, from: bytes)
    }

    private func sendPayloadBlocking(_ payload: SendPayload, deadline: ContinuousClock.Instant?) throws -> Bool {
        let sent = try engine.sendBlocking(payload, to: peer, tag: Int32(tag), deadline: deadline)
        if sent { counter.add() }
        return sent
    }

    private func receiveElementsBlocking<Element: BitwiseCopyable>(
        of type: Element.Type, deadline: ContinuousClock.Instant?
    ) throws -> [Element]? {
        let sink = ElementSink<Element>()
        guard try engine.receiveBlocking(from: peer, tag: Int32(tag), into: sink, deadline: deadline) else {
            return nil
        }
        return sink.elements
    }
}
