import Synchronization

/// The results of a streaming ``ProcessPool`` call (``ProcessPool/mapStream(_:_:chunkSize:timeout:)-(_,Inputs,_,_)``,
/// ``ProcessPool/mapUnordered(_:_:chunkSize:timeout:)-(_,Inputs,_,_)``), as they come.
///
/// The stream holds back the pool: while results wait here unread, no more inputs are
/// taken, so a slow reader keeps memory bounded. Iterate it once. Cancelling the task that
/// iterates it, or dropping it, stops the call and kills the workers running its items.
///
/// ```swift
/// for try await line in pool.mapStream(Render(), pages) {
///     print(line)
/// }
/// ```
public struct PoolStream<Element: Sendable>: AsyncSequence, Sendable {
    /// The failure type of the stream: a ``ProcessPoolError`` or `CancellationError`.
    public typealias Failure = any Error

    private let buffer: PoolStreamBuffer<Element>
    /// Ends the call when the last copy of the stream and its iterators is gone.
    private let owner: Owner

    init(capacity: Int, produce: @escaping @Sendable (PoolStreamBuffer<Element>) async throws -> Void) {
        let buffer = PoolStreamBuffer<Element>(capacity: capacity)
        self.buffer = buffer
        owner = Owner(buffer)
        buffer.start(produce)
    }

    /// Makes the iterator (one per stream).
    public func makeAsyncIterator() -> Iterator { Iterator(buffer: buffer, owner: owner) }

    /// Reads the results in turn.
    public struct Iterator: AsyncIteratorProtocol {
        let buffer: PoolStreamBuffer<Element>
        let owner: Owner

        /// The next result; `nil` at the end.
        /// - Throws: the failure of the item at this place (``ProcessPoolError``), or
        ///   `CancellationError` when the reading task is cancelled.
        public mutating func next() async throws -> Element? { try await buffer.next() }
    }

    /// Cancels the call when released.
    final class Owner: Sendable {
        let buffer: PoolStreamBuffer<Element>
        init(_ buffer: PoolStreamBuffer<Element>) { self.buffer = buffer }
        deinit { buffer.cancel() }
    }
}

/// A bounded hand-off from the task that runs a streaming call to the task that reads it.
final class PoolStreamBuffer<Element: Sendable>: Sendable {
    private let capacity: Int
    private let state = Mutex(State())

    private struct State {
        var elements: [Element] = []
        var head = 0
        /// Set once the producer is done: `nil` error for a clean end.
        var end: (any Error)?? = nil
        var reader: CheckedContinuation<Element?, any Error>?
        var writer: CheckedContinuation<Void, any Error>?
        var cancelled = false
        var producer: Task<Void, Never>?

        var count: Int { elements.count - head }

        mutating func pop() -> Element {
            let element = elements[head]
            head += 1
            if head > 64 && head * 2 > elements.count {
                elements.removeFirst(head)
                head = 0
            }
            return element
        }
    }

    private enum PutAction {
        case deliver(CheckedContinuation<Element?, any Error>)
        case done
        case cancelled
        case wait
    }

    private enum NextAction {
        case element(Element, CheckedContinuation<Void, any Error>?)
        case end((any Error)?)
        case wait
    }

    init(capacity: Int) { self.capacity = max(1, capacity) }

    func start(_ produce: @escaping @Sendable (PoolStreamBuffer<Element>) async throws -> Void) {
        let task = Task { [self] in
            do {
                try await produce(self)
                finish(nil)
            } catch {
                finish(error)
            }
        }
        let cancelled = state.withLock { state in
            state.producer = task
            return state.cancelled
        }
        if cancelled { task.cancel() }
    }

    /// Adds a result; waits while the buffer is full. Throws `CancellationError` once the
    /// reader has gone.
    func put(_ element: Element) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let action = state.withLock { state -> PutAction in
                if state.cancelled { return .cancelled }
                if let reader = state.reader {
                    state.reader = nil
                    return .deliver(reader)
                }
                state.elements.append(element)
                if state.count < capacity { return .done }
                state.writer = continuation
                return .wait
            }
            switch action {
            case .deliver(let reader):
                reader.resume(returning: element)
                continuation.resume()
            case .done: continuation.resume()
            case .cancelled: continuation.resume(throwing: CancellationError())
            case .wait: break
            }
        }
    }

    /// Ends the stream, with `error` (a failure) or cleanly (`nil`).
    func finish(_ error: (any Error)?) {
        let reader = state.withLock { state -> CheckedContinuation<Element?, any Error>? in
            if case .none = state.end { state.end = .some(error) }
            defer { state.reader = nil }
            return state.count == 0 ? state.reader : nil
        }
        if let error { reader?.resume(throwing: error) } else { reader?.resume(returning: nil) }
    }

    /// The next element, waiting for it; `nil` at the end.
    func next() async throws -> Element? {
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Element?, any Error>) in
                let action = state.withLock { state -> NextAction in
                    if state.count > 0 {
                        let element = state.pop()
                        let writer = state.writer
                        state.writer = nil
                        return .element(element, writer)
                    }
                    if state.cancelled { return .end(CancellationError()) }
                    if case .some(let error) = state.end {
                        // Reported once; later calls see a clean end.
                        state.end = .some(nil)
                        return .end(error)
                    }
                    state.reader = continuation
                    return .wait
                }
                switch action {
                case .element(let element, let writer):
                    writer?.resume()
                    continuation.resume(returning: element)
                case .end(let error?): continuation.resume(throwing: error)
                case .end(nil): continuation.resume(returning: nil)
                case .wait: break
                }
            }
        } onCancel: {
            cancel()
        }
    }

    /// Stops the call: the producer is cancelled, a waiting reader or writer resumes.
    func cancel() {
        let (producer, reader, writer) = state.withLock { state in
            state.cancelled = true
            defer {
                state.reader = nil
                state.writer = nil
            }
            return (state.producer, state.reader, state.writer)
        }
        producer?.cancel()
        reader?.resume(throwing: CancellationError())
        writer?.resume(throwing: CancellationError())
    }
}
