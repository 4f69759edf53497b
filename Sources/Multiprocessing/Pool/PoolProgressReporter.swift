import Synchronization

/// Follows the progress of ``ProcessPool`` calls: give it to a call's `progress:` parameter,
/// read its ``updates`` (an `AsyncSequence`) or have it call a handler.
///
/// ```swift
/// let reporter = PoolProgressReporter()
/// async let bar: Void = {
///     for await progress in reporter.updates { draw(progress) }
/// }()
/// let outputs = try await pool.map(Render(), pages, progress: reporter)
/// await bar   // the updates end with the call
/// ```
///
/// - **Rate-limited.** An update goes out when a call begins, at most once per ``interval``
///   while it runs (counted from the chunk results, never per item of a million-item map),
///   and always once at the end, with ``PoolProgress/isFinished`` set.
/// - **Monotonic.** Counts only grow; each update is delivered after the previous one.
/// - **Several calls.** A reporter given to calls that overlap adds them up (the total is
///   unknown if one total is). Its ``updates`` end with the final update sent when no call
///   is using it any more; a call that begins after that still reaches the handler and
///   ``latest``.
/// - The handler runs in the task that runs the call (for a stream, the task that produces
///   its results): keep it quick, and do not call the pool from it.
public final class PoolProgressReporter: Sendable {
    /// The least time between two updates while a call runs.
    public let interval: Duration
    /// The updates, for `for await`; a slow reader gets the newest (the final one is never
    /// dropped). Ends after the final update (see the type's notes on several calls).
    public let updates: AsyncStream<PoolProgress>

    private let continuation: AsyncStream<PoolProgress>.Continuation
    private let handler: (@Sendable (PoolProgress) -> Void)?
    private let state = Mutex(State())
    /// Held while an update is made and sent, so that updates of calls running in different
    /// tasks go out in order (the state lock alone would let a later count overtake an
    /// earlier one on its way out). A lock of its own: a handler may read ``latest``.
    private let delivery = Mutex(())

    private struct State {
        var started: ContinuousClock.Instant?
        var lastSent: ContinuousClock.Instant?
        var activeCalls = 0
        var completed = 0
        var failed = 0
        var total: Int? = 0
        var latest: PoolProgress?
    }

    /// A reporter for one call, or several at once.
    /// - Parameters:
    ///   - interval: the least time between two updates while a call runs (100 ms by default).
    ///   - handler: called with each update, in the task that runs the call; `nil` to use
    ///     only ``updates``.
    public init(interval: Duration = .milliseconds(100), handler: (@Sendable (PoolProgress) -> Void)? = nil) {
        self.interval = interval
        self.handler = handler
        (updates, continuation) = AsyncStream.makeStream(of: PoolProgress.self, bufferingPolicy: .bufferingNewest(1))
    }

    /// The last update sent; `nil` before the first call begins.
    public var latest: PoolProgress? { state.withLock { $0.latest } }

    /// A call with `total` items (`nil`: unknown) begins. (SPI: the MPI pool reports through
    /// it too.)
    @_spi(MPI) public func begin(total: Int?) {
        delivery.withLock { _ in
            let update = state.withLock { state -> PoolProgress in
                let now = ContinuousClock.now
                if state.started == nil { state.started = now }
                state.activeCalls += 1
                state.total = state.total.flatMap { sum in total.map { sum + $0 } }
                return Self.update(&state, now: now, isFinished: false)
            }
            send(update, isFinished: false)
        }
    }

    /// Items finished: `succeeded` of them with an output, `failed` with an error.
    @_spi(MPI) public func record(succeeded: Int, failed: Int) {
        delivery.withLock { _ in
            let update = state.withLock { state -> PoolProgress? in
                state.completed += succeeded + failed
                state.failed += failed
                let now = ContinuousClock.now
                if let last = state.lastSent, now - last < interval { return nil }
                return Self.update(&state, now: now, isFinished: false)
            }
            if let update { send(update, isFinished: false) }
        }
    }

    /// The results of a chunk.
    func record<Output>(_ chunk: [(index: Int, result: Result<Output, ProcessPoolError>)]) {
        var failed = 0
        for item in chunk {
            if case .failure = item.result { failed += 1 }
        }
        record(succeeded: chunk.count - failed, failed: failed)
    }

    /// A call ended; the last one to end sends the final update.
    @_spi(MPI) public func end() {
        delivery.withLock { _ in
            let (update, last) = state.withLock { state -> (PoolProgress, Bool) in
                state.activeCalls -= 1
                let last = state.activeCalls == 0
                return (Self.update(&state, now: .now, isFinished: last), last)
            }
            send(update, isFinished: last)
        }
    }

    private static func update(_ state: inout State, now: ContinuousClock.Instant, isFinished: Bool) -> PoolProgress {
        state.lastSent = now
        let progress = PoolProgress(
            completed: state.completed, failed: state.failed, total: state.total,
            elapsed: now - (state.started ?? now), isFinished: isFinished)
        state.latest = progress
        return progress
    }

    private func send(_ update: PoolProgress, isFinished: Bool) {
        handler?(update)
        continuation.yield(update)
        if isFinished { continuation.finish() }
    }

    deinit { continuation.finish() }
}
