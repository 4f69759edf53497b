import CMultiprocessing
import Glibc

/// A mutex in shared memory that any process mapping it can take: a process-shared,
/// robust, error-checking pthread mutex.
///
/// - Robust: when its owner dies holding it, the kernel releases it (the robust-futex list)
///   and the next `lock` learns so (``Acquisition/previousOwnerDied``); the mutex is made
///   consistent again at once, so it stays usable.
/// - Owned: only the thread that holds it may unlock it (error-checking).
/// - Timed waits measure on the monotonic clock (`pthread_mutex_clocklock`).
///
/// It lives at an address inside a ``SharedRegion``, which owns the memory; this value is
/// only the address.
struct ProcessMutex: Sendable {
    /// Bytes to reserve for one, and the alignment to give them.
    static let size = MemoryLayout<pthread_mutex_t>.size
    static let alignment = 64  // its own cache line

    private let address: UInt

    private var mutex: UnsafeMutablePointer<pthread_mutex_t> {
        UnsafeMutablePointer(bitPattern: address)!
    }

    /// The mutex at `pointer`, which must already be initialised (``initialize(at:)``).
    init(at pointer: UnsafeMutableRawPointer) {
        address = UInt(bitPattern: pointer)
    }

    /// Initialises a new mutex at `pointer` (once, by the process that creates the memory).
    static func initialize(at pointer: UnsafeMutableRawPointer) -> ProcessMutex {
        var attributes = pthread_mutexattr_t()
        pthread_mutexattr_init(&attributes)
        pthread_mutexattr_setpshared(&attributes, Int32(PTHREAD_PROCESS_SHARED))
        pthread_mutexattr_setrobust(&attributes, Int32(PTHREAD_MUTEX_ROBUST))
        pthread_mutexattr_settype(&attributes, Int32(PTHREAD_MUTEX_ERRORCHECK))
        pthread_mutex_init(pointer.assumingMemoryBound(to: pthread_mutex_t.self), &attributes)
        pthread_mutexattr_destroy(&attributes)
        return ProcessMutex(at: pointer)
    }

    /// How a lock was taken.
    enum Acquisition: Sendable, Equatable {
        case acquired
        /// The previous owner died holding it: the data it protects may be half-updated.
        /// The mutex is held and usable again.
        case previousOwnerDied
    }

    /// What stops a lock from being taken.
    enum Failure: Error, Equatable {
        /// The deadline passed.
        case timedOut
        /// The calling thread holds it already.
        case wouldDeadlock
        /// Another system error.
        case system(Int32)
    }

    /// How many times `lock` tries again before sleeping in the kernel. Locks between
    /// processes guard short sections (a counter, a queue's indices): the holder, running on
    /// another CPU, usually lets go within a few hundred nanoseconds, far less than a futex
    /// sleep and wake-up costs.
    static let spins = 100

    /// Takes the mutex, waiting until the deadline (`nil`: forever).
    func lock(deadline: Deadline? = nil) throws(Failure) -> Acquisition {
        for _ in 0..<Self.spins {
            let result = pthread_mutex_trylock(mutex)
            if result != EBUSY { return try Self.acquisition(result) }
            mp_cpu_relax()
        }
        var result: Int32
        repeat {
            if let deadline {
                var until = monotonicTime(of: deadline)
                result = mp_mutex_lock_until(mutex, &until)
            } else {
                result = pthread_mutex_lock(mutex)
            }
        } while result == EINTR
        return try Self.acquisition(result)
    }

    /// Takes the mutex if it is free.
    func tryLock() throws(Failure) -> Acquisition? {
        let result = pthread_mutex_trylock(mutex)
        if result == EBUSY { return nil }
        return try Self.acquisition(result)
    }

    private static func acquisition(_ result: Int32) throws(Failure) -> Acquisition {
        switch result {
        case 0: return .acquired
        case EOWNERDEAD: return .previousOwnerDied
        case ETIMEDOUT: throw .timedOut
        case EDEADLK: throw .wouldDeadlock
        default: throw .system(result)
        }
    }

    /// Makes the mutex usable again after ``Acquisition/previousOwnerDied``.
    func markConsistent() {
        _ = pthread_mutex_consistent(mutex)
    }

    /// Releases the mutex. Returns `false` if the calling thread does not hold it.
    @discardableResult
    func unlock() -> Bool {
        pthread_mutex_unlock(mutex) == 0
    }
}
