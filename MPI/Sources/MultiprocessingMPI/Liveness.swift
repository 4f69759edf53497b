import Glibc

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

extension Liveness {
    /// The settings of a worker rank, which starts before rank 0's program can say anything:
    /// the defaults, or the launcher's environment (`mpirun -x NAME=value`):
    /// `SWIFT_MPI_HEARTBEAT_MS`, `SWIFT_MPI_LOST_AFTER_MS`, `SWIFT_MPI_IDLE_SLEEP_US`.
    /// Rank 0 reads them too, as the defaults of ``MPIWorld/start(liveness:)``.
    public static var fromEnvironment: Liveness {
        var liveness = Liveness()
        if let value = number("SWIFT_MPI_HEARTBEAT_MS") { liveness.heartbeatInterval = .milliseconds(value) }
        if let value = number("SWIFT_MPI_LOST_AFTER_MS") { liveness.lostAfter = .milliseconds(value) }
        if let value = number("SWIFT_MPI_IDLE_SLEEP_US") { liveness.idleSleepLimit = .microseconds(value) }
        return liveness
    }

    private static func number(_ name: String) -> Int? {
        guard let text = getenv(name), let value = Int(String(cString: text)), value > 0 else { return nil }
        return value
    }
}
