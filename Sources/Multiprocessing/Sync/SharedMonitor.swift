import CMultiprocessing
import Glibc

/// A few words of state in shared memory, guarded by a robust process-shared mutex, with a
/// futex that waiters sleep on until the state changes: the engine under semaphores,
/// conditions and barriers.
///
/// Layout of its region: the mutex on the first cache line (with its holder's pid at its
/// end), the futex's change counter on the second, then the state words (`Int64` each).
///
/// The mutex is held only inside the library, for a few instructions, never while waiting:
/// a waiter reads the change counter under the mutex, releases it, and sleeps while the
/// counter is unchanged (`FUTEX_WAIT` compares atomically), so no change is missed. Waits
/// sleep in slices so a caller can look at the world between them (cancellation, a dead
/// party), and so a lost wake-up could cost a slice, never a hang.
final class SharedMonitor: Sendable, Codable {
    let region: SharedRegion

    private static let counterOffset = 64
    private static let stateOffset = 128

    /// How long one sleep lasts at most before the caller's `check` runs.
    static let slice: Duration = .milliseconds(50)

    /// What to do with the state when a process died holding the mutex, inside one of its
    /// user's sections (given the dead holder's pid, 0 if unknown); `nil`: carry on.
    typealias Repair = @Sendable (State, pid_t) -> Void

    private let repair: Repair?

    /// A new monitor with `words` state words, all zero.
    init(words: Int, repair: Repair? = nil) throws {
        precondition(ProcessMutex.size <= Self.holderOffset, "a pthread mutex larger than expected")
        region = try SharedRegion(size: Self.stateOffset + 8 * max(1, words))
        self.repair = repair
        _ = ProcessMutex.initialize(at: region.base)
    }

    init(from decoder: any Decoder) throws {
        region = try SharedRegion(from: decoder)
        repair = nil
    }

    /// Attaches to the monitor that came with a message, with the repair of its user.
    init(from decoder: any Decoder, repair: @escaping Repair) throws {
        region = try SharedRegion(from: decoder)
        self.repair = repair
    }

    func encode(to encoder: any Encoder) throws {
        try region.encode(to: encoder)
    }

    private var mutex: ProcessMutex { ProcessMutex(at: region.base) }

    /// The process holding the mutex (0: none), on the mutex's cache line after it: written
    /// by the holder, so that a repair knows whose section was cut short.
    private var holder: UnsafeMutablePointer<UInt32> {
        (region.base + Self.holderOffset).assumingMemoryBound(to: UInt32.self)
    }

    private static let holderOffset = 60

    private var counter: UnsafeMutablePointer<UInt32> {
        (region.base + Self.counterOffset).assumingMemoryBound(to: UInt32.self)
    }

    /// How many threads sleep (or are about to) on the counter: a change with no sleeper
    /// skips the `FUTEX_WAKE` system call. Sequentially consistent atomics make it safe: a
    /// sleeper counts itself before its `FUTEX_WAIT` compares the counter, a notifier bumps
    /// the counter before it reads the sleepers, so either the notifier sees the sleeper or
    /// the sleeper's wait sees the new counter and returns at once. A sleeper killed asleep
    /// leaves the count high: harmless, a wake-up is only spent for nothing.
    private var sleepers: UnsafeMutablePointer<UInt32> { counter + 1 }

    /// The state words, valid while the mutex is held.
    struct State {
        fileprivate let base: UnsafeMutablePointer<Int64>

        subscript(_ index: Int) -> Int {
            get { Int(base[index]) }
            nonmutating set { base[index] = Int64(newValue) }
        }
    }

    private var state: State {
        State(base: (region.base + Self.stateOffset).assumingMemoryBound(to: Int64.self))
    }

    private func lock() {
        do {
            if try mutex.lock() == .previousOwnerDied {
                // A process died inside one of the sections (killed, crashed, exited): the
                // state may be half-updated. The user repairs it (a barrier breaks) before
                // the mutex is consistent again, so a repairer that dies too leaves the
                // repair to the next; without a repair, the monitor carries on (its users'
                // sections leave at worst one word half-updated).
                if let repair {
                    repair(state, pid_t(bitPattern: mp_atomic_load32(holder)))
                    wakeAll()
                }
                mutex.markConsistent()
            }
        } catch {
            preconditionFailure("swift-multiprocessing: a shared monitor's mutex failed: \(error)")
        }
        mp_atomic_store32(holder, UInt32(bitPattern: getpid()))
    }

    private func unlock() {
        mp_atomic_store32(holder, 0)
        let unlocked = mutex.unlock()
        precondition(unlocked, "swift-multiprocessing: a shared monitor's mutex was not held")
    }

    /// Runs `body` on the state, holding the mutex; then, if `wake` is not zero, wakes up to
    /// that many waiters (they look at the state again).
    func update<Result, Failure: Error>(
        wake: Int32 = 0, _ body: (State) throws(Failure) -> Result
    ) throws(Failure) -> Result {
        lock()
        let result: Result
        do {
            result = try body(state)
        } catch {
            unlock()
            throw error
        }
        if wake != 0 { _ = mp_atomic_add32(counter, 1) }
        unlock()
        if wake != 0 {
            // Changed, nobody woken yet: the waiters must still see it (at their next slice).
            FaultInjection.step("monitor.beforeWake")
            if mp_atomic_load32(sleepers) != 0 { _ = mp_futex_wake(counter, wake) }
        }
        return result
    }

    /// Wakes every waiter to look at the state again (after a change made in a wait's
    /// `attempt`, which cannot wake anyone itself).
    func wakeAll() {
        _ = mp_atomic_add32(counter, 1)
        if mp_atomic_load32(sleepers) != 0 { _ = mp_futex_wake(counter, Int32.max) }
    }

    /// Waits until `attempt` returns a value (it runs holding the mutex, and may change the
    /// state), or the deadline passes (`nil`). `check` runs between sleeps, without the mutex;
    /// what it throws ends the wait.
    func wait<Result>(
        deadline: Deadline?,
        check: () throws -> Void,
        _ attempt: (State) throws -> Result?
    ) rethrows -> Result? {
        lock()
        while true {
            let result: Result?
            do {
                result = try attempt(state)
            } catch {
                unlock()
                throw error
            }
            if let result {
                unlock()
                return result
            }
            if deadline.hasPassed {
                unlock()
                return nil
            }
            let seen = mp_atomic_load32(counter)
            unlock()
            let sliceEnd = ContinuousClock.now.advanced(by: Self.slice)
            var until = monotonicTime(of: deadline.map { min($0, sliceEnd) } ?? sliceEnd)
            _ = mp_atomic_add32(sleepers, 1)
            _ = mp_futex_wait(counter, seen, &until)
            _ = mp_atomic_add32(sleepers, UInt32.max)  // minus one
            try check()
            lock()
        }
    }
}
