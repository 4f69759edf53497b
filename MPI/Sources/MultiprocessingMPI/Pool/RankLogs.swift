import Glibc
import Logging
import Synchronization

/// The worker ranks' swift-log records, logged again in rank 0's logging system (as a
/// ``Multiprocessing/ProcessPool`` logs its workers' records in the parent).
///
/// On a worker rank, the local pools forward their workers' records to the rank process (the
/// root library's relay, tagged `worker` and `pid`), whose logging system is this file's
/// ``RankLogHandler``: it holds each record while an ``MPIPool`` that forwards logs has a
/// service on the rank (else drops it: nobody would read it), and the service sends them to
/// rank 0 in batches. Rank 0 logs each again through its own logging system, which decides
/// what is printed, adding `rank`.
enum RankLogs {
    /// The most records held on a rank between two batches; more are counted as dropped, and
    /// rank 0 logs a warning saying how many (logging never holds up the work).
    static let capacity = 10_000
    /// How often a service sends the records held.
    static let interval = Duration.milliseconds(50)
    private static let held = Mutex(Held())

    private struct Held {
        var records: [RankLogRecord] = []
        var dropped = 0
        /// Services forwarding logs on this rank now.
        var forwarders = 0
    }

    /// Makes this worker rank's logging system hold records for rank 0. Called once, when
    /// the rank is launched, before its local pools start (their relays log through it, at
    /// the level it has: `SWIFT_MPI_LOG_LEVEL` if set, else `info`). A rank above 0 never
    /// runs `main`: nothing else bootstraps its logging system.
    static func install() {
        let level = getenv("SWIFT_MPI_LOG_LEVEL").flatMap { Logger.Level(rawValue: String(cString: $0)) } ?? .info
        LoggingSystem.bootstrap { label in RankLogHandler(label: label, logLevel: level) }
    }

    static func hold(_ record: RankLogRecord) {
        held.withLock { held in
            guard held.forwarders > 0 else { return }
            if held.records.count < capacity { held.records.append(record) } else { held.dropped += 1 }
        }
    }

    /// Sends the records held to rank 0 over `channel` every ``interval``, on the task it
    /// returns, until that task is cancelled, then once more: a ``PoolService`` forwards while
    /// it serves. Records are held from this call on (before the service's first request).
    static func forward(over channel: RankChannel) -> Task<Void, Never> {
        held.withLock { $0.forwarders += 1 }
        return Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                await send(over: channel)
            }
            // The records of the service's last requests: the local pool's relay (a thread of
            // the root library) logs them a moment after their items' results came back. A
            // task of its own: this one is cancelled, and `Task.sleep` would throw at once.
            await Task { try? await Task.sleep(for: interval) }.value
            await send(over: channel)
            held.withLock { $0.forwarders -= 1 }
        }
    }

    private static func send(over channel: RankChannel) async {
        let (records, dropped) = held.withLock { held in
            defer {
                held.records.removeAll()
                held.dropped = 0
            }
            return (held.records, held.dropped)
        }
        guard !records.isEmpty || dropped > 0,
            let bytes = try? RankWire.encode(RankLogBatch(records: records, dropped: dropped))
        else { return }
        _ = try? await channel.send(PoolReply.logs(bytes), timeout: .seconds(5))
    }

    /// Rank 0: logs a batch from `rank` again, through this process's logging system.
    static func logAgain(_ bytes: [UInt8], from rank: Int) {
        guard let batch = try? RankWire.decode(RankLogBatch.self, from: bytes) else { return }
        if batch.dropped > 0 {
            Logger(label: "MultiprocessingMPI.MPIPool").warning(
                "\(batch.dropped) log records of rank \(rank) were dropped: more than \(capacity) waited to be sent",
                metadata: ["rank": .stringConvertible(rank)])
        }
        var loggers: [String: Logger] = [:]
        for record in batch.records {
            let logger = loggers[record.label] ?? Logger(label: record.label)
            loggers[record.label] = logger
            var metadata = record.metadata.mapValues { Logger.MetadataValue.string($0) }
            metadata["rank"] = .stringConvertible(rank)
            logger.log(
                level: record.level, "\(record.message)", metadata: metadata, source: record.source,
                file: record.file, function: record.function, line: record.line)
        }
    }
}

/// The records a worker rank sends rank 0 at once, and how many it dropped since the last.
struct RankLogBatch: Codable, Sendable {
    var records: [RankLogRecord]
    var dropped: Int
}

/// One log record of a worker rank (its metadata as strings: a value of any type travels).
struct RankLogRecord: Codable, Sendable {
    var level: Logger.Level
    var message: String
    var metadata: [String: String]
    var label: String
    var source: String
    var file: String
    var function: String
    var line: UInt
}

/// A worker rank's log handler: holds each record for rank 0 (``RankLogs``).
struct RankLogHandler: LogHandler {
    let label: String
    var logLevel: Logger.Level
    var metadata: Logger.Metadata = [:]
    var metadataProvider: Logger.MetadataProvider?

    init(label: String, logLevel: Logger.Level) {
        self.label = label
        self.logLevel = logLevel
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { _, new in new } }
        if let own = event.metadata { merged.merge(own) { _, new in new } }
        RankLogs.hold(
            RankLogRecord(
                level: event.level, message: event.message.description, metadata: merged.mapValues(\.description),
                label: label, source: event.source, file: event.file, function: event.function, line: event.line))
    }
}
