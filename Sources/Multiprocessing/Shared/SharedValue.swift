import Atomics
import CMultiprocessing
import Glibc

/// One value in memory shared between processes (Python's `multiprocessing.Value`).
///
/// Any number of processes may hold it: store it in a target's properties, or send it in a
/// message; each copy reads and writes the same memory. Every value has a lock; types that
/// the hardware can update atomically (integers, `Bool`, pointers: swift-atomics'
/// `AtomicValue`) also have lock-free operations, much faster than the lock.
///
/// ```swift
/// let counter = try SharedValue(0)
/// struct Count: ProcessTarget {
///     let counter: SharedValue<Int>
///     func run() { for _ in 0..<1000 { counter.add(1) } }   // atomic: no lock
/// }
/// // ... start and join some workers, then:
/// print(counter.load())
///
/// let position = try SharedValue(Point(x: 0, y: 0))
/// position.withLock { $0.x += 1 }                             // any trivial type: locked
/// ```
///
/// - An update under the lock is all or nothing: `withLock`'s body works on a copy, which is
///   written back (through a second copy in the shared memory, so that the write-back itself
///   can be finished by another process) only when the body returns. A process that dies
///   anywhere in an update, killed, crashed or exited, leaves the value as it was before the
///   update, or as the update made it, never half-written; the lock is robust, so the next
///   process takes it at once. A body that throws changes nothing.
/// - `Value` must be trivial (`BitwiseCopyable`): no references, since another process
///   could not follow them.
public struct SharedValue<Value: BitwiseCopyable>: Sendable, Codable {
    private let region: SharedRegion
    /// The value's address in this process's mapping (of `region`, which keeps it mapped), as
    /// a bit pattern (a pointer is not `Sendable`). Kept beside the region so that the
    /// lock-free operations, inlinable, compile in the caller to the bare instruction (one
    /// `lock xadd` for ``add(_:)``): the generic code behind a call into this module costs
    /// several times the instruction itself.
    @usableFromInline let address: UInt

    /// The lock in the region's first cache line, with the commit flag at its end; then the
    /// value; then the copy that an update being written back comes from.
    private static var valueOffset: Int { max(ProcessMutex.alignment, MemoryLayout<Value>.alignment) }
    private static var pendingOffset: Int {
        let alignment = max(8, MemoryLayout<Value>.alignment)
        return valueOffset + (max(MemoryLayout<Value>.stride, 16) + alignment - 1) / alignment * alignment
    }
    private static var regionSize: Int { pendingOffset + max(MemoryLayout<Value>.stride, 16) }
    private static var commitOffset: Int { 60 }
    private var lock: ProcessMutex { ProcessMutex(at: region.base) }
    private var pointer: UnsafeMutablePointer<Value> {
        (region.base + Self.valueOffset).assumingMemoryBound(to: Value.self)
    }
    private var pending: UnsafeMutablePointer<Value> {
        (region.base + Self.pendingOffset).assumingMemoryBound(to: Value.self)
    }
    /// 1 while an update is written back from `pending` to the value: a process that dies
    /// then leaves the value half-written, and the next holder of the lock finishes the copy.
    private var committing: UnsafeMutablePointer<UInt32> {
        (region.base + Self.commitOffset).assumingMemoryBound(to: UInt32.self)
    }

    /// A new shared value, starting at `initial`.
    public init(_ initial: Value) throws {
        precondition(ProcessMutex.size <= Self.commitOffset, "a pthread mutex larger than expected")
        region = try SharedRegion(size: Self.regionSize)
        _ = ProcessMutex.initialize(at: region.base)
        (region.base + Self.valueOffset).initializeMemory(as: Value.self, repeating: initial, count: 1)
        address = UInt(bitPattern: region.base + Self.valueOffset)
    }

    /// Runs `body` with the value, under the value's lock: the way to update a value that
    /// is not atomic, or several steps at once.
    ///
    /// The update is all or nothing, even if this process dies in the middle (see the type's
    /// documentation): `body` works on a copy, written back when it returns. If `body` throws,
    /// the value is left unchanged. The lock-free operations do not take the lock: an `add`
    /// made while another process runs `withLock` on the same value may be overwritten.
    public func withLock<Result>(_ body: (inout Value) throws -> Result) rethrows -> Result {
        lockRecovering()
        defer { lock.unlock() }
        FaultInjection.step("sharedValue.locked")
        var copy = pointer.pointee
        let result = try body(&copy)
        if !Self.sameBytes(copy, pointer) {
            // Redo log: the new value whole in `pending` first, then the flag (one store) that
            // makes the next holder finish the write-back if this process dies during it.
            pending.initialize(to: copy)
            FaultInjection.step("sharedValue.pendingWritten")
            mp_atomic_store32(committing, 1)
            FaultInjection.step("sharedValue.committing")
            pointer.initialize(to: copy)
            FaultInjection.step("sharedValue.written")
            mp_atomic_store32(committing, 0)
        }
        return result
    }

    private static func sameBytes(_ value: Value, _ shared: UnsafeMutablePointer<Value>) -> Bool {
        withUnsafeBytes(of: value) { memcmp($0.baseAddress!, shared, MemoryLayout<Value>.size) == 0 }
    }

    /// The value, read under the lock.
    public var value: Value {
        get { withLock { $0 } }
        nonmutating set { withLock { $0 = newValue } }
    }

    /// Takes the lock; one whose holder died is made consistent and taken (see the type's
    /// documentation).
    private func lockRecovering() {
        do {
            if try lock.lock() == .previousOwnerDied {
                // The dead holder was writing an update back: `pending` holds it whole.
                if mp_atomic_load32(committing) != 0 {
                    pointer.initialize(to: pending.pointee)
                    mp_atomic_store32(committing, 0)
                }
                lock.markConsistent()
            }
        } catch {
            preconditionFailure("a SharedValue's lock failed: \(error)")
        }
    }

    /// Encodes a copy of the handle for another process.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(region)
    }

    /// Decodes a handle received from another process.
    /// - Throws: `DecodingError` if the memory received is too small for `Value` (a value of
    ///   another type was sent).
    public init(from decoder: any Decoder) throws {
        let region = try decoder.singleValueContainer().decode(SharedRegion.self)
        self.region = region
        address = UInt(bitPattern: region.base + Self.valueOffset)
        guard region.size >= Self.regionSize else {
            throw DecodingError.dataCorrupted(
                .init(
                    codingPath: decoder.codingPath,
                    debugDescription: "the shared memory received (\(region.size) bytes) cannot hold a \(Value.self)"))
        }
    }
}

/// Lock-free operations, sequentially consistent (the strongest ordering; on x86-64 and
/// arm64 a read-modify-write costs the same at every ordering).
extension SharedValue where Value: AtomicValue, Value.AtomicRepresentation.Value == Value {
    @usableFromInline var atomic: UnsafeAtomic<Value> {
        // The address of a live mapping: never zero.
        UnsafeAtomic(at: UnsafeMutablePointer(bitPattern: address).unsafelyUnwrapped)
    }

    /// The value, read atomically without the lock.
    @inlinable
    public func load() -> Value {
        atomic.load(ordering: .sequentiallyConsistent)
    }

    /// Writes the value atomically without the lock.
    @inlinable
    public func store(_ value: Value) {
        atomic.store(value, ordering: .sequentiallyConsistent)
    }

    /// Writes `value` and returns the one it replaced, atomically.
    @discardableResult
    @inlinable
    public func exchange(_ value: Value) -> Value {
        atomic.exchange(value, ordering: .sequentiallyConsistent)
    }

    /// Writes `desired` if the value is `expected`, atomically. Returns whether it did, and
    /// the value found.
    @discardableResult
    @inlinable
    public func compareExchange(
        expected: Value, desired: Value
    ) -> (exchanged: Bool, original: Value) {
        atomic.compareExchange(expected: expected, desired: desired, ordering: .sequentiallyConsistent)
    }
}

extension SharedValue where Value: AtomicInteger, Value.AtomicRepresentation.Value == Value {
    /// Adds `delta` atomically (wrapping on overflow) and returns the new value.
    @discardableResult
    @inlinable
    public func add(_ delta: Value) -> Value {
        atomic.wrappingIncrementThenLoad(by: delta, ordering: .sequentiallyConsistent)
    }

    /// Subtracts `delta` atomically (wrapping on overflow) and returns the new value.
    @discardableResult
    @inlinable
    public func subtract(_ delta: Value) -> Value {
        atomic.wrappingDecrementThenLoad(by: delta, ordering: .sequentiallyConsistent)
    }
}
