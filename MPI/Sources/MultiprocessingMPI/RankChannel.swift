import Synchronization

/// A typed, two-way channel between rank 0 and the job it started on a worker rank.
///
/// Messages are raw bytes, `Codable` values on the library's binary wire, or arrays of a
/// trivial type (`[Double]`, `[Int32]`, any `BitwiseCopyable`) sent from the array's own
/// storage and received into a new array's storage. Messages arrive in the order they were
/// sent. Every wait suspends the task (the engine thread does the MPI calls), has a
/// `timeout:` form, and throws ``MPIError/rankLost(rank:silentFor:)`` if the peer dies.
///
/// A channel is a small `Sendable` value: several tasks may use it at once (each message
/// goes to one receiver, first come first served).
public struct RankChannel: Sendable {
    /// The rank at the other end.
    public let peer: Int
    /// The MPI tag of this channel's messages.
    public let tag: Int
    let engine: Engine
    let counter: SendCounter

    init(engine: Engine, peer: Int, tag: Int32) {
        self.engine = engine
        self.peer = peer
        self.tag = Int(tag)
        counter = SendCounter()
    }

    // MARK: Sending

    /// Sends the elements from the array's own storage (no copy); returns when MPI is done
    /// with them.
    public func sendElements<Element: BitwiseCopyable>(_ elements: [Element]) async throws {
        _ = try await sendPayload(SendPayload(elements), deadline: nil)
    }

    /// Sends the elements, giving up after `timeout`; false if it timed out (the peer
    /// stopped reading).
    public func sendElements<Element: BitwiseCopyable>(_ elements: [Element], timeout: Duration) async throws -> Bool {
        try await sendPayload(SendPayload(elements), deadline: .now + timeout)
    }

    /// Sends raw bytes.
    public func sendBytes(_ bytes: [UInt8]) async throws {
        try await sendElements(bytes)
    }

    /// Sends raw bytes, giving up after `timeout`; false if it timed out.
    public func sendBytes(_ bytes: [UInt8], timeout: Duration) async throws -> Bool {
        try await sendElements(bytes, timeout: timeout)
    }

    /// Sends a value on the library's binary wire. A value holding a handle that only makes
    /// sense on this machine (a `Connection` end, shared memory, a queue, a lock) is refused
    /// with ``MPIError/notSendableToAnotherRank(type:codingPath:reason:)``.
    public func send<Value: Encodable>(_ value: Value) async throws {
        try await sendElements(try RankWire.encode(value))
    }

    /// Sends a value, giving up after `timeout`; false if it timed out.
    public func send<Value: Encodable>(_ value: Value, timeout: Duration) async throws -> Bool {
        try await sendElements(try RankWire.encode(value), timeout: timeout)
    }

    private func sendPayload(_ payload: SendPayload, deadline: ContinuousClock.Instant?) async throws -> Bool {
        let sent = try await engine.send(payload, to: peer, tag: Int32(tag), deadline: deadline)
        if sent { counter.add() }
        return sent
    }

    // MARK: Receiving

    /// Receives the next message as an array, written by MPI straight into the new array's
    /// storage.
    public func receiveElements<Element: BitwiseCopyable>(of type: Element.Type) async throws -> [Element] {
        try await receiveElements(of: type, deadline: nil)!
    }

    /// Receives the next message as an array; nil if none came within `timeout`.
    public func receiveElements<Element: BitwiseCopyable>(of type: Element.Type, timeout: Duration) async throws
        -> [Element]?
    {
        try await receiveElements(of: type, deadline: .now + timeout)
    }

    /// Receives the next message's bytes.
    public func receiveBytes() async throws -> [UInt8] {
        try await receiveElements(of: UInt8.self)
    }

    /// Receives the next message's bytes; nil if none came within `timeout`.
    public func receiveBytes(timeout: Duration) async throws -> [UInt8]? {
        try await receiveElements(of: UInt8.self, timeout: timeout)
    }

    /// Receives the next message as a value of `type`.
    public func receive<Value: Decodable>(_ type: Value.Type) async throws -> Value {
        try RankWire.decode(type, from: try await receiveBytes())
    }

    /// Receives the next message as a value of `type`; nil if none came within `timeout`.
    public func receive<Value: Decodable>(_ type: Value.Type, timeout: Duration) async throws -> Value? {
        guard let bytes = try await receiveBytes(timeout: timeout) else { return nil }
        return try RankWire.decode(type, from: bytes)
    }

    private func receiveElements<Element: BitwiseCopyable>(
        of type: Element.Type, deadline: ContinuousClock.Instant?
    ) async throws -> [Element]? {
        let sink = ElementSink<Element>()
        guard try await engine.receive(from: peer, tag: Int32(tag), into: sink, deadline: deadline) else { return nil }
        return sink.elements
    }
}

/// How many messages a channel sent: a worker rank reports it when its job ends, so rank 0
/// knows when the last of them has been received.
final class SendCounter: Sendable {
    private let count = Atomic<Int>(0)
    func add() { count.add(1, ordering: .relaxed) }
    var value: Int { count.load(ordering: .relaxed) }
}
