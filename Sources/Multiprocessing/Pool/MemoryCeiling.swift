import Glibc
import Synchronization
import SystemPackage

/// A pool's memory limit per worker: a watchdog thread in each worker reads the worker's
/// resident size and, past the limit, notes it in shared memory and kills its own process;
/// the parent, seeing the worker killed, reads the note and fails the item with
/// ``ProcessPoolError/Reason/memoryLimitExceeded(limit:resident:)``.
///
/// Why a watchdog and not a kernel limit: cgroups are often not writable (containers,
/// cgroup v1 sandboxes), and `RLIMIT_AS` counts address space, not memory: the Swift
/// runtime and glibc reserve far more than they use (each thread's malloc arena reserves
/// 64 MiB; a worker measured here had 160 to 460 MB of address space for 11 to 75 MB
/// resident, growing with its threads), so no fixed address-space limit tracks a memory
/// limit, and an allocation it refuses crashes the worker in a way that cannot be told
/// from any other crash. Nor is it needed as a backstop: memory reserved and never touched
/// costs nothing, and memory touched is what the watchdog sees. `RLIMIT_RSS` is not
/// enforced by Linux. The watchdog catches the
/// item during its run (Python's billiard checks only after it), within a few milliseconds.
final class MemoryCeiling: Sendable {
    /// The limit on a worker's resident memory, in bytes.
    let limit: Int
    /// The notes: for a slot `pid % slotCount`, the pid of the worker that passed the limit
    /// and its resident size then. Written by the worker just before it kills itself, read by
    /// the parent after its exit was collected (which orders the two). A pid kept in the
    /// slot makes a stale or colliding note harmless: it must match the dead worker's.
    let notes: SharedArray<Int>
    static let slotCount = 1024
    /// How often a worker reads its resident size.
    static let period = Duration.milliseconds(5)

    /// The live pools' ceilings, for ``ProcessPoolError``'s initializer, which knows the
    /// dead worker but not its pool.
    private static let live = Mutex<[ObjectIdentifier: MemoryCeiling]>([:])

    init(limit: Int) throws {
        self.limit = limit
        notes = try SharedArray(count: 2 * Self.slotCount)
        Self.live.withLock { $0[ObjectIdentifier(self)] = self }
    }

    /// Stops answering for the pool's workers (the pool is gone).
    func retire() {
        _ = Self.live.withLock { $0.removeValue(forKey: ObjectIdentifier(self)) }
    }

    /// `reason`, or, when it is a worker killed by SIGKILL that noted it passed its memory
    /// limit, ``ProcessPoolError/Reason/memoryLimitExceeded(limit:resident:)``.
    static func explain(_ reason: ProcessPoolError.Reason, pid: pid_t?) -> ProcessPoolError.Reason {
        guard case .workerEnded(.signaled(let signal)) = reason, signal.rawValue == SIGKILL, let pid else {
            return reason
        }
        let ceilings = live.withLock { Array($0.values) }
        for ceiling in ceilings {
            if let resident = ceiling.takeNote(of: pid) {
                return .memoryLimitExceeded(limit: ceiling.limit, resident: resident)
            }
        }
        return reason
    }

    /// Whether worker `pid` noted that it passed its memory limit (the note is left for
    /// ``explain(_:pid:)``): such an item is not retried, as it would pass it again.
    static func noted(_ pid: pid_t?) -> Bool {
        guard let pid else { return false }
        let ceilings = live.withLock { Array($0.values) }
        return ceilings.contains { ceiling in
            ceiling.notes.withUnsafeBufferPointer { $0[2 * (Int(pid) % slotCount)] == Int(pid) }
        }
    }

    /// The resident size noted by worker `pid`, cleared once read; `nil` if it left none.
    private func takeNote(of pid: pid_t) -> Int? {
        let slot = 2 * (Int(pid) % Self.slotCount)
        return notes.withUnsafeMutableBufferPointer { notes in
            guard notes[slot] == Int(pid) else { return nil }
            notes[slot] = 0
            return notes[slot + 1]
        }
    }

    // MARK: In the worker

    /// Starts the watchdog thread of this worker (see the type's notes).
    static func watch(limit: Int, notes: SharedArray<Int>) {
        let pageSize = sysconf(Int32(_SC_PAGESIZE))
        // Opened once: each read at offset 0 gives the current figures.
        let statm = open("/proc/self/statm", O_RDONLY | O_CLOEXEC)
        guard statm >= 0, pageSize > 0 else {
            printToStandardError("swift-multiprocessing: no memory watchdog: /proc/self/statm cannot be read")
            return
        }
        let started = startDetachedThread {
            var buffer = [UInt8](repeating: 0, count: 128)
            let nanoseconds = period.components.attoseconds / 1_000_000_000
            while true {
                if let pages = residentPages(statm, &buffer) {
                    let resident = pages * pageSize
                    if resident > limit {
                        let pid = Int(getpid())
                        let slot = 2 * (pid % slotCount)
                        notes.withUnsafeMutableBufferPointer { notes in
                            notes[slot + 1] = resident
                            notes[slot] = pid
                        }
                        kill(getpid(), SIGKILL)
                    }
                }
                // A signal may cut one pause short: the next reading just comes early.
                var pause = timespec(tv_sec: 0, tv_nsec: Int(nanoseconds))
                nanosleep(&pause, nil)
            }
        }
        if started != 0 {
            close(statm)
            printToStandardError("swift-multiprocessing: no memory watchdog: \(Errno(rawValue: started))")
        }
    }

    /// The second figure of `/proc/self/statm`: resident pages.
    private static func residentPages(_ statm: Int32, _ buffer: inout [UInt8]) -> Int? {
        let count = buffer.withUnsafeMutableBytes { pread(statm, $0.baseAddress, $0.count, 0) }
        guard count > 0 else { return nil }
        let fields = buffer[0..<count].split(separator: UInt8(ascii: " "))
        guard fields.count > 1 else { return nil }
        return Int(String(decoding: fields[1], as: UTF8.self))
    }
}
