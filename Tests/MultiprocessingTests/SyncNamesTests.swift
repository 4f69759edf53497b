import Foundation
import Multiprocessing
import Testing

/// Imports Foundation and the library together and uses the synchronization names of both
/// unqualified: it compiles only if none of the library's clashes with Foundation's.
@Suite("Sync names")
struct SyncNamesTests {
    @Test("the library's synchronization names and Foundation's coexist unqualified")
    func namesCoexist() throws {
        let foundationLock = NSLock()
        let foundationCondition = NSCondition()
        let lock = try ProcessLock()
        let recursive = try RecursiveProcessLock()
        let semaphore = try ProcessSemaphore()
        let bounded = try BoundedProcessSemaphore()
        let event = try ProcessEvent()
        let condition = try ProcessCondition(lock: lock)
        let barrier = try ProcessBarrier(parties: 1)
        foundationLock.lock()
        foundationLock.unlock()
        foundationCondition.signal()
        try recursive.withLock {}
        #expect(semaphore.value == 1 && bounded.bound == 1)
        #expect(!event.isSet && !condition.isHeldByCurrentThread)
        #expect(try barrier.wait(timeout: .zero) == 0)
    }
}
