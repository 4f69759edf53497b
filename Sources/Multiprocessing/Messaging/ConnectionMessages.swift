/// The messages arriving on a connection, as an `AsyncSequence` that ends when the other
/// end is closed (Python's `while True: conn.recv()` until `EOFError`).
///
/// ```swift
/// for try await line in connection.messages {
///     print(line)
/// }
/// // here the other end has closed, and every message it sent has been received
/// ```
///
/// Waiting never blocks a thread. Errors other than the end of the stream (a malformed
/// message, a peer that died in the middle of one) are thrown by the loop.
public struct ConnectionMessages<Message: Codable>: AsyncSequence, Sendable {
    /// Each element is one message.
    public typealias Element = Message

    let stream: MessageStream

    /// Receives the messages one at a time.
    public struct AsyncIterator: AsyncIteratorProtocol {
        let stream: MessageStream

        /// The next message, or `nil` once the other end has closed.
        public mutating func next() async throws -> Message? {
            do {
                return try await stream.receiveValue(deadline: nil)
            } catch ConnectionError.endOfStream {
                return nil
            }
        }
    }

    /// An iterator that receives from the connection.
    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(stream: stream) }
}

extension Connection {
    /// The messages as they arrive, until the other end closes.
    public var messages: ConnectionMessages<Message> { ConnectionMessages(stream: stream) }
}

extension ReceivingConnection {
    /// The messages as they arrive, until the other end closes.
    public var messages: ConnectionMessages<Message> { ConnectionMessages(stream: stream) }
}
