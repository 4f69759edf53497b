/// The tags the transport keeps for itself; jobs' channels use tags from `firstFree` up.
enum ReservedTag {
    /// Rank 0's orders to a worker rank (start a job, stop) and a worker's reports (a job ended).
    static let control: Int32 = 0
    /// Empty messages that say "this rank is alive".
    static let heartbeat: Int32 = 1
    /// The first tag free for channels.
    static let firstFree: Int32 = 16
}

/// Which messages a receive takes: from one rank (or any, `source == nil`), with one tag.
struct MessageKey: Hashable, Sendable {
    var source: Int32?
    var tag: Int32
}

/// A receive's wait ended at its deadline with nothing received.
struct ReceiveTimedOut: Error {}

/// A send handed to the engine thread.
struct SendOrder: Sendable {
    var destination: Int32
    var tag: Int32
    var payload: SendPayload
    var deadline: ContinuousClock.Instant?
    var completion: Completion
}

/// A receive handed to the engine thread.
struct ReceiveOrder: Sendable {
    var id: UInt64
    var key: MessageKey
    var sink: ReceiveSink
    var deadline: ContinuousClock.Instant?
    var completion: Completion
}

/// What other threads ask of the engine thread.
enum EngineOrder: Sendable {
    case send(SendOrder)
    case receive(ReceiveOrder)
    /// A waiting receive's task was cancelled: end it, unless its message is already coming.
    case cancelReceive(id: UInt64)
    /// Receives on `key` fail with `error` once `count` messages have been received on it
    /// (the channel's job ended after sending `count`).
    case endChannel(MessageKey, afterMessages: Int, error: MPIError)
    /// Finalize MPI and end the thread.
    case shutDown(Completion)
}
