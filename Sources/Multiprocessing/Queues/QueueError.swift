/// Why a queue refused a call.
public enum QueueError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The queue was closed (``Queue/close()``): no more items may be put, and every item
    /// put before has been taken.
    case closed
    /// ``JoinableQueue/taskDone()`` was called more times than items were put.
    case taskDoneTooManyTimes

    /// A sentence saying what happened.
    public var description: String {
        switch self {
        case .closed:
            return "the queue is closed"
        case .taskDoneTooManyTimes:
            return "taskDone() was called more times than items were put"
        }
    }
}
