import Glibc
import Logging
import Synchronization
import Testing

@testable import Multiprocessing

/// The records logged in this (the test) process, for the labels the tests below use.
enum LogCapture {
    struct Record: Sendable {
        var label: String
        var level: Logger.Level
        var message: String
        var metadata: [String: String]
    }

    static let records = Mutex<[Record]>([])

    /// Bootstraps this process's logging once (it can be only once per process), with a
    /// handler at level `debug` that keeps the records of the labels starting with
    /// `pool-log-test` and drops the others.
    static let installed: Void = LoggingSystem.bootstrap { label in Handler(label: label) }

    static func records(tagged tag: String) -> [Record] {
        records.withLock { $0.filter { $0.metadata["tag"] == tag } }
    }

    struct Handler: LogHandler {
        let label: String
        var logLevel: Logger.Level = .debug
        var metadata: Logger.Metadata = [:]

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            guard label.hasPrefix("pool-log-test") else { return }
            // A slow handler, for the test of a full queue.
            if case .string("slow")? = event.metadata?["tag"] { usleep(2000) }
            var merged = metadata
            if let own = event.metadata { merged.merge(own) { _, new in new } }
            let record = Record(
                label: label, level: event.level, message: event.message.description,
                metadata: merged.mapValues(\.description))
            records.withLock { $0.append(record) }
        }
    }
}

/// Logs `count` records (and one at `trace`, which the parent's level drops) tagged `tag`,
/// then returns its pid.
struct PoolLogLines: ProcessFunction {
    var tag: String
    var count: Int = 1
    func callAsFunction(_ input: Int) -> Int32 {
        var logger = Logger(label: "pool-log-test.worker")
        logger[metadataKey: "tag"] = "\(tag)"
        for line in 0..<count {
            logger.info("input \(input) line \(line)", metadata: ["input": "\(input)"])
        }
        logger.trace("too fine for the parent")
        logger.debug("debug passes")
        return getpid()
    }
}

/// Logs `count` records of 8 KiB each, as fast as it can, and returns its pid; the
/// messages start with `marker`.
struct PoolLogFlood: ProcessFunction {
    var count: Int
    var marker = "line"
    func callAsFunction(_ input: Int) -> Int32 {
        var logger = Logger(label: "pool-log-test.flood")
        logger[metadataKey: "tag"] = "slow"
        let padding = String(repeating: "x", count: 8192)
        for line in 0..<count { logger.info("\(marker) \(line) \(padding)") }
        return getpid()
    }
}

@Suite("Pool worker logs", .timeLimit(.minutes(1)))
struct PoolWorkerLogsTests {
    init() { LogCapture.installed }

    @Test(
        "a worker's records reach the parent's handler, tagged with the worker's name and pid",
        arguments: StartMethod.allCases)
    func forwarded(method: StartMethod) async throws {
        let tag = "forwarded-\(method)"
        let pids = try await withProcessPool(workers: 2, startMethod: method) { (pool: ProcessPool) async throws in
            try await pool.map(PoolLogLines(tag: tag), Array(0..<10), chunkSize: 1)
        }
        // The relay thread logs what the workers queued; it may still be at it.
        #expect(eventually(within: .seconds(20)) { LogCapture.records(tagged: tag).count >= 20 })
        let records = LogCapture.records(tagged: tag)
        let info = records.filter { $0.level == .info }
        #expect(info.count == 10)
        #expect(records.filter { $0.level == .debug }.count == 10)
        #expect(records.allSatisfy { $0.level != .trace })  // the parent's level: debug
        for record in info {
            let input = Int(record.metadata["input"] ?? "") ?? -1
            #expect(record.message == "input \(input) line 0")
            #expect(record.label == "pool-log-test.worker")
            #expect(record.metadata["pid"] == "\(pids[input])")
            #expect(record.metadata["worker"]?.hasPrefix("PoolWorker-") == true)
        }
    }

    @Test("many workers logging at once lose no record while the queue has room")
    func manyAtOnce() async throws {
        let tag = "many"
        let perItem = 40  // 640 records of about 400 bytes: well within the 1 MiB ring
        try await withProcessPool(workers: 4) { (pool: ProcessPool) async throws in
            // Two calls at once as well: each worker logs while the others do.
            async let first = pool.map(PoolLogLines(tag: tag, count: perItem), Array(0..<8), chunkSize: 1)
            async let second = pool.map(PoolLogLines(tag: tag, count: perItem), Array(8..<16), chunkSize: 1)
            _ = try await (first, second)
        }
        let expected = 16 * perItem
        #expect(eventually(within: .seconds(30)) { LogCapture.records(tagged: tag).count >= expected + 16 })
        let info = LogCapture.records(tagged: tag).filter { $0.level == .info }
        let drops = LogCapture.records.withLock {
            $0.filter { $0.label == "pool-log-test.worker" && $0.message.contains("dropped") }
        }
        #expect(drops.isEmpty, "\(drops)")
        #expect(info.count == expected)
        #expect(Set(info.map(\.message)).count == expected)
        #expect(Set(info.compactMap { $0.metadata["pid"] }).count >= 2)
    }

    @Test("a worker whose log queue is full drops records and counts them instead of waiting")
    func fullQueue() async throws {
        let sent = 400  // 3.2 MiB of records through a 1 MiB ring to a handler that takes 2 ms each
        func flood() -> [LogCapture.Record] {
            LogCapture.records.withLock { $0.filter { $0.label == "pool-log-test.flood" } }
        }
        func dropped() -> Int {
            flood().compactMap { record -> Int? in
                guard record.level == .warning else { return nil }
                return Int(record.message.prefix { $0 != " " })
            }.reduce(0, +)
        }
        var extra = 0
        try await withProcessPool(workers: 1) { (pool: ProcessPool) async throws in
            // It returns: logging did not wait for the slow handler to make room.
            _ = try await pool.map(PoolLogFlood(count: sent), [1])
            // The first record that gets through after the flood carries the count of those
            // dropped since the last one that did (one sent while the queue is still full is
            // dropped too): once one arrives, every drop has been reported.
            while extra < 30 {
                let marker = "extra-\(extra)"
                _ = try await pool.map(PoolLogFlood(count: 1, marker: marker), [2])
                extra += 1
                if eventually(within: .seconds(1), { flood().contains { $0.message.hasPrefix(marker + " ") } }) {
                    break
                }
            }
        }
        #expect(dropped() > 0)
        #expect(flood().contains { $0.level == .warning && $0.message.contains("dropped: the log queue was full") })
        // Everything the queue took arrives, with the count of what it did not.
        #expect(
            eventually(within: .seconds(30)) { flood().filter { $0.level == .info }.count + dropped() == sent + extra })
    }

    @Test("a pool that does not forward leaves the workers' logging alone")
    func notForwarded() async throws {
        let tag = "not-forwarded"
        try await withProcessPool(workers: 1, forwardsLogs: false) { (pool: ProcessPool) async throws in
            _ = try await pool.map(PoolLogLines(tag: tag), [1, 2])
        }
        // A forwarding pool's records would be queued before the map returned, and logged
        // soon after: a forwarding pool made now would deliver its own, after them.
        let marker = "marker-after-not-forwarded"
        try await withProcessPool(workers: 1) { (pool: ProcessPool) async throws in
            _ = try await pool.map(PoolLogLines(tag: marker), [1])
        }
        #expect(eventually(within: .seconds(20)) { !LogCapture.records(tagged: marker).isEmpty })
        #expect(LogCapture.records(tagged: tag).isEmpty)
    }
}
