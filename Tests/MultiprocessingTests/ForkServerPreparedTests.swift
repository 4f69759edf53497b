import Glibc
import SystemPackage
import Testing

@testable import Multiprocessing

/// An initializer for a pool worker's target in these tests; never run.
struct PreparedInitializer: ProcessTarget {
    var note: String
    func run() async throws {}
}

/// The fork server looks up, before forking a pool worker, every type decoding the worker's
/// target goes through (see `ForkServerPrepared`): a type missing from the list would be
/// looked up again by every worker, silently slower, so the list is checked against a real
/// decode here.
@Suite("The fork server's prepared types")
struct ForkServerPreparedTests {
    @Test("ServePool's list covers every type its decoding looks up, with every option of a pool")
    func servePoolListIsComplete() throws {
        let (mine, theirs) = try Connection<PoolMessage>.pair()
        defer { mine.close() }
        let logs = try Queue<WorkerLogRecord>(capacity: 4096)
        defer { logs.close() }
        let ceiling = try MemoryCeiling(limit: 1 << 30)
        defer { ceiling.retire() }
        let extras = PoolWorkerExtras(
            logs: logs, logLevel: .debug, memoryLimit: 1 << 30, memoryNotes: ceiling.notes)
        let target = ServePool(
            tasks: theirs, words: try WorkerWords(), initializer: try EncodedTarget(PreparedInitializer(note: "x")),
            extras: extras)
        let outbox = DescriptorOutbox()
        let bytes = try BinaryEncoder(userInfo: [.descriptorOutbox: outbox]).encode(target)
        // The decoded handles own copies of the descriptors, as a worker's would.
        let inbox = DescriptorInbox(try outbox.descriptors.map { try $0.duplicate() })
        theirs.close()
        defer { inbox.closeUnclaimed() }
        let lookups = _BinaryFastPathLookups()
        let decoded = try BinaryDecoder(userInfo: [.descriptorInbox: inbox, .fastPathLookups: lookups])
            .decode(ServePool.self, from: bytes)
        decoded.tasks.close()
        decoded.extras.logs?.close()
        #expect(lookups.count >= 8, "the decode looked up \(lookups.count) types")
        #expect(lookups.names(notIn: ServePool.typesDecoded) == [])
        // The optionals, the messages and the bytes read their own way, both directions.
        #expect(_lookUpBinaryFastPaths(for: ServePool.typesDecoded) >= 10)
    }
}
