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
///   written back only when the body returns: with one store for a value of 1, 2, 4 or 8
///   bytes, else through a second copy in the shared memory, so that the write-back itself
///   can be finished by another process. A process that dies
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
    private var committingFlag: UnsafeAtomic<UInt32> {
        UnsafeAtomic(at: (region.base + Self.commitOffset).assumingMemoryBound(to: UInt32.AtomicRepresentation.self))
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
    ///
    /// Inlinable, so that the copy, the body and the write-back of a small value compile in
    /// the caller to a few instructions: through this module's unspecialized generic code
    /// (copies by value witness, a compare by `memcmp`) an uncontended `withLock { $0 += 1 }`
    /// cost several times the lock itself, and held the lock that much longer.
    @inlinable
    public func withLock<Result>(_ body: (inout Value) throws -> Result) rethrows -> Result {
        lockForUpdate()
        defer { unlockAfterUpdate() }
        let shared = UnsafeMutablePointer<Value>(bitPattern: address)!
        var copy = shared.pointee
        let result = try body(&copy)
        switch MemoryLayout<Value>.size {
        // One store of 1, 2, 4 or 8 bytes: a process cannot die halfway through a single
        // instruction, so the value is never half-written and needs no redo log. The value
        // is at least 64-byte aligned (`valueOffset`), so every width is aligned; the atomic
        // stores are swift-atomics' promise of a single access. An unchanged value is not
        // stored, so that a read under the lock leaves the cache line to other processes.
        case 1: Self.storeWord(copy, as: UInt8.self, at: address)
        case 2: Self.storeWord(copy, as: UInt16.self, at: address)
        case 4: Self.storeWord(copy, as: UInt32.self, at: address)
        case 8: Self.storeWord(copy, as: UInt64.self, at: address)
        default: commitThroughLog(copy)
        }
        return result
    }

    @inlinable
    static func storeWord<Word: AtomicValue & FixedWidthInteger>(_ value: Value, as: Word.Type, at address: UInt)
    where Word.AtomicRepresentation.Value == Word {
        let word = withUnsafeBytes(of: value) { $0.loadUnaligned(as: Word.self) }
        let atomic = UnsafeAtomic<Word>(at: UnsafeMutablePointer(bitPattern: address)!)
        if atomic.load(ordering: .relaxed) != word { atomic.store(word, ordering: .relaxed) }
    }

    /// Takes the lock for `withLock` (the fault matrix's step "sharedValue.locked" after it).
    @usableFromInline
    func lockForUpdate() {
        lockRecovering()
        FaultInjection.step("sharedValue.locked")
    }

    /// Releases the lock `withLock` took.
    @usableFromInline
    func unlockAfterUpdate() {
        lock.unlock()
    }

    /// Writes back a value larger than a word: through a redo log, so that the write-back can
    /// be finished by the next holder if this process dies during it. The new value whole
    /// in `pending` first, then the flag (one store) that says the write-back began. Release
    /// stores keep that order (x86 keeps stores in order anyway); the next holder reads them
    /// after taking the lock, which orders them for it.
    @usableFromInline
    func commitThroughLog(_ copy: Value) {
        guard !Self.sameBytes(copy, pointer) else { return }
        pending.initialize(to: copy)
        FaultInjection.step("sharedValue.pendingWritten")
        committingFlag.store(1, ordering: .releasing)
        FaultInjection.step("sharedValue.committing")
        pointer.initialize(to: copy)
        FaultInjection.step("sharedValue.written")
        committingFlag.store(0, ordering: .releasing)
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
                if committingFlag.load(ordering: .acquiring) != 0 {
                    pointer.initialize(to: pending.pointee)
                    committingFlag.store(0, ordering: .releasing)
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
