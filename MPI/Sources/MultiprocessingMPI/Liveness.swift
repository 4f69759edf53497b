/// How ranks tell each other they are alive, and when silence means death.
///
/// Every rank above 0 sends rank 0 an empty message every ``heartbeatInterval``, and rank 0
/// sends one to each of them; a rank from which nothing came for ``lostAfter`` is declared
/// lost, and every wait on it throws ``MPIError/rankLost(rank:silentFor:)``. MPI (Open MPI 4
/// without ULFM) reports no death itself: a receive from a killed rank never completes.
public struct Liveness: Sendable, Hashable {
    /// How often each rank says it is alive. Default: 100 ms.
    public var heartbeatInterval: Duration
    /// The silence after which a rank is declared lost. Default: 2 s. Keep it many times the
    /// interval: a busy machine delays heartbeats.
    public var lostAfter: Duration
    /// The longest sleep of the engine thread when nothing happens, which bounds the
    /// latency of a message that arrives on an idle rank. Default: 1 ms.
    public var idleSleepLimit: Duration

    /// Liveness with the given interval and bound.
    public init(
        heartbeatInterval: Duration = .milliseconds(100), lostAfter: Duration = .seconds(2),
        idleSleepLimit: Duration = .milliseconds(1)
    ) {
        self.heartbeatInterval = heartbeatInterval
        self.lostAfter = lostAfter
        self.idleSleepLimit = idleSleepLimit
    }
}
