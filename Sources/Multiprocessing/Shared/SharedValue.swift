import Atomics

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
/// - The lock is robust: if a process dies holding it, the next one to take it gets it (the
///   value may then be half-updated by the dead process; a trivial value is written in one
///   copy, so this is rare).
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

    /// The lock in the region's first cache line; the value after it.
    private static var valueOffset: Int { max(ProcessMutex.alignment, MemoryLayout<Value>.alignment) }
    private var lock: ProcessMutex { ProcessMutex(at: region.base) }
    private var pointer: UnsafeMutablePointer<Value> {
        (region.base + Self.valueOffset).assumingMemoryBound(to: Value.self)
    }

    /// A new shared value, starting at `initial`.
    public init(_ initial: Value) throws {
        region = try SharedRegion(size: Self.valueOffset + max(MemoryLayout<Value>.stride, 16))
        _ = ProcessMutex.initialize(at: region.base)
        (region.base + Self.valueOffset).initializeMemory(as: Value.self, repeating: initial, count: 1)
        address = UInt(bitPattern: region.base + Self.valueOffset)
    }

    /// Runs `body` with the value, under the value's lock: the way to update a value that
    /// is not atomic, or several steps at once.
    public func withLock<Result>(_ body: (inout Value) throws -> Result) rethrows -> Result {
        lockRecovering()
        defer { lock.unlock() }
        return try body(&pointer.pointee)
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
            if try lock.lock() == .previousOwnerDied { lock.markConsistent() }
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
        guard region.size >= Self.valueOffset + MemoryLayout<Value>.size else {
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
