import SystemPackage

/// A first-in, first-out queue that threads of any number of processes put items into and
/// get items from: Python's `multiprocessing.Queue`.
///
/// ```swift
/// struct Squares: ProcessTarget {
///     let queue: Queue<Int>
///     func run() throws { for n in 1...5 { try queue.put(n * n) } }
/// }
///
/// let queue = try Queue<Int>()
/// let child = ChildProcess(Squares(queue: queue))
/// try child.start()
/// for _ in 1...5 { print(try queue.get()) }   // 1 4 9 16 25
/// try child.join()
/// ```
///
/// - **Shared memory, no feeder thread.** Items are encoded (the library's binary codec) and
///   copied into a ring of bytes in shared memory when `put` returns. A process that puts
///   items and exits leaves them in the queue for the others: it exits at once, and a parent
///   may `join` it before getting them (Python's queue hangs there).
/// - **Bounded or not.** `Queue(maxSize: n)` makes `put` wait while `n` items are in. An
///   unbounded queue's `put` waits only when its ring of bytes is full: ``capacity`` bytes,
///   64 MiB by default, of which each item takes its encoding plus 4 bytes, rounded up to 8
///   (an `Int` takes 16; an item that goes through the socket, below, takes 16 too). The
///   ring's pages cost memory only once touched.
/// - **Shared handle.** Encoding a queue (storing it in a target's properties, or sending it
///   on a connection) gives the other process the same queue, and this process keeps its
///   own: hand it to any number of children.
/// - **Robust.** A process killed anywhere in `put` or `get` neither corrupts the queue nor
///   locks the others out: a record becomes visible only once it is whole, and is taken only
///   once it has been copied out; the locks are robust mutexes that pass to the next taker.
/// - **Timeouts** return `false` or `nil`; a timeout of zero or less tries once without
///   waiting for room or an item (Python's `put_nowait`, `get_nowait`). Only failures throw.
/// - **Any item.** An item that holds handles travelling as descriptors (connection ends,
///   shared values, arrays and memory, locks, other queues), or whose encoding takes more than
///   half the ring, goes through a socket the queue owns instead (its bytes inline, or in a
///   memory file when larger than 32 KiB), with a small placeholder in the ring that keeps its
///   place: order, ``count``, ``maxSize``, ``close()`` and ``JoinableQueue`` treat it as any
///   other item. Such a `put` and `get` cost a few system calls; ordinary items never touch the
///   socket. Connection ends in an item *move* into the queue (this process's copy is closed
///   once the item is in), as when they are sent on a connection; wrap them in ``Shared`` to
///   keep them. Items put and never taken keep their descriptors open until the queue goes.
///   Side items waiting at once are also bounded by the socket's buffer (thousands of small
///   ones; a `put` waits beyond it, as when the ring is full).
public final class Queue<Element: Codable & Sendable>: Sendable, Codable {
    let ring: QueueRing
    /// The way for items that cannot be bytes in the ring (``QueueSideChannel``).
    let side: QueueSideChannel
    /// Whether `Element` is a fixed-width number, whose codec encoding is its memory (the
    /// platforms supported are little-endian): copied as is, with no encoder. All of them
    /// take 1 to 8 bytes, and travel through the ring as the low bytes of a `UInt64`.
    private let isTrivial: Bool
    /// Whether `Element` is a fixed-width number of 1, 2, 4 or 8 bytes (all of them are).
    private static var fitsInWord: Bool {
        Element.self is any _BinaryTrivialElement.Type && [1, 2, 4, 8].contains(MemoryLayout<Element>.size)
    }

    /// `Element` if it is an array of fixed-width numbers (``QueueNumberArray``), whose
    /// elements' bytes are copied as they are. Found once: a cast per item is a conformance
    /// look-up.
    private let numberArray: (any QueueNumberArray.Type)?

    /// The default size of the ring of bytes: 64 MiB.
    public static var defaultCapacity: Int { QueueRing.defaultCapacity }

    /// A new, empty queue.
    ///
    /// - Parameters:
    ///   - maxSize: the most items it holds (`put` waits while it is full); `nil`: no limit
    ///     but its bytes.
    ///   - capacity: the bytes of its ring, rounded up to a power of two (at least 64, at most
    ///     1 GiB). Memory is reserved, and used only as the ring is written.
    public init(maxSize: Int? = nil, capacity: Int = Queue.defaultCapacity) throws {
        if let maxSize { precondition(maxSize >= 1, "a bounded queue holds at least one item") }
        ring = try QueueRing(capacity: capacity, maxSize: maxSize ?? 0)
        side = try QueueSideChannel()
        isTrivial = Self.fitsInWord
        numberArray = Element.self as? any QueueNumberArray.Type
    }

    init(ring: QueueRing, side: QueueSideChannel) {
        self.ring = ring
        self.side = side
        isTrivial = Self.fitsInWord
        numberArray = Element.self as? any QueueNumberArray.Type
    }

    /// Attaches to the queue that came with a message.
    ///
    /// - Throws: `DecodingError` if what came is not a queue.
    public convenience init(from decoder: any Decoder) throws {
        let (ring, side) = try QueueRing.decodeHandle(from: decoder)
        self.init(ring: ring, side: side)
    }

    /// Sends a copy of the queue to another process; only the library's own encoder can.
    public func encode(to encoder: any Encoder) throws {
        try ring.encodeHandle(side: side, to: encoder)
    }

    // MARK: Facts

    /// The most items the queue holds, or `nil` if only its bytes limit it.
    public var maxSize: Int? { ring.maxSize == 0 ? nil : ring.maxSize }

    /// The bytes of its ring (a power of two).
    public var capacity: Int { ring.capacity }

    /// How many items are in the queue now. Approximate: other threads and processes may put
    /// and get at any moment, so it may be out of date as soon as it is read (as in Python's
    /// `qsize()`).
    public var count: Int { ring.count }

    /// Whether the queue holds no item now (approximate, like ``count``).
    public var isEmpty: Bool { ring.count == 0 }

    /// Whether a `put` of a small item would wait now: the queue holds ``maxSize`` items, or
    /// its ring has no room (approximate, like ``count``).
    public var isFull: Bool { ring.isFull() }

    /// Whether ``close()`` was called, in any process.
    public var isClosed: Bool { ring.isClosed }

    // MARK: Put

    /// Puts `item` at the end, waiting as long as the queue is full.
    ///
    /// - Throws: ``QueueError/closed``, or the error `item`'s encoding threw, or, for an item
    ///   that goes through the queue's socket, a ``ConnectionError`` if the system refuses its
    ///   descriptors (too many in flight). Nothing is put then, and the queue is unaffected.
    public func put(_ item: Element) throws {
        _ = try put(item, deadline: nil, check: {})
    }

    /// Puts `item` at the end, waiting at most `timeout` while the queue is full (zero or
    /// negative: not at all).
    ///
    /// - Returns: `false` if the time ran out: nothing was put.
    /// - Throws: the errors of `put(_:)`.
    public func put(_ item: Element, timeout: Duration) throws -> Bool {
        try put(item, deadline: Optional(timeout).deadline, check: {})
    }

    /// Puts `item` at the end; the task suspends while the queue is full (no thread of the
    /// cooperative pool waits).
    ///
    /// - Throws: the errors of `put(_:)`; `CancellationError` if the task is cancelled
    ///   while waiting (nothing was put).
    public func put(_ item: Element) async throws {
        _ = try await put(item, timeout: nil)
    }

    /// Puts `item` at the end, waiting at most `timeout` (`nil`: as long as it takes) while
    /// the queue is full; the task suspends meanwhile.
    ///
    /// - Returns: `false` if the time ran out: nothing was put.
    /// - Throws: the errors of `put(_:)`; `CancellationError` if the task is cancelled
    ///   while waiting (nothing was put).
    public func put(_ item: Element, timeout: Duration?) async throws -> Bool {
        if Task.isCancelled { throw CancellationError() }
        if try put(item, deadline: .now, check: {}) { return true }
        if let timeout, timeout <= .zero { return false }
        let deadline = timeout.deadline
        return try await waitOnOwnThread { [self] cancellation in
            try put(item, deadline: deadline, check: cancellation.check)
        }
    }

    func put(
        _ item: Element, deadline: Deadline?, check: () throws -> Void, afterWrite: () -> Void = {},
        afterSend: () -> Void = {}
    ) throws -> Bool {
        if isTrivial {
            // Its bytes in a word rather than `withUnsafeBytes(of: item)`, whose generic
            // argument costs metadata look-ups in this unspecialised code, several times the put.
            var word = Self.word(of: item)
            return try withUnsafeBytes(of: &word) {
                let bytes = UnsafeRawBufferPointer(rebasing: $0[..<MemoryLayout<Element>.size])
                return try ring.put(bytes, deadline: deadline, check: check, afterWrite: afterWrite)
            }
        }
        if let numberArray {
            return try numberArray.withElementBytes(of: item) {
                guard ring.fits(payload: $0.count) else {
                    return try putSide($0, outbox: nil, deadline: deadline, check: check, afterSend: afterSend)
                }
                return try ring.put($0, deadline: deadline, check: check, afterWrite: afterWrite)
            }
        }
        let (bytes, outbox) = try encode(item)
        if outbox != nil || !ring.fits(payload: bytes.count) {
            return try bytes.withUnsafeBytes {
                try putSide($0, outbox: outbox, deadline: deadline, check: check, afterSend: afterSend)
            }
        }
        return try bytes.withUnsafeBytes { try ring.put($0, deadline: deadline, check: check, afterWrite: afterWrite) }
    }

    /// Puts an item that holds descriptors (in `outbox`) or does not fit the ring through
    /// the side channel, a placeholder in the ring. Once it is in, the connection ends that
    /// moved into it are closed here.
    private func putSide(
        _ bytes: UnsafeRawBufferPointer, outbox: DescriptorOutbox?, deadline: Deadline?, check: () throws -> Void,
        afterSend: () -> Void
    ) throws -> Bool {
        // Made before any lock is taken: a large item's memory file is written meanwhile.
        let outgoing = try QueueSideChannel.Outgoing(
            bytes, descriptors: outbox?.descriptors ?? [], inlineLimit: side.inlineLimit)
        let put = try ring.putPlaceholder(
            deadline: deadline, check: check, afterSend: afterSend,
            send: { try side.trySend(outgoing, sequence: $0) },
            waitForRoom: { side.waitForRoom(deadline: $0) }, dropOrphans: side.dropAll)
        if put { outbox?.closeMoved() }
        return put
    }

    /// Encodes an item before any lock is taken, so an item that cannot be encoded fails
    /// alone.
    ///
    /// The encoder gets no descriptor outbox (a dictionary and an object less per item): a
    /// handle then refuses to encode with an `EncodingError`. Only after such an error is the
    /// item encoded again with an outbox: if that works, the item goes with its descriptors
    /// (in the outbox returned) through the side channel.
    func encode(_ item: Element) throws -> (bytes: [UInt8], outbox: DescriptorOutbox?) {
        do {
            return (try BinaryEncoder().encode(item), nil)
        } catch is EncodingError {
            let outbox = DescriptorOutbox()
            let bytes = try BinaryEncoder(userInfo: [.descriptorOutbox: outbox]).encode(item)
            return (bytes, outbox)
        }
    }

    // MARK: Get

    /// Takes the first item, waiting as long as the queue is empty.
    ///
    /// - Throws: ``QueueError/closed`` once the queue is closed and empty; a ``WireError`` if
    ///   the item's bytes do not decode as an `Element` (the item is taken).
    public func get() throws -> Element {
        // Not through the optional form: binding an `Element?` costs a metadata look-up here.
        try take(deadline: nil, check: {}, afterCopy: {})
    }

    /// Takes the first item, waiting at most `timeout` while the queue is empty (zero or
    /// negative: not at all).
    ///
    /// - Returns: `nil` if the time ran out: nothing was taken.
    /// - Throws: the errors of `get()`.
    public func get(timeout: Duration) throws -> Element? {
        try get(deadline: Optional(timeout).deadline, check: {})
    }

    /// Takes the first item; the task suspends while the queue is empty (no thread of the
    /// cooperative pool waits).
    ///
    /// - Throws: the errors of `get()`; `CancellationError` if the task is cancelled while
    ///   waiting (nothing was taken).
    public func get() async throws -> Element {
        guard let item = try await get(timeout: nil) else {
            preconditionFailure("a get without a deadline cannot time out")
        }
        return item
    }

    /// Takes the first item, waiting at most `timeout` (`nil`: as long as it takes) while the
    /// queue is empty; the task suspends meanwhile.
    ///
    /// - Returns: `nil` if the time ran out: nothing was taken.
    /// - Throws: the errors of `get()`; `CancellationError` if the task is cancelled while
    ///   waiting (nothing was taken).
    public func get(timeout: Duration?) async throws -> Element? {
        if Task.isCancelled { throw CancellationError() }
        if let item = try get(deadline: .now, check: {}) { return item }
        if let timeout, timeout <= .zero { return nil }
        let deadline = timeout.deadline
        return try await waitOnOwnThread { [self] cancellation in
            try get(deadline: deadline, check: cancellation.check)
        }
    }

    func get(
        deadline: Deadline?, check: () throws -> Void, afterCopy: () -> Void = {}, afterStep: () -> Void = {}
    ) throws -> Element? {
        do {
            return try take(deadline: deadline, check: check, afterCopy: afterCopy, afterStep: afterStep)
        } catch is TimedOut {
            return nil
        }
    }

    /// What ``take(deadline:check:afterCopy:afterStep:)`` throws when the time runs out.
    private struct TimedOut: Error {}

    /// Takes the first item, throwing ``TimedOut`` if the deadline passes first.
    private func take(
        deadline: Deadline?, check: () throws -> Void, afterCopy: () -> Void, afterStep: () -> Void = {}
    ) throws -> Element {
        if isTrivial || numberArray != nil {
            return try takeInPlace(deadline: deadline, check: check, afterCopy: afterCopy, afterStep: afterStep)
        }
        return try takeDecoded(deadline: deadline, check: check, afterCopy: afterCopy, afterStep: afterStep)
    }

    /// The get of any other item: its bytes are copied out, then decoded outside the locks;
    /// a side item with the descriptors that came with it. (A function of its own: the
    /// `Element?` below costs a metadata look-up on entry.)
    private func takeDecoded(
        deadline: Deadline?, check: () throws -> Void, afterCopy: () -> Void, afterStep: () -> Void
    ) throws -> Element {
        let item = try ring.get(
            deadline: deadline, check: check, afterCopy: afterCopy, side: side, afterStep: afterStep,
            decodeSide: { item in
                try item.withBytes {
                    try BinaryDecoder(userInfo: [.descriptorInbox: item.inbox]).decode(Element.self, from: $0)
                }
            }
        ) { bytes in
            try BinaryDecoder().decode(Element.self, from: bytes)
        }
        guard let item else { throw TimedOut() }
        return item
    }

    /// The get of a number or an array of numbers: the item is built straight from the ring's
    /// memory under the consumers' lock (one copy), a number in a word, an array in memory of
    /// its own (a generic result through closures would cost metadata look-ups, several times
    /// the copy). An array too large for the ring comes from the side channel the same way.
    private func takeInPlace(
        deadline: Deadline?, check: () throws -> Void, afterCopy: () -> Void, afterStep: () -> Void
    ) throws -> Element {
        var word: UInt64 = 0
        // Raw memory (a generic pointer, or an optional one, would cost a metadata look-up).
        var array: UnsafeMutableRawPointer?
        if numberArray != nil {
            array = .allocate(byteCount: MemoryLayout<Element>.size, alignment: MemoryLayout<Element>.alignment)
        }
        defer { array?.deallocate() }
        var built = false
        // A record of another length (no put of this element type wrote it): its bytes go to
        // the decoder, which says what is wrong with them.
        var other: [UInt8] = []
        let numberArray = numberArray
        let taken = try ring.get(
            deadline: deadline, check: check, afterCopy: afterCopy, side: side, afterStep: afterStep
        ) { first, second in
            if let numberArray, let array {
                built = numberArray.initialize(array, from: first, second)
            } else if first.count + second.count == MemoryLayout<Element>.size {
                withUnsafeMutableBytes(of: &word) { bytes in
                    bytes.copyMemory(from: first)
                    UnsafeMutableRawBufferPointer(rebasing: bytes[first.count...]).copyMemory(from: second)
                }
                built = true
            }
            if !built { other = Array(first) + Array(second) }
        }
        guard taken else { throw TimedOut() }
        guard built else { return try other.withUnsafeBytes { try BinaryDecoder().decode(Element.self, from: $0) } }
        if let array { return array.assumingMemoryBound(to: Element.self).move() }
        return Self.item(of: word)
    }

    /// The bytes of a fixed-width number (`isTrivial`), in the low bytes of a word.
    private static func word(of item: Element) -> UInt64 {
        switch MemoryLayout<Element>.size {
        case 1: UInt64(unsafeBitCast(item, to: UInt8.self))
        case 2: UInt64(unsafeBitCast(item, to: UInt16.self))
        case 4: UInt64(unsafeBitCast(item, to: UInt32.self))
        default: unsafeBitCast(item, to: UInt64.self)
        }
    }

    /// The fixed-width number (`isTrivial`) whose bytes are the low bytes of `word`: every
    /// bit pattern is one.
    private static func item(of word: UInt64) -> Element {
        switch MemoryLayout<Element>.size {
        case 1: unsafeBitCast(UInt8(truncatingIfNeeded: word), to: Element.self)
        case 2: unsafeBitCast(UInt16(truncatingIfNeeded: word), to: Element.self)
        case 4: unsafeBitCast(UInt32(truncatingIfNeeded: word), to: Element.self)
        default: unsafeBitCast(word, to: Element.self)
        }
    }

    // MARK: Close

    /// Closes the queue, for every process that holds it: later puts throw
    /// ``QueueError/closed``; gets still take the items that are in, then throw
    /// ``QueueError/closed``; every waiting put and get wakes to see it.
    ///
    /// Unlike Python's `close()`, which only stops the calling process from putting, this
    /// closes the shared queue: use it to tell consumers that no more items will come.
    public func close() {
        ring.close()
    }
}

extension QueueRing {
    /// Encodes a queue handle: the descriptors of the ring's memory and of both ends of the
    /// side channel, copies for the other process (this one keeps its own).
    func encodeHandle(side: QueueSideChannel, to encoder: any Encoder) throws {
        guard let outbox = encoder.userInfo[.descriptorOutbox] as? DescriptorOutbox else {
            throw EncodingError.invalidValue(
                capacity,
                .init(
                    codingPath: encoder.codingPath,
                    debugDescription: "a queue can only be encoded by swift-multiprocessing, for another process"))
        }
        var container = encoder.unkeyedContainer()
        try container.encode(try outbox.add(region.descriptor))
        try container.encode(try outbox.add(side.sender))
        try container.encode(try outbox.add(side.receiver))
    }

    /// The ring and side channel of a queue handle being decoded; each owns the descriptors
    /// it took.
    static func decodeHandle(from decoder: any Decoder) throws -> (QueueRing, QueueSideChannel) {
        guard let inbox = decoder.userInfo[.descriptorInbox] as? DescriptorInbox else {
            throw DecodingError.dataCorrupted(
                .init(
                    codingPath: decoder.codingPath,
                    debugDescription: "a queue can only be decoded by swift-multiprocessing"))
        }
        var container = try decoder.unkeyedContainer()
        let indices = [try container.decode(Int.self), try container.decode(Int.self), try container.decode(Int.self)]
        // Each descriptor taken has an owner at once (the region, the side channel), or is
        // closed here when the next step fails; those not taken the inbox closes.
        let region = try SharedRegion(adopting: try inbox.take(indices[0]))
        let sender = try inbox.take(indices[1])
        let receiver: FileDescriptor
        do {
            receiver = try inbox.take(indices[2])
        } catch {
            sender.closeIgnoringErrors()
            throw error
        }
        let side = QueueSideChannel(sender: sender, receiver: receiver)
        guard let ring = QueueRing(region: region) else {
            throw DecodingError.dataCorrupted(
                .init(codingPath: decoder.codingPath, debugDescription: "the shared memory received is not a queue's"))
        }
        return (ring, side)
    }
}
