import Glibc
import Logging
import Synchronization
import SystemPackage

/// One log record of a pool worker, on its way to the parent.
struct WorkerLogRecord: Codable, Sendable {
    var level: Logger.Level
    var message: String
    /// The record's and the logger's metadata, as strings (a value of any type travels).
    var metadata: [String: String]
    var label: String
    var source: String
    var file: String
    var function: String
    var line: UInt
    var worker: String
    var pid: Int32
    /// Records this worker dropped, the queue being full, since its last record that got through.
    var dropped: Int
}

/// The log handler of a pool worker: puts each record on the pool's log queue without
/// waiting (a full queue drops the record and counts it: logging never holds up the work).
struct ForwardingLogHandler: LogHandler {
    let label: String
    let queue: Queue<WorkerLogRecord>
    let dropped: DroppedRecords
    var logLevel: Logger.Level
    var metadata: Logger.Metadata = [:]
    var metadataProvider: Logger.MetadataProvider?

    final class DroppedRecords: Sendable {
        let count = Atomic<Int>(0)
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { _, new in new } }
        if let own = event.metadata { merged.merge(own) { _, new in new } }
        let lost = dropped.count.exchange(0, ordering: .relaxed)
        let record = WorkerLogRecord(
            level: event.level, message: event.message.description, metadata: merged.mapValues(\.description),
            label: label, source: event.source, file: event.file, function: event.function, line: event.line,
            worker: CurrentProcess.name, pid: getpid(), dropped: lost)
        // Never wait for room: a record that finds the queue full is counted instead. A put
        // that failed with room left lost the race for the queue's lock to a writer that
        // was descheduled mid-copy (a loaded machine): that wait is short, so it is retried.
        var sent = (try? queue.put(record, timeout: .zero)) == true
        if !sent, !queue.isClosed, let encoded = try? queue.encode(record),
            !queue.ring.isFull(forPayload: encoded.bytes.count)
        {
            sent = (try? queue.put(record, timeout: .milliseconds(500))) == true
        }
        if !sent {
            dropped.count.add(lost + 1, ordering: .relaxed)
        }
    }
}

/// A pool's log forwarding: the queue its workers' records come on, and the thread in this
/// process that logs them again through this process's logging system.
final class WorkerLogs: Sendable {
    /// The ring's size: about 1 MiB of records in flight (its pages cost memory only once
    /// touched).
    static let capacity = 1 << 20
    let queue: Queue<WorkerLogRecord>
    /// The level the workers' loggers start at: the parent's, so that records the parent
    /// would not print do not cross over.
    let level: Logger.Level

    init() throws {
        queue = try Queue(capacity: Self.capacity)
        level = Logger(label: "Multiprocessing.ProcessPool").logLevel
        let queue = self.queue
        let started = startDetachedThread { Self.relay(queue) }
        if started != 0 {
            queue.close()
            throw ProcessPoolError(reason: .noWorkers("no thread for the workers' logs: \(Errno(rawValue: started))"))
        }
    }

    /// Ends the relay once the records already in the queue are logged.
    func close() { queue.close() }

    deinit { queue.close() }

    /// Logs each record again here, tagged with its worker, until the queue is closed and empty.
    private static func relay(_ queue: Queue<WorkerLogRecord>) {
        var loggers: [String: Logger] = [:]
        while true {
            let record: WorkerLogRecord
            do {
                record = try queue.get()
            } catch QueueError.closed {
                return
            } catch {
                continue  // a record that did not decode: skip it
            }
            let logger = loggers[record.label] ?? Logger(label: record.label)
            if loggers[record.label] == nil { loggers[record.label] = logger }
            var metadata = record.metadata.mapValues { Logger.MetadataValue.string($0) }
            metadata["worker"] = .string(record.worker)
            metadata["pid"] = .stringConvertible(record.pid)
            if record.dropped > 0 {
                logger.warning(
                    "\(record.dropped) log records of this worker were dropped: the log queue was full",
                    metadata: ["worker": .string(record.worker), "pid": .stringConvertible(record.pid)])
            }
            // The parent's handler decides what is printed: its level, its format.
            logger.log(
                level: record.level, "\(record.message)", metadata: metadata, source: record.source,
                file: record.file, function: record.function, line: record.line)
        }
    }

    /// Installs the forwarding handler as this worker's logging system.
    static func install(queue: Queue<WorkerLogRecord>, level: Logger.Level) {
        let dropped = ForwardingLogHandler.DroppedRecords()
        LoggingSystem.bootstrap { label in
            ForwardingLogHandler(label: label, queue: queue, dropped: dropped, logLevel: level)
        }
    }
}
