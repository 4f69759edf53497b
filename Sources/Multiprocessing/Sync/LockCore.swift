import CMultiprocessing
import Glibc

/// The part shared by ``ProcessLock`` and ``RecursiveProcessLock``: a ``ProcessMutex`` at the
/// start of a region, then who holds it and how many times.
///
/// The holder (process id, thread id, count) is written only by the holding thread while it
/// holds the mutex; other threads read it atomically, and can only ever find their own ids
/// there if they wrote them, so "held by the current thread" is exact without the mutex.
struct LockCore: Sendable {
    let region: SharedRegion

    private static let holderOffset = 64

    init() throws {
        region = try SharedRegion(size: 128)
        _ = ProcessMutex.initialize(at: region.base)
    }

    init(region: SharedRegion) {
        self.region = region
    }

    var mutex: ProcessMutex { ProcessMutex(at: region.base) }

    private func word(_ index: Int) -> UnsafeMutablePointer<UInt32> {
        (region.base + Self.holderOffset).assumingMemoryBound(to: UInt32.self) + index
    }

    /// The process that holds the lock (0: none, or unknown).
    var holderPID: pid_t { pid_t(bitPattern: mp_atomic_load32(word(0))) }

    /// How many times the holder took it.
    var count: Int {
        get { Int(mp_atomic_load32(word(2))) }
        nonmutating set { mp_atomic_store32(word(2), UInt32(newValue)) }
    }

    var isHeldByCurrentThread: Bool {
        mp_atomic_load32(word(0)) == UInt32(bitPattern: getpid())
            && mp_atomic_load32(word(1)) == UInt32(bitPattern: mp_gettid())
    }

    /// Takes the mutex until `deadline` (`nil`: forever); `false` on timeout. Records the
    /// holder; reports a dead previous holder (the mutex held).
    func lock(deadline: Deadline?, cancellation: WaitCancellation? = nil) throws -> Bool {
        var acquisition: ProcessMutex.Acquisition
        while true {
            do throws(ProcessMutex.Failure) {
                if cancellation != nil {
                    // Slices, so a cancelled task is noticed.
                    let sliceEnd = ContinuousClock.now.advanced(by: SharedMonitor.slice)
                    acquisition = try mutex.lock(deadline: deadline.map { min($0, sliceEnd) } ?? sliceEnd)
                } else {
                    acquisition = try mutex.lock(deadline: deadline)
                }
                break
            } catch .timedOut {
                if deadline.hasPassed { return false }
                try cancellation?.check()
            } catch .wouldDeadlock {
                throw ProcessLockError.alreadyHeldByCurrentThread
            } catch .system(let code) {
                throw ProcessLockError.system(errno: code)
            }
        }
        try took(acquisition)
        return true
    }

    /// Takes the mutex if it is free; `false` if another thread holds it.
    func tryLock() throws(ProcessLockError) -> Bool {
        let acquisition: ProcessMutex.Acquisition
        do throws(ProcessMutex.Failure) {
            guard let taken = try mutex.tryLock() else { return false }
            acquisition = taken
        } catch {
            switch error {
            case .wouldDeadlock: throw .alreadyHeldByCurrentThread
            case .timedOut: return false
            case .system(let code): throw .system(errno: code)
            }
        }
        try took(acquisition)
        return true
    }

    private func took(_ acquisition: ProcessMutex.Acquisition) throws(ProcessLockError) {
        // Held, not yet recorded: a death here is reported with no pid.
        FaultInjection.step("lock.acquired.unrecorded")
        let previous = holderPID
        mp_atomic_store32(word(0), UInt32(bitPattern: getpid()))
        mp_atomic_store32(word(1), UInt32(bitPattern: mp_gettid()))
        count = 1
        FaultInjection.step("lock.acquired")
        if acquisition == .previousOwnerDied {
            mutex.markConsistent()
            throw .previousOwnerDied(pid: previous == 0 ? nil : previous)
        }
    }

    /// Releases the mutex; a precondition failure if the calling thread does not hold it.
    func unlock(_ what: String) {
        precondition(isHeldByCurrentThread, "\(what) released by a thread that does not hold it")
        count = 0
        mp_atomic_store32(word(1), 0)
        mp_atomic_store32(word(0), 0)
        // Still held, the holder already forgotten: a death here is reported with no pid.
        FaultInjection.step("lock.release.unrecorded")
        let unlocked = mutex.unlock()
        precondition(unlocked, "\(what) released by a thread that does not hold it")
        FaultInjection.step("lock.released")
    }
}
