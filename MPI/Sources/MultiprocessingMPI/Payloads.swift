import Synchronization

/// The bytes of a message being sent, read by MPI straight from an array's storage.
///
/// `@unchecked Sendable`: `owner` is an array that is never mutated (it is a copy held here
/// only to keep its storage alive), and `base` points into that storage; the engine thread
/// only reads through it. A native Swift array's elements live in one heap buffer that does
/// not move while a reference to it exists, and copy-on-write means any writer elsewhere
/// copies first: the bytes stay put and unchanged until MPI reports the send complete.
final class SendPayload: @unchecked Sendable {
    private let owner: Any
    let base: UnsafeRawPointer?
    let byteCount: Int

    init<Element: BitwiseCopyable>(_ elements: [Element]) throws(MPIError) {
        byteCount = elements.count * MemoryLayout<Element>.stride
        guard byteCount <= Int(Int32.max) else { throw .messageTooLarge(byteCount: byteCount) }
        owner = elements
        base = elements.withUnsafeBytes { $0.baseAddress }
        AddressLog.recordSend(base)
    }

    /// A message with no bytes (a heartbeat).
    init() {
        owner = ()
        base = nil
        byteCount = 0
    }
}

/// Where a message being received lands: asked for memory once its size is known (the
/// message is matched but not yet received), it allocates the final array and lets MPI
/// write into its storage, so the bytes are copied once, by MPI, and never again.
///
/// `@unchecked Sendable`: created by the waiting task, then used only by the engine thread
/// until the engine resumes the task's ``Completion``, then only by the task. The
/// completion's lock orders the two.
class ReceiveSink: @unchecked Sendable {
    /// Memory for `byteCount` bytes that stays valid until the sink is released.
    func prepare(byteCount: Int) throws(MPIError) -> UnsafeMutableRawPointer? { nil }
}

/// Receives into a new `[Element]` (`@unchecked Sendable` for the reason given on
/// ``ReceiveSink``).
final class ElementSink<Element: BitwiseCopyable>: ReceiveSink, @unchecked Sendable {
    private(set) var elements: [Element] = []

    override func prepare(byteCount: Int) throws(MPIError) -> UnsafeMutableRawPointer? {
        let stride = MemoryLayout<Element>.stride
        guard byteCount % stride == 0 else {
            throw .sizeMismatch(byteCount: byteCount, elementType: "\(Element.self)", elementSize: stride)
        }
        let count = byteCount / stride
        // Left uninitialized: every byte is written by MPI before the array is handed out,
        // and a trivial type has nothing to destroy if the receive fails.
        elements = [Element](unsafeUninitializedCapacity: count) { _, initialized in initialized = count }
        // The array is held only here (uniquely referenced), so asking for its mutable bytes
        // neither copies nor moves it; the storage stays where it is while `elements` lives.
        let base = elements.withUnsafeMutableBytes { $0.baseAddress }
        AddressLog.recordReceive(base)
        return base
    }
}

/// The storage addresses that messages were sent from and received into, recorded only
/// while a test asks for it: how the tests check that an array is sent from, and received
/// into, its own storage with no copy in between.
enum AddressLog {
    private static let enabled = Atomic<Bool>(false)
    private static let addresses = Mutex<(sends: [Int], receives: [Int])>(([], []))

    static func start() {
        addresses.withLock { $0 = ([], []) }
        enabled.store(true, ordering: .releasing)
    }

    static func stop() -> (sends: [Int], receives: [Int]) {
        enabled.store(false, ordering: .releasing)
        return addresses.withLock { $0 }
    }

    @inline(__always)
    static func recordSend(_ address: UnsafeRawPointer?) {
        guard enabled.load(ordering: .acquiring), let address else { return }
        addresses.withLock { $0.sends.append(Int(bitPattern: address)) }
    }

    @inline(__always)
    static func recordReceive(_ address: UnsafeMutableRawPointer?) {
        guard enabled.load(ordering: .acquiring), let address else { return }
        addresses.withLock { $0.receives.append(Int(bitPattern: address)) }
    }
}
