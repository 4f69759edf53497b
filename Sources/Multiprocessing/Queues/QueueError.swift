/// Why a queue refused a call.
public enum QueueError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The queue was closed (``Queue/close()``): no more items may be put, and every item
    /// put before has been taken.
    case closed
    /// The item's encoding takes `size` bytes, more than half of the queue's byte ring
    /// (`capacity` bytes): it could never be put. Nothing was put.
    case itemTooLarge(size: Int, capacity: Int)
    /// The item holds handles that travel as file descriptors (connection ends, shared
    /// memory, locks, other queues): a queue's items are bytes in shared memory and cannot
    /// carry descriptors in this version. Send such handles over a ``Connection``. Nothing
    /// was put.
    case handlesNotSupported
    /// ``JoinableQueue/taskDone()`` was called more times than items were put.
    case taskDoneTooManyTimes

    /// A sentence saying what happened.
    public var description: String {
        switch self {
        case .closed:
            return "the queue is closed"
        case .itemTooLarge(let size, let capacity):
            return "an item of \(size) bytes is too large for a queue of \(capacity) bytes "
                + "(at most half the capacity); make the queue with a larger capacity"
        case .handlesNotSupported:
            return "the item holds handles (connection ends, shared memory, locks, queues) that a queue "
                + "cannot carry yet; send them over a Connection"
        case .taskDoneTooManyTimes:
            return "taskDone() was called more times than items were put"
        }
    }
}
