import Dispatch
import Synchronization

/// How the engine thread and the rest of the program meet: orders go in, lost ranks come
/// out. Everything here is safe from any thread.
final class EngineMailbox: Sendable {
    private let orders = Mutex<[EngineOrder]>([])
    /// Signalled when an order arrives, to wake the engine thread from its short sleep.
    let wake = DispatchSemaphore(value: 0)
    private let lost = Mutex<LostRanks>(LostRanks())
    private let nextID = Atomic<UInt64>(1)
    /// The engine thread's counts, for the benchmarks (``EngineCounters``).
    let counters = EngineCounters()

    private struct LostRanks {
        var ranks: [Int: Duration] = [:]
        var listeners: [UInt64: AsyncStream<LostRank>.Continuation] = [:]
    }

    /// A fresh identifier for a receive.
    func makeID() -> UInt64 { nextID.wrappingAdd(1, ordering: .relaxed).oldValue }

    func post(_ order: EngineOrder) {
        orders.withLock { $0.append(order) }
        wake.signal()
    }

    /// The orders posted since the last call (engine thread).
    func takeOrders() -> [EngineOrder] {
        orders.withLock { orders in
            if orders.isEmpty { return [] }
            defer { orders.removeAll(keepingCapacity: true) }
            return orders
        }
    }

    /// Records a lost rank and tells the listeners (engine thread).
    func publishLost(rank: Int, silentFor: Duration) {
        let listeners = lost.withLock { state in
            state.ranks[rank] = silentFor
            return Array(state.listeners.values)
        }
        for listener in listeners { listener.yield(LostRank(rank: rank, silentFor: silentFor)) }
    }

    /// Ends every listener's stream (engine thread, at shutdown).
    func finishListeners() {
        let listeners = lost.withLock { state in
            defer { state.listeners = [:] }
            return Array(state.listeners.values)
        }
        for listener in listeners { listener.finish() }
    }

    var lostRanks: [Int: Duration] { lost.withLock { $0.ranks } }

    /// A stream of the ranks lost from now on, after those already lost.
    func lostRankStream() -> AsyncStream<LostRank> {
        let (stream, continuation) = AsyncStream<LostRank>.makeStream(bufferingPolicy: .unbounded)
        let id = makeID()
        let already = lost.withLock { state in
            state.listeners[id] = continuation
            return state.ranks
        }
        for (rank, silentFor) in already.sorted(by: { $0.key < $1.key }) {
            continuation.yield(LostRank(rank: rank, silentFor: silentFor))
        }
        continuation.onTermination = { [weak self] _ in
            self?.lost.withLock { _ = $0.listeners.removeValue(forKey: id) }
        }
        return stream
    }
}

/// A rank found dead: nothing came from it for `silentFor`.
public struct LostRank: Sendable, Hashable, CustomStringConvertible {
    /// The rank's number in the world.
    public var rank: Int
    /// How long it had been silent when it was declared lost.
    public var silentFor: Duration

    /// "rank 3 (silent for 2.1 seconds)".
    public var description: String { "rank \(rank) (silent for \(silentFor))" }
}
