/// A ``Queue`` that also counts the items not yet processed: Python's
/// `multiprocessing.JoinableQueue`.
///
/// Every `put` adds a task; a consumer calls ``taskDone()`` when it has finished with an item
/// it got; `join()` waits until every item put has been marked done.
///
/// ```swift
/// struct Worker: ProcessTarget {
///     let jobs: JoinableQueue<String>
///     func run() throws {
///         while let job = try jobs.get(timeout: .seconds(1)) {
///             print("done:", job)
///             try jobs.taskDone()
///         }
///     }
/// }
///
/// let jobs = try JoinableQueue<String>()
/// for name in ["a", "b", "c"] { try jobs.put(name) }
/// let worker = ChildProcess(Worker(jobs: jobs))
/// try worker.start()
/// try jobs.join()          // every job processed
/// ```
///
/// The count lives in the queue's shared memory, beside the items: a task counter that only
/// grows, compared with the number of items ever put, each changed by one atomic operation,
/// so a process killed anywhere cannot leave the count off by one.
public final class JoinableQueue<Element: Codable & Sendable>: Sendable, Codable {
    /// The queue itself: every ``Queue`` call works on it (a function that takes a ``Queue``
    /// can be given this one).
    public let queue: Queue<Element>

    private var ring: QueueRing { queue.ring }

    /// A new, empty queue; `maxSize` and `capacity` as for ``Queue/init(maxSize:capacity:)``.
    public init(maxSize: Int? = nil, capacity: Int = Queue<Element>.defaultCapacity) throws {
        queue = try Queue(maxSize: maxSize, capacity: capacity)
    }

    /// Attaches to the queue that came with a message.
    public init(from decoder: any Decoder) throws {
        queue = try Queue(from: decoder)
    }

    /// Sends a copy of the queue to another process; only the library's own encoder can.
    public func encode(to encoder: any Encoder) throws {
        try queue.encode(to: encoder)
    }

    // MARK: Tasks

    /// Items put and not yet marked done (read without a lock: it may change at once).
    public var unfinishedTasks: Int { ring.unfinishedTasks }

    /// Marks one item got from the queue as processed; wakes the joiners once none is left.
    ///
    /// - Throws: ``QueueError/taskDoneTooManyTimes`` if every item put was marked done
    ///   already (nothing changes).
    public func taskDone() throws(QueueError) {
        guard ring.taskDone() else { throw .taskDoneTooManyTimes }
    }

    /// Waits until every item put has been marked done.
    public func join() {
        _ = ring.join(deadline: nil, check: {})
    }

    /// Waits at most `timeout` (zero or negative: not at all) until every item put has been
    /// marked done.
    ///
    /// - Returns: `false` if the time ran out first.
    public func join(timeout: Duration) -> Bool {
        ring.join(deadline: Optional(timeout).deadline, check: {})
    }

    /// Waits until every item put has been marked done; the task suspends meanwhile.
    ///
    /// - Throws: `CancellationError` if the task is cancelled while waiting.
    public func join() async throws {
        _ = try await join(timeout: nil)
    }

    /// Waits at most `timeout` (`nil`: as long as it takes) until every item put has been
    /// marked done; the task suspends meanwhile.
    ///
    /// - Returns: `false` if the time ran out first.
    /// - Throws: `CancellationError` if the task is cancelled while waiting.
    public func join(timeout: Duration?) async throws -> Bool {
        if Task.isCancelled { throw CancellationError() }
        if ring.unfinishedTasks == 0 { return true }
        if let timeout, timeout <= .zero { return false }
        let deadline = timeout.deadline
        return try await waitOnOwnThread { [ring] cancellation in
            try ring.join(deadline: deadline, check: cancellation.check)
        }
    }

    // MARK: The queue's calls

    /// The most items the queue holds, or `nil` if only its bytes limit it.
    public var maxSize: Int? { queue.maxSize }
    /// The bytes of its ring.
    public var capacity: Int { queue.capacity }
    /// How many items are in the queue now (approximate: see ``Queue/count``).
    public var count: Int { queue.count }
    /// Whether the queue holds no item now (approximate).
    public var isEmpty: Bool { queue.isEmpty }
    /// Whether a `put` of a small item would wait now (approximate).
    public var isFull: Bool { queue.isFull }
    /// Whether the queue was closed, in any process.
    public var isClosed: Bool { queue.isClosed }

    /// Puts `item` at the end, waiting as long as the queue is full: `Queue/put(_:)`.
    public func put(_ item: Element) throws { try queue.put(item) }

    /// Puts `item`, waiting at most `timeout`; `false` if nothing was put:
    /// `Queue/put(_:timeout:)`.
    public func put(_ item: Element, timeout: Duration) throws -> Bool { try queue.put(item, timeout: timeout) }

    /// Puts `item`; the task suspends while the queue is full: `Queue.put(_:) async`.
    public func put(_ item: Element) async throws { try await queue.put(item) }

    /// Puts `item`, waiting at most `timeout`; the task suspends meanwhile.
    public func put(_ item: Element, timeout: Duration?) async throws -> Bool {
        try await queue.put(item, timeout: timeout)
    }

    /// Takes the first item, waiting as long as the queue is empty: `Queue/get()`.
    public func get() throws -> Element { try queue.get() }

    /// Takes the first item, waiting at most `timeout`; `nil` if nothing was taken.
    public func get(timeout: Duration) throws -> Element? { try queue.get(timeout: timeout) }

    /// Takes the first item; the task suspends while the queue is empty.
    public func get() async throws -> Element { try await queue.get() }

    /// Takes the first item, waiting at most `timeout`; the task suspends meanwhile.
    public func get(timeout: Duration?) async throws -> Element? { try await queue.get(timeout: timeout) }

    /// Closes the queue for every process: ``Queue/close()``.
    public func close() { queue.close() }
}
