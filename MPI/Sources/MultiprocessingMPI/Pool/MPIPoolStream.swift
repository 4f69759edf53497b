import Synchronization

/// The outputs of an ``MPIPool`` stream call (``MPIPool/mapStream(_:_:chunkSize:timeout:)-(_,Inputs,_,_)``,
/// ``MPIPool/mapUnordered(_:_:chunkSize:timeout:)-(_,Inputs,_,_)``, and their forms over an
/// `AsyncSequence` or with progress), as they come.
///
/// The call starts when the first output is asked for. It holds at most a bounded number of
/// outputs not yet taken: when the consumer is slower than the ranks, the call stops sending
/// inputs (and stops pulling them from their sequence) until the consumer catches up. The
/// stream ends with the first failed item's ``MPIPoolError``; dropping the iterator, or
/// cancelling the task that iterates, ends the items still running on their ranks.
public struct MPIPoolStream<Element: Sendable>: AsyncSequence, Sendable {
    private let capacity: Int
    private let produce: @Sendable (StreamBuffer<Element>) async throws -> Void

    init(capacity: Int, produce: @escaping @Sendable (StreamBuffer<Element>) async throws -> Void) {
        self.capacity = capacity
        self.produce = produce
    }

    /// An iterator that starts the call.
    public func makeAsyncIterator() -> Iterator {
        Iterator(consumer: StreamConsumer(capacity: capacity, produce: produce))
    }

    /// The stream's iterator.
    public struct Iterator: AsyncIteratorProtocol {
        let consumer: StreamConsumer<Element>

        /// The next output; `nil` at the end.
        /// - Throws: the first failed item's ``MPIPoolError``; `CancellationError`.
        public mutating func next() async throws -> Element? {
            try await consumer.buffer.pop()
        }
    }
}

/// The iterator's side: starts the producer, and cancels it when the iterator is dropped.
final class StreamConsumer<Element: Sendable>: Sendable {
    let buffer: StreamBuffer<Element>
    private let producer: Task<Void, Never>

    init(capacity: Int, produce: @escaping @Sendable (StreamBuffer<Element>) async throws -> Void) {
        let buffer = StreamBuffer<Element>(capacity: capacity)
        self.buffer = buffer
        producer = Task {
            do {
                try await produce(buffer)
                buffer.finish(throwing: nil)
            } catch {
                buffer.finish(throwing: error)
            }
        }
    }

    deinit {
        producer.cancel()
        buffer.finish(throwing: CancellationError())
    }
}

/// A bounded queue between a stream's producer (the dispatch) and its consumer.
final class StreamBuffer<Element: Sendable>: Sendable {
    private let capacity: Int
    private let state = Mutex(State())

    private struct State {
        var items: [Element] = []
        var head = 0
        var end: Result<Void, any Error>?
        var consumer: CheckedContinuation<Element?, any Error>?
        var producer: CheckedContinuation<Void, Never>?
    }

    init(capacity: Int) { self.capacity = max(1, capacity) }

    /// Adds an output; waits while `capacity` outputs are waiting to be taken.
    func push(_ element: Element) async throws {
        try Task.checkCancellation()
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let (consumer, wait) = state.withLock { state -> (CheckedContinuation<Element?, any Error>?, Bool) in
                if state.end != nil { return (nil, false) }
                if let consumer = state.consumer {
                    state.consumer = nil
                    return (consumer, false)
                }
                state.items.append(element)
                if state.items.count - state.head >= capacity {
                    state.producer = continuation
                    return (nil, true)
                }
                return (nil, false)
            }
            consumer?.resume(returning: element)
            if !wait { continuation.resume() }
        }
        try Task.checkCancellation()
    }

    /// The next output, waiting for one; `nil` at the end.
    func pop() async throws -> Element? {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Element?, any Error>) in
            let outcome = state.withLock { state -> PopOutcome<Element> in
                if state.head < state.items.count {
                    let element = state.items[state.head]
                    state.head += 1
                    if state.head == state.items.count {
                        state.items.removeAll(keepingCapacity: true)
                        state.head = 0
                    }
                    let producer = state.producer
                    state.producer = nil
                    return .value(element, producer)
                }
                switch state.end {
                case .success: return .value(nil, nil)
                case .failure(let error):
                    state.end = .success(())  // the error once, then the end
                    return .failure(error)
                case nil:
                    state.consumer = continuation
                    return .wait
                }
            }
            switch outcome {
            case .value(let element, let producer):
                producer?.resume()
                continuation.resume(returning: element)
            case .failure(let error): continuation.resume(throwing: error)
            case .wait: break
            }
        }
    }

    /// No more outputs: the consumer gets the ones left, then `error` (or the end).
    func finish(throwing error: (any Error)?) {
        let (consumer, producer) = state.withLock {
            state -> (CheckedContinuation<Element?, any Error>?, CheckedContinuation<Void, Never>?) in
            guard state.end == nil else { return (nil, nil) }
            state.end = error.map { .failure($0) } ?? .success(())
            defer {
                state.consumer = nil
                state.producer = nil
            }
            // A waiting consumer has seen no item left: it gets the end now.
            if state.consumer != nil { state.end = .success(()) }
            return (state.consumer, state.producer)
        }
        if let consumer {
            if let error { consumer.resume(throwing: error) } else { consumer.resume(returning: nil) }
        }
        producer?.resume()
    }
}

/// What a ``StreamBuffer/pop()`` found.
private enum PopOutcome<Element> {
    /// An output (or `nil`: the end), and the producer to wake now that there is room.
    case value(Element?, CheckedContinuation<Void, Never>?)
    case failure(any Error)
    case wait
}
