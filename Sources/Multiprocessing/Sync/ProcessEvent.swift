import CMultiprocessing

/// A flag that threads of any number of processes can wait for: Python's
/// `multiprocessing.Event`.
///
/// ``set()`` raises the flag and wakes every waiter; ``clear()`` lowers it; `wait(timeout:)`
/// returns at once while it is up. The flag is one 32-bit word in shared memory, and waiters
/// sleep on it with a futex (shared between processes, not `FUTEX_PRIVATE_FLAG`).
public final class ProcessEvent: Sendable, Codable {
    let region: SharedRegion

    /// A new event, not set.
    public init() throws {
        region = try SharedRegion(size: 64)
    }

    /// Attaches to the event that came with a message.
    public init(from decoder: any Decoder) throws {
        region = try SharedRegion(from: decoder)
    }

    /// Sends a copy of the event to another process; only the library's own encoder can.
    public func encode(to encoder: any Encoder) throws {
        try region.encode(to: encoder)
    }

    private var flag: UnsafeMutablePointer<UInt32> { region.base.assumingMemoryBound(to: UInt32.self) }

    /// Threads sleeping (or about to) on the flag: `set()` skips the `FUTEX_WAKE` system call
    /// when there are none (a waiter counts itself before its `FUTEX_WAIT` compares the flag;
    /// `set()` stores the flag before it reads the count: one of them sees the other).
    private var sleepers: UnsafeMutablePointer<UInt32> { flag + 1 }

    /// Whether the flag is up.
    public var isSet: Bool { mp_atomic_load32(flag) != 0 }

    /// Raises the flag and wakes every waiter, in every process.
    public func set() {
        mp_atomic_store32(flag, 1)
        if mp_atomic_load32(sleepers) != 0 { _ = mp_futex_wake(flag, Int32.max) }
    }

    /// Lowers the flag.
    public func clear() {
        mp_atomic_store32(flag, 0)
    }

    /// Waits until the flag is up.
    public func wait() {
        _ = wait(deadline: nil, check: {})
    }

    /// Waits at most `timeout` (zero or negative: not at all) for the flag.
    ///
    /// - Returns: whether the flag is up (`false`: the time ran out).
    public func wait(timeout: Duration) -> Bool {
        wait(deadline: Optional(timeout).deadline, check: {})
    }

    /// Waits until the flag is up; the task suspends meanwhile.
    ///
    /// - Throws: `CancellationError` if the task is cancelled while waiting.
    public func wait() async throws {
        _ = try await wait(timeout: nil)
    }

    /// Waits at most `timeout` for the flag; the task suspends meanwhile.
    ///
    /// - Returns: whether the flag is up (`false`: the time ran out).
    /// - Throws: `CancellationError` if the task is cancelled while waiting.
    public func wait(timeout: Duration?) async throws -> Bool {
        if Task.isCancelled { throw CancellationError() }
        if isSet { return true }
        if let timeout, timeout <= .zero { return false }
        let deadline = timeout.deadline
        return try await waitOnOwnThread { [self] cancellation in
            try wait(deadline: deadline, check: cancellation.check)
        }
    }

    private func wait(deadline: Deadline?, check: () throws -> Void) rethrows -> Bool {
        while !isSet {
            if deadline.hasPassed { return false }
            let sliceEnd = ContinuousClock.now.advanced(by: SharedMonitor.slice)
            var until = monotonicTime(of: deadline.map { min($0, sliceEnd) } ?? sliceEnd)
            _ = mp_atomic_add32(sleepers, 1)
            _ = mp_futex_wait(flag, 0, &until)
            _ = mp_atomic_add32(sleepers, UInt32.max)  // minus one
            try check()
        }
        return true
    }
}
