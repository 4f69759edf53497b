import Glibc
import SystemPackage

/// Something `waitForAny(_:timeout:)` can wait on (Python's `multiprocessing.connection.wait`):
/// a connection end (ready when a message, the end of the stream or an error is there to
/// receive), a child process (ready when it has ended), or a queue (ready when an item is in,
/// or it is closed).
public protocol Waitable: AnyObject, Sendable {
    /// How the library watches it. Only the library's own types can make one.
    var waitSource: WaitSource { get }
}

/// How the library watches a ``Waitable``: what says it is ready, and which descriptors to
/// sleep on until it may be.
public struct WaitSource: Sendable {
    enum Kind: Sendable {
        case stream(MessageStream)
        case process(ChildProcess)
        /// No descriptor says when it changes (a queue in shared memory, woken by futexes):
        /// it is looked at again every ``WaitSource/lookInterval`` while the wait goes on.
        case looked(@Sendable () -> Bool)
    }

    /// How often an object without a descriptor is looked at while a wait goes on.
    static let lookInterval = Duration.milliseconds(2)
    let kind: Kind

    /// What one look found: ready, or the descriptors to sleep on (retained streams are
    /// released by the caller once the wait is over).
    fileprivate enum Look {
        case ready
        case watch(FileDescriptor?, retained: MessageStream?)
    }

    fileprivate func look() -> Look {
        switch kind {
        case .stream(let stream):
            if stream.isReadable { return .ready }
            guard let descriptor = stream.retainDescriptor() else { return .ready }  // closed
            return .watch(descriptor, retained: stream)
        case .process(let process):
            let state = process.waitState()
            if state.ended { return .ready }
            return .watch(state.process, retained: state.channel)
        case .looked(let isReady):
            return isReady() ? .ready : .watch(nil, retained: nil)
        }
    }
}

extension Connection: Waitable {
    /// Ready when a message, the end of the stream or an error can be received without waiting.
    public var waitSource: WaitSource { WaitSource(kind: .stream(stream)) }
}

extension ReceivingConnection: Waitable {
    /// Ready when a message, the end of the stream or an error can be received without waiting.
    public var waitSource: WaitSource { WaitSource(kind: .stream(stream)) }
}

extension ChildProcess: Waitable {
    /// Ready when the process has ended (Python's `sentinel`). It must have been started.
    public var waitSource: WaitSource { WaitSource(kind: .process(self)) }
}

extension Queue: Waitable {
    /// Ready when an item is in the queue, or it is closed (a `get` then returns or throws
    /// at once, unless another consumer is faster). Looked at every few milliseconds while
    /// a wait goes on: the queue wakes its own sleepers with futexes, not descriptors.
    public var waitSource: WaitSource { WaitSource(kind: .looked { !self.isEmpty || self.isClosed }) }
}

extension JoinableQueue: Waitable {
    /// Ready when an item is in the queue, or it is closed (see ``Queue``'s).
    public var waitSource: WaitSource { WaitSource(kind: .looked { !self.isEmpty || self.isClosed }) }
}

/// When to look again: the deadline, or sooner if an object has no descriptor to wake us.
private func nextLook(_ deadline: Deadline?, _ sources: [WaitSource]) -> Deadline? {
    let looked = sources.contains { if case .looked = $0.kind { true } else { false } }
    guard looked else { return deadline }
    let soon = ContinuousClock.now.advanced(by: WaitSource.lookInterval)
    return deadline.map { min($0, soon) } ?? soon
}

/// One round of looking at every object: the indices of those ready, or what to watch.
private func lookAtAll(_ sources: [WaitSource]) -> (ready: [Int], watch: [FileDescriptor], retained: [MessageStream]) {
    var ready: [Int] = []
    var watch: [FileDescriptor] = []
    var retained: [MessageStream] = []
    for (index, source) in sources.enumerated() {
        switch source.look() {
        case .ready: ready.append(index)
        case .watch(let descriptor, let stream):
            if let descriptor { watch.append(descriptor) }
            if let stream {
                retained.append(stream)
                if case .process = source.kind { watch.append(stream.rawDescriptor) }
            }
        }
    }
    return (ready, watch, retained)
}

/// Waits until at least one of `sources` is ready; their indices (empty on timeout).
private func readyIndices(_ sources: [WaitSource], deadline: Deadline?) throws -> [Int] {
    if sources.isEmpty { return [] }  // nothing could ever become ready
    while true {
        let (ready, watch, retained) = lookAtAll(sources)
        defer { for stream in retained { stream.releaseDescriptor() } }
        if !ready.isEmpty { return ready }
        if deadline.hasPassed { return [] }
        do throws(Errno) {
            _ = try pollAny(watch.map { ($0, Int16(POLLIN)) }, deadline: nextLook(deadline, sources))
        } catch {
            throw ConnectionError.system(error, during: "waiting for any of \(sources.count) objects")
        }
    }
}

/// The `async` form of ``readyIndices(_:deadline:)``.
private func readyIndices(_ sources: [WaitSource], deadline: Deadline?) async throws -> [Int] {
    if sources.isEmpty { return [] }
    while true {
        let (ready, watch, retained) = lookAtAll(sources)
        if !ready.isEmpty || deadline.hasPassed {
            for stream in retained { stream.releaseDescriptor() }
            return ready
        }
        do {
            _ = try await Reactor.shared.wait(for: watch.map { ($0, .readable) }, deadline: nextLook(deadline, sources))
        } catch {
            for stream in retained { stream.releaseDescriptor() }
            throw error
        }
        for stream in retained { stream.releaseDescriptor() }
    }
}

/// Waits until at least one of `objects` is ready, or `timeout` passes (`nil`: forever),
/// and returns those that are ready, in their order in `objects` (Python's
/// `multiprocessing.connection.wait`). An empty result means the time ran out; zero or a
/// negative timeout looks once and returns at once; an empty `objects` returns at once.
///
/// ```swift
/// var open = results                 // [ReceivingConnection<Int>], one per worker
/// while !open.isEmpty {
///     for connection in try waitForAny(open) {
///         do { print(try connection.receive()) }
///         catch ConnectionError.endOfStream { open.removeAll { $0 === connection } }
///     }
/// }
/// ```
/// Connections and processes mixed: pass `[any Waitable]` and compare what comes back.
public func waitForAny<Object: Waitable>(_ objects: [Object], timeout: Duration? = nil) throws -> [Object] {
    try readyIndices(objects.map(\.waitSource), deadline: timeout.deadline).map { objects[$0] }
}

/// The `async` form of `waitForAny(_:timeout:)`: suspends without blocking a thread.
/// - Throws: `CancellationError` when the task is cancelled while it waits.
public func waitForAny<Object: Waitable>(_ objects: [Object], timeout: Duration? = nil) async throws -> [Object] {
    try await readyIndices(objects.map(\.waitSource), deadline: timeout.deadline).map { objects[$0] }
}

/// Waits on objects of different kinds at once (connections and processes); returns those
/// that are ready, in their order in `objects`.
public func waitForAny(_ objects: [any Waitable], timeout: Duration? = nil) throws -> [any Waitable] {
    try readyIndices(objects.map(\.waitSource), deadline: timeout.deadline).map { objects[$0] }
}

/// The `async` form, for objects of different kinds.
public func waitForAny(_ objects: [any Waitable], timeout: Duration? = nil) async throws -> [any Waitable] {
    try await readyIndices(objects.map(\.waitSource), deadline: timeout.deadline).map { objects[$0] }
}
