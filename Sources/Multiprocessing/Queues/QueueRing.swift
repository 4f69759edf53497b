import Atomics
import CMultiprocessing
import Glibc
import Synchronization

/// The shared memory under a queue: a header, then a ring of bytes that holds the encoded
/// items as records (`[UInt32 length][payload]`, padded to 8 bytes).
///
/// Header, one cache line per part so producers and consumers do not share lines:
///
/// | offset | what |
/// |---|---|
/// | 0 | producers' robust mutex |
/// | 64 | consumers' robust mutex |
/// | 128 | tail: items put (high 32 bits) and bytes written (low 32 bits), both modulo 2³² |
/// | 192 | head: items taken and bytes read, the same way |
/// | 256 | capacity, maximum item count (0: unbounded), a magic number |
/// | 320 | closed flag |
/// | 384 | "items posted" futex word, how many consumers sleep on it, whether one wants a wake |
/// | 448 | "space posted" futex word, how many producers sleep on it, whether one wants a wake |
/// | 512 | tasks done (``JoinableQueue``), modulo 2³² |
/// | 576 | "tasks done" futex word, how many joiners sleep on it, whether one wants a wake |
/// | 640 | the last side item's sequence number (``QueueSideChannel``) |
/// | 1024 | laps: how many times the tail crossed a multiple of 2³⁰ bytes (``QueuePositionCache``) |
/// | 4096 | the ring (`capacity` bytes, a power of two) |
///
/// **One store publishes a change.** Tail packs the item count with the byte position, so a
/// producer publishes its record and the count in one atomic store, and a process killed
/// anywhere in `put` leaves either the whole record or nothing; the same for head in `get`.
/// Counts and positions are taken modulo 2³²: differences stay exact because the ring holds
/// fewer than 2³¹ bytes (and fewer items than bytes).
///
/// **No system call when nobody sleeps.** A waiter counts itself among the sleepers, raises
/// the "wanted" flag, reads the futex word, then looks at the state once more before it
/// sleeps; a side that changes the state stores it (sequentially consistent), then, only if
/// the sleeper count is not zero and it is the one to lower the flag, bumps the futex word
/// and wakes them all. Either the waiter sees the change, or the changer sees the waiter (the
/// two orders cannot both miss); and while sleepers are waking up, later changes make no
/// more system calls (each waiter that sleeps again raises the flag again).
///
/// **Each side reads the far end only when it must** (``QueuePositionCache``): a producer
/// checks for room against its process's last copy of the head, a consumer for an item
/// against its last copy of the tail, and reads the far end afresh only when the copy says
/// "full" or "empty".
struct QueueRing: Sendable {
    let region: SharedRegion
    /// How far this process's mapping of the ring is populated (see ``prepare(upTo:)``).
    private let populated: PopulatedPrefix
    /// This process's copies of the far ends.
    private let cache: QueuePositionCache
    /// Bytes in the ring: a power of two.
    let capacity: Int
    /// The most items it may hold; 0: no limit but the ring's bytes.
    let maxSize: Int

    static let defaultCapacity = 64 << 20
    static let minimumCapacity = 64
    static let maximumCapacity = 1 << 30
    static let ringOffset = 4096
    private static let magic: UInt64 = 0x4d50_5155_4555_4531  // "MPQUEUE1"

    /// How long a one-try call may wait for the other side's lock, held only for a copy.
    static let lockGrace: Duration = .milliseconds(5)
    /// The part of the ring kept in use while the queue is drained as fast as it is filled:
    /// a producer that finds the queue empty and its position past this goes back to the
    /// start of the ring (``recycle(_:)``). Without it, a queue streaming many small items
    /// sweeps through its whole ring, touching every page: first touches are expensive (a
    /// fault, zeroing, a memory cgroup charge: they were most of a producer's time with 1 KiB
    /// items here) and the pages stay in memory. With it, the memory a queue uses follows
    /// how much it held at most.
    static let hotWindow = 256 << 10
    /// A length word that says: the rest of the ring is skipped, the next record is at its
    /// start.
    static let skipMarker = UInt32.max

    /// How long a waiter looks for a change before it sleeps.
    static let spin: Duration = .microseconds(50)
    /// How many times a waiter of this process began to look (for the tests).
    static let looksBegun = Atomic<Int>(0)

    private enum Offset {
        static let producers = 0
        static let consumers = 64
        static let tail = 128
        static let head = 192
        static let capacity = 256
        static let maxSize = 264
        static let magic = 272
        static let closed = 320
        static let itemsPosted = 384
        static let itemSleepers = 388
        static let itemsWanted = 392
        static let spacePosted = 448
        static let spaceSleepers = 452
        static let spaceWanted = 456
        static let tasksDone = 512
        static let tasksPosted = 576
        static let joinSleepers = 580
        static let tasksWanted = 584
        static let sideSequence = 640
        static let laps = 1024
    }

    /// The capacity actually used for a requested one: a power of two, within bounds.
    static func roundedCapacity(_ requested: Int) -> Int {
        precondition(requested <= maximumCapacity, "a queue holds at most \(maximumCapacity) bytes")
        var capacity = minimumCapacity
        while capacity < requested { capacity <<= 1 }
        return capacity
    }

    /// A new, empty ring.
    init(capacity requested: Int, maxSize: Int) throws {
        let capacity = Self.roundedCapacity(requested)
        region = try SharedRegion(size: Self.ringOffset + capacity)
        self.capacity = capacity
        self.maxSize = maxSize
        populated = PopulatedPrefix()
        cache = QueuePositionCache()
        _ = ProcessMutex.initialize(at: region.base + Offset.producers)
        _ = ProcessMutex.initialize(at: region.base + Offset.consumers)
        atomic64(Offset.capacity).store(UInt64(capacity), ordering: .relaxed)
        atomic64(Offset.maxSize).store(UInt64(maxSize), ordering: .relaxed)
        atomic64(Offset.magic).store(Self.magic, ordering: .sequentiallyConsistent)
    }

    /// The ring of a handle received from another process; `nil` if the memory is not a
    /// queue's.
    init?(region: SharedRegion) {
        guard region.size > Self.ringOffset else { return nil }
        func load(_ offset: Int) -> UInt64 {
            UnsafeAtomic<UInt64>(at: (region.base + offset).assumingMemoryBound(to: UInt64.AtomicRepresentation.self))
                .load(ordering: .sequentiallyConsistent)
        }
        let capacity = Int(truncatingIfNeeded: load(Offset.capacity))
        guard load(Offset.magic) == Self.magic, capacity == region.size - Self.ringOffset else { return nil }
        self.region = region
        self.capacity = capacity
        populated = PopulatedPrefix()
        cache = QueuePositionCache()
        maxSize = Int(truncatingIfNeeded: load(Offset.maxSize))
    }

    // MARK: Memory

    private func atomic64(_ offset: Int) -> UnsafeAtomic<UInt64> {
        UnsafeAtomic(at: (region.base + offset).assumingMemoryBound(to: UInt64.AtomicRepresentation.self))
    }

    private func atomic32(_ offset: Int) -> UnsafeAtomic<UInt32> {
        UnsafeAtomic(at: (region.base + offset).assumingMemoryBound(to: UInt32.AtomicRepresentation.self))
    }

    private func futex(_ offset: Int) -> UnsafeMutablePointer<UInt32> {
        (region.base + offset).assumingMemoryBound(to: UInt32.self)
    }

    private var producers: ProcessMutex { ProcessMutex(at: region.base + Offset.producers) }
    private var consumers: ProcessMutex { ProcessMutex(at: region.base + Offset.consumers) }
    private var ring: UnsafeMutableRawPointer { region.base + Self.ringOffset }

    /// Items and bytes that went through one end, modulo 2³².
    private struct Position: Equatable {
        var items: UInt32
        var bytes: UInt32

        init(_ word: UInt64) {
            items = UInt32(truncatingIfNeeded: word >> 32)
            bytes = UInt32(truncatingIfNeeded: word)
        }

        init(items: UInt32, bytes: UInt32) {
            self.items = items
            self.bytes = bytes
        }

        var word: UInt64 { UInt64(items) << 32 | UInt64(bytes) }
    }

    private var tail: Position { Position(atomic64(Offset.tail).load(ordering: .sequentiallyConsistent)) }
    private var head: Position { Position(atomic64(Offset.head).load(ordering: .sequentiallyConsistent)) }

    /// The bytes a record of `length` payload bytes takes: its length word, the payload, and
    /// padding to 8 bytes (so a length word never straddles the end of the ring).
    static func recordSize(_ length: Int) -> Int {
        (4 + length + 7) & ~7
    }

    // MARK: State

    /// Items in the ring now (read without the locks: it may change at once).
    var count: Int {
        let head = head
        return Int(tail.items &- head.items)
    }

    var isClosed: Bool { atomic32(Offset.closed).load(ordering: .sequentiallyConsistent) != 0 }

    /// Whether a record of `size` bytes fits now, and the item count allows one more.
    private func hasRoom(for size: Int, head: Position, tail: Position) -> Bool {
        let used = Int(tail.bytes &- head.bytes)
        let count = Int(tail.items &- head.items)
        return capacity - used >= size && (maxSize == 0 || count < maxSize)
    }

    /// Whether `put` would wait now for an item of `size` payload bytes.
    func isFull(forPayload size: Int = 0) -> Bool {
        !hasRoom(for: Self.recordSize(size), head: head, tail: tail)
    }

    // MARK: Put and get

    /// Copies one record into the ring, waiting for room until `deadline` (`nil`: forever).
    /// `check` runs between sleeps; what it throws ends the wait with nothing put.
    /// `afterWrite` runs holding the producers' lock, the record written and not yet
    /// published (a hook for tests that kill a producer there).
    ///
    /// The record must ``fits(payload:)``; larger items go through the side channel.
    ///
    /// - Returns: `false` if the time ran out (nothing was put).
    /// - Throws: ``QueueError/closed``.
    func put(
        _ payload: UnsafeRawBufferPointer, deadline: Deadline?, check: () throws -> Void, afterWrite: () -> Void = {}
    ) throws -> Bool {
        let size = Self.recordSize(payload.count)
        precondition(size <= capacity / 2, "swift-multiprocessing: a queue record larger than half its ring")
        var looking = true
        while true {
            guard try lock(producers, deadline: deadline, check: check) else { return false }
            FaultInjection.step("queue.put.locked")
            if isClosed {
                producers.unlock()
                throw QueueError.closed
            }
            var tail = tail
            var (head, isFresh) = producersHead()
            if !isFresh && !hasRoom(for: size, head: head, tail: tail) { head = freshHead() }
            if hasRoom(for: size, head: head, tail: tail) {
                // The record must fit before the marker even if the head is not stepped over it.
                let offset = Int(tail.bytes) & (capacity - 1)
                if offset >= Self.hotWindow && size <= offset {
                    // Is the queue empty? Asked of the head itself at each put out here (a
                    // stale copy would say no): a consumer keeping pace leaves it empty only
                    // now and then, and each put that misses it sweeps on into new pages.
                    if tail.bytes != head.bytes { head = freshHead() }
                    if tail.bytes == head.bytes { tail = recycle(tail) }
                }
                prepare(upTo: (Int(tail.bytes) & (capacity - 1)) + size)
                write(payload, at: Int(tail.bytes))
                afterWrite()
                FaultInjection.step("queue.put.afterCopy")
                let next = Position(items: tail.items &+ 1, bytes: tail.bytes &+ UInt32(size))
                publishTail(next, after: tail)
                FaultInjection.step("queue.put.afterPublish")
                producers.unlock()
                FaultInjection.step("queue.put.afterUnlock")
                post(Offset.itemsPosted, sleepers: Offset.itemSleepers, wanted: Offset.itemsWanted)
                return true
            }
            producers.unlock()
            if deadline.hasPassed { return false }
            try sleep(
                on: Offset.spacePosted, sleepers: Offset.spaceSleepers, wanted: Offset.spaceWanted, deadline: deadline,
                looking: &looking, check: check
            ) {
                // Fresh reads of both ends (not the ones above): the look before sleeping must
                // see a get that happened since.
                hasRoom(for: size, head: self.head, tail: self.tail)
            }
        }
    }

    /// Takes the oldest record, waiting for one until `deadline` (`nil`: forever), and hands
    /// its payload to `body` once the locks are released. `check` runs between sleeps; what it
    /// throws ends the wait with nothing taken. `afterCopy` runs holding the consumers' lock,
    /// the record copied and not yet taken (a hook for tests that kill a consumer there).
    ///
    /// A placeholder record stands for an item of the `side` channel: that item is handed to
    /// `decodeSide` instead (see ``takePlaceholder(_:side:afterCopy:afterStep:)``).
    /// `afterStep` runs holding the consumers' lock, a placeholder stepped over and its
    /// datagram not yet dropped (a hook for tests that kill a consumer there).
    ///
    /// - Returns: what `body` returns; `nil` if the time ran out (nothing was taken).
    /// - Throws: ``QueueError/closed`` once the queue is closed and empty; what `body` throws.
    func get<Result>(
        deadline: Deadline?, check: () throws -> Void, afterCopy: () -> Void = {}, side: QueueSideChannel? = nil,
        afterStep: () -> Void = {},
        decodeSide: (QueueSideChannel.Incoming) throws -> Result = { _ in preconditionFailure("no side channel") },
        _ body: (UnsafeRawBufferPointer) throws -> Result
    ) throws -> Result? {
        while true {
            guard let record = try nextRecord(deadline: deadline, check: check) else { return nil }
            if record.isPlaceholder {
                // Unlocks the consumers' lock.
                guard
                    let item = try takePlaceholder(
                        record, side: side, afterCopy: afterCopy, afterStep: afterStep)
                else { continue }
                return try decodeSide(item)
            }
            return try withUnsafeTemporaryAllocation(byteCount: max(record.length, 1), alignment: 16) { buffer in
                let bytes = UnsafeMutableRawBufferPointer(rebasing: buffer[..<record.length])
                read(into: bytes, at: record.offset + 4)
                afterCopy()
                FaultInjection.step("queue.get.afterCopy")
                take(record)
                return try body(UnsafeRawBufferPointer(bytes))
            }
        }
    }

    /// Takes the oldest record like
    /// ``get(deadline:check:afterCopy:side:afterStep:decodeSide:_:)``, but hands `read` its
    /// payload where it lies in the ring, holding the consumers' lock: in two parts where it
    /// wraps (the second one empty otherwise). For payloads that `read` copies at once (a
    /// number, an array of numbers): one copy instead of two, and nothing generic on the way
    /// (a generic result would cost metadata look-ups several times the copy). An item of the
    /// side channel (an array too large for the ring) is handed to `read` in one part, once
    /// the lock is released.
    ///
    /// - Returns: `false` if the time ran out (nothing was taken).
    /// - Throws: ``QueueError/closed`` once the queue is closed and empty; what reading a side
    ///   item's datagram throws (nothing is taken then).
    func get(
        deadline: Deadline?, check: () throws -> Void, afterCopy: () -> Void = {}, side: QueueSideChannel? = nil,
        afterStep: () -> Void = {}, inPlace read: (UnsafeRawBufferPointer, UnsafeRawBufferPointer) -> Void
    ) throws -> Bool {
        var found: Record?
        while found == nil {
            guard let record = try nextRecord(deadline: deadline, check: check) else { return false }
            if !record.isPlaceholder {
                found = record
                continue
            }
            // Unlocks the consumers' lock.
            if let item = try takePlaceholder(record, side: side, afterCopy: afterCopy, afterStep: afterStep) {
                item.withBytes { read($0, UnsafeRawBufferPointer(start: nil, count: 0)) }
                return true
            }
        }
        guard let record = found else { return false }
        let start = (record.offset + 4) & (capacity - 1)
        let first = min(record.length, capacity - start)
        read(
            UnsafeRawBufferPointer(start: ring + start, count: first),
            UnsafeRawBufferPointer(start: ring, count: record.length - first))
        afterCopy()
        FaultInjection.step("queue.get.afterCopy")
        take(record)
        return true
    }

    /// A record found at the head, the consumers' lock held.
    private struct Record {
        var head: Position
        /// The tail it was found below (the consumers' copy, or the tail itself).
        var tail: Position
        /// Where its length word lies in the ring.
        var offset: Int
        /// Payload bytes.
        var length: Int
        /// Whether it stands for an item of the side channel (``placeholderFlag``).
        var isPlaceholder: Bool
    }

    /// Waits until `deadline` for a record at the head and returns it holding the consumers'
    /// lock; `nil` (the lock not held) if the time ran out.
    private func nextRecord(deadline: Deadline?, check: () throws -> Void) throws -> Record? {
        var looking = true
        while true {
            guard try lock(consumers, deadline: deadline, check: check) else { return nil }
            FaultInjection.step("queue.get.locked")
            // Closed is read before tail: every put that finished before the close is then seen
            // (a copy of the tail is used only when it shows an item).
            let closed = isClosed
            let head = head
            let tail = consumersTail(head: head)
            if head != tail {
                let offset = Int(head.bytes) & (capacity - 1)
                let length = Int(ring.load(fromByteOffset: offset, as: UInt32.self))
                if UInt32(length) == Self.skipMarker {
                    // The rest of the ring was skipped (`recycle`): step over it, then look again.
                    let next = Position(items: head.items, bytes: head.bytes &+ UInt32(capacity - offset))
                    atomic64(Offset.head).store(next.word, ordering: .sequentiallyConsistent)
                    FaultInjection.step("queue.get.afterSkip")
                    consumers.unlock()
                    continue
                }
                let isPlaceholder = UInt32(length) & Self.placeholderFlag != 0
                let payload = Int(UInt32(length) & ~Self.placeholderFlag)
                precondition(
                    Self.recordSize(payload) <= Int(tail.bytes &- head.bytes),
                    "swift-multiprocessing: a queue's memory is corrupt")
                return Record(head: head, tail: tail, offset: offset, length: payload, isPlaceholder: isPlaceholder)
            }
            consumers.unlock()
            if closed { throw QueueError.closed }
            if deadline.hasPassed { return nil }
            try sleep(
                on: Offset.itemsPosted, sleepers: Offset.itemSleepers, wanted: Offset.itemsWanted, deadline: deadline,
                looking: &looking, check: check
            ) {
                self.head != self.tail
            }
        }
    }

    /// Takes `record` (one store publishes the new head), releases the consumers' lock and
    /// wakes producers waiting for room.
    private func take(_ record: Record) {
        let next = Position(
            items: record.head.items &+ 1, bytes: record.head.bytes &+ UInt32(Self.recordSize(record.length)))
        atomic64(Offset.head).store(next.word, ordering: .sequentiallyConsistent)
        FaultInjection.step("queue.get.afterStep")
        consumers.unlock()
        FaultInjection.step("queue.get.afterUnlock")
        post(Offset.spacePosted, sleepers: Offset.spaceSleepers, wanted: Offset.spaceWanted)
    }

    // MARK: Copies of the far ends

    /// The lap count: how many times the tail crossed a multiple of 2³⁰ bytes, modulo 2³².
    private var laps: UInt32 { atomic32(Offset.laps).load(ordering: .sequentiallyConsistent) }

    /// Publishes the tail `next` (one store), after counting a lap if it crosses a multiple
    /// of 2³⁰ bytes from `tail` (each step is less than that: at most one). The lap is counted
    /// first: a producer killed in between leaves one lap too many, which only makes every
    /// copy read afresh once. Called holding the producers' lock.
    ///
    /// The store is sequentially consistent, not just a release: a consumer about to sleep
    /// counts itself among the sleepers and then looks at the tail, and `post` reads the
    /// sleeper count after this store; without a full fence between the store and that read
    /// on this side (the store-load pattern of Dekker's algorithm), both could miss the other.
    /// On x86-64 the `xchg` this compiles to is that fence, and costs about what the store
    /// would: the unlock right after is a locked instruction that drains the store buffer
    /// anyway.
    private func publishTail(_ next: Position, after tail: Position) {
        if tail.bytes >> 30 != next.bytes >> 30 {
            atomic32(Offset.laps).wrappingIncrement(ordering: .sequentiallyConsistent)
        }
        atomic64(Offset.tail).store(next.word, ordering: .sequentiallyConsistent)
    }

    /// The head for a put to check for room against (holding the producers' lock): this
    /// process's copy if it is usable, else the head itself; and whether it is the head itself.
    /// A copy is never ahead of the head, so it never shows room that is not there: with the
    /// lap count unchanged, the tail moved less than 2³¹ bytes since the copy was taken, the
    /// copy was at most the ring's size behind the tail then, so the true used bytes and the
    /// ones computed from the copy differ by less than 2³² and modular arithmetic is exact.
    private func producersHead() -> (Position, isFresh: Bool) {
        if cache.headLap.load(ordering: .relaxed) == UInt64(laps) {
            return (Position(cache.head.load(ordering: .relaxed)), false)
        }
        return (freshHead(), true)
    }

    /// Reads the head itself and keeps a copy (holding the producers' lock).
    private func freshHead() -> Position {
        let laps = laps
        let head = head
        cache.head.store(head.word, ordering: .relaxed)
        cache.headLap.store(UInt64(laps), ordering: .relaxed)
        return head
    }

    /// The tail for a get to look for an item below (holding the consumers' lock), `head`
    /// being the head: this process's copy if it is usable and shows an item, else the tail
    /// itself (copied). The copy may be behind the head (other processes' consumers took the
    /// items up to it, or a producer stepped the head over a skipped end): with the lap count
    /// unchanged (read before the tail it counts, so it may count one crossing more than the
    /// copy has seen) the tail moved less than 2³¹ bytes since, so `copy - head` read as a
    /// signed number says which is ahead.
    private func consumersTail(head: Position) -> Position {
        let laps = laps
        if cache.tailLap.load(ordering: .relaxed) == UInt64(laps) {
            let copy = Position(cache.tail.load(ordering: .relaxed))
            if Int32(bitPattern: copy.bytes &- head.bytes) > 0 { return copy }
        }
        let tail = tail
        cache.tail.store(tail.word, ordering: .relaxed)
        cache.tailLap.store(UInt64(laps), ordering: .relaxed)
        return tail
    }

    /// Closes the ring: later puts throw, gets throw once it is empty, and every sleeper wakes.
    func close() {
        // Under the producers' lock: a put either finished before (its item is seen by the
        // gets that drain the queue) or sees the flag.
        _ = lock(producers, deadline: nil, check: {})
        FaultInjection.step("queue.close.locked")
        atomic32(Offset.closed).store(1, ordering: .sequentiallyConsistent)
        FaultInjection.step("queue.close.afterFlag")
        producers.unlock()
        FaultInjection.step("queue.close.beforeWake")
        for word in [Offset.itemsPosted, Offset.spacePosted] {
            atomic32(word).wrappingIncrement(ordering: .sequentiallyConsistent)
            _ = mp_futex_wake(futex(word), Int32.max)
        }
    }

    /// Goes back to the start of the ring while the queue is empty (called holding the
    /// producers' lock, with head at `tail`), so that a queue holding little keeps using the
    /// same few pages (``hotWindow``). Returns the new tail.
    ///
    /// Two steps, each one store that leaves the ring consistent if the process dies after it:
    /// a marker ("the rest of the ring is skipped") is written and published as part of the
    /// tail, so a consumer steps over it; then, if no consumer is busy, the producer steps
    /// the head over it too, so the whole ring is free again at once.
    private func recycle(_ tail: Position) -> Position {
        let offset = Int(tail.bytes) & (capacity - 1)
        ring.storeBytes(of: Self.skipMarker, toByteOffset: offset, as: UInt32.self)
        let next = Position(items: tail.items, bytes: tail.bytes &+ UInt32(capacity - offset))
        publishTail(next, after: tail)
        FaultInjection.step("queue.recycle.afterMarker")
        // Never waits for the consumers' lock (consumers never take the producers'): a busy
        // consumer steps over the marker itself.
        guard let acquisition = try? consumers.tryLock() else { return next }
        if acquisition == .previousOwnerDied { consumers.markConsistent() }
        FaultInjection.step("queue.recycle.holdingConsumers")
        let head = head
        if head.bytes == tail.bytes {
            // The consumers' copies of the tail are now behind the head: they see so (the copy
            // is used only while ahead of the head) and read the tail afresh.
            atomic64(Offset.head).store(
                Position(items: head.items, bytes: next.bytes).word, ordering: .sequentiallyConsistent)
            FaultInjection.step("queue.recycle.afterHeadStep")
        }
        consumers.unlock()
        return next
    }

    /// Puts both ends of an empty ring at `bytes` and `items` and the lap count at `laps`, as
    /// if that much had gone through it: for tests of the counters' wrap-around.
    func jump(toBytes bytes: UInt32, items: UInt32, laps: UInt32) {
        precondition(count == 0, "only an empty ring can jump")
        let word = Position(items: items, bytes: bytes).word
        atomic64(Offset.head).store(word, ordering: .sequentiallyConsistent)
        atomic64(Offset.tail).store(word, ordering: .sequentiallyConsistent)
        atomic32(Offset.laps).store(laps, ordering: .sequentiallyConsistent)
    }

    // MARK: Tasks

    /// Items put and not yet marked done (``JoinableQueue``).
    var unfinishedTasks: Int {
        let done = atomic32(Offset.tasksDone).load(ordering: .sequentiallyConsistent)
        return Int(tail.items &- done)
    }

    /// Marks one task done; `false` (nothing changed) if every item put is done already.
    func taskDone() -> Bool {
        let done = atomic32(Offset.tasksDone)
        while true {
            let seen = done.load(ordering: .sequentiallyConsistent)
            if seen == tail.items { return false }
            if done.compareExchange(expected: seen, desired: seen &+ 1, ordering: .sequentiallyConsistent).exchanged {
                FaultInjection.step("queue.taskDone.afterCount")
                if seen &+ 1 == tail.items {
                    post(Offset.tasksPosted, sleepers: Offset.joinSleepers, wanted: Offset.tasksWanted)
                }
                return true
            }
        }
    }

    /// Waits until every item put is marked done; `false` if the deadline passed first.
    func join(deadline: Deadline?, check: () throws -> Void) rethrows -> Bool {
        var looking = true
        while unfinishedTasks != 0 {
            if deadline.hasPassed { return false }
            FaultInjection.step("queue.join.waiting")
            try sleep(
                on: Offset.tasksPosted, sleepers: Offset.joinSleepers, wanted: Offset.tasksWanted, deadline: deadline,
                looking: &looking, check: check
            ) {
                unfinishedTasks == 0
            }
        }
        return true
    }

    // MARK: Waiting

    /// Takes `mutex` until `deadline` (`nil`: forever), at least ``lockGrace`` from now: the
    /// lock is only held for a copy. A holder that died hands it on (the robust mutex): the
    /// ring is consistent at every instant a process can die, since nothing is published
    /// before it is whole. `false` on timeout.
    private func lock(_ mutex: ProcessMutex, deadline: Deadline?, check: () throws -> Void) rethrows -> Bool {
        do throws(ProcessMutex.Failure) {
            if let acquisition = try mutex.tryLock() {
                if acquisition == .previousOwnerDied { mutex.markConsistent() }
                return true
            }
        } catch {
            preconditionFailure("swift-multiprocessing: a queue's lock failed: \(error)")
        }
        return try lockWaiting(mutex, deadline: deadline, check: check)
    }

    /// The rest of ``lock(_:deadline:check:)`` once the mutex was found taken: a function of
    /// its own, so that the path of every item does not set up the deadlines' values (a
    /// type of another module, copied through its value witnesses).
    @inline(never)
    private func lockWaiting(_ mutex: ProcessMutex, deadline: Deadline?, check: () throws -> Void) rethrows -> Bool {
        let lockDeadline = deadline.map { max($0, ContinuousClock.now.advanced(by: Self.lockGrace)) }
        while true {
            let sliceEnd = ContinuousClock.now.advanced(by: SharedMonitor.slice)
            do throws(ProcessMutex.Failure) {
                let acquisition = try mutex.lock(deadline: lockDeadline.map { min($0, sliceEnd) } ?? sliceEnd)
                if acquisition == .previousOwnerDied { mutex.markConsistent() }
                return true
            } catch .timedOut {
                if lockDeadline.hasPassed { return false }
            } catch {
                preconditionFailure("swift-multiprocessing: a queue's lock failed: \(error)")
            }
            try check()
        }
    }

    /// Sleeps on a futex word at most one slice (and not past `deadline`), unless `ready`
    /// (or the queue is closed) once this waiter is counted among the sleepers.
    private func sleep(
        on word: Int, sleepers: Int, wanted: Int, deadline: Deadline?, looking: inout Bool, check: () throws -> Void,
        until ready: () -> Bool
    ) rethrows {
        // Waking a sleeping CPU costs tens of microseconds, many times an item's cost: look
        // for a while first, yielding the CPU between looks, so a busy queue never sleeps.
        // A wait that already slept a whole slice with nothing coming is on a quiet queue:
        // it stops looking (a relay thread waiting on its queue for minutes looked for 50 µs
        // every slice, yielding to whatever else ran: the workers of a CPU-bound map).
        if looking {
            Self.looksBegun.add(1, ordering: .relaxed)
            let spinEnd = min(ContinuousClock.now.advanced(by: Self.spin), deadline ?? .now.advanced(by: Self.spin))
            repeat {
                if ready() || isClosed { return }
                sched_yield()
            } while ContinuousClock.now < spinEnd
        } else if ready() || isClosed {
            return
        }
        let count = atomic32(sleepers)
        count.wrappingIncrement(ordering: .sequentiallyConsistent)
        atomic32(wanted).store(1, ordering: .sequentiallyConsistent)
        // Counted among the sleepers and not sleeping: a waiter that dies here leaves the
        // count one too high for good, which only costs the other side a futex wake per post.
        FaultInjection.step("queue.wait.counted")
        let seen = atomic32(word).load(ordering: .sequentiallyConsistent)
        if !ready() && !isClosed {
            let sliceEnd = ContinuousClock.now.advanced(by: SharedMonitor.slice)
            var until = monotonicTime(of: deadline.map { min($0, sliceEnd) } ?? sliceEnd)
            if mp_futex_wait(futex(word), seen, &until) == ETIMEDOUT { looking = false }
        }
        count.wrappingDecrement(ordering: .sequentiallyConsistent)
        try check()
    }

    /// After a change: wakes the sleepers on `word`, if there are any and no change since they
    /// last slept has woken them already (no system call otherwise).
    private func post(_ word: Int, sleepers: Int, wanted: Int) {
        guard atomic32(sleepers).load(ordering: .sequentiallyConsistent) != 0,
            atomic32(wanted).exchange(0, ordering: .sequentiallyConsistent) != 0
        else { return }
        atomic32(word).wrappingIncrement(ordering: .sequentiallyConsistent)
        _ = mp_futex_wake(futex(word), Int32.max)
    }

    // MARK: Copies

    /// Populates this process's mapping of the ring ahead of the producer, in chunks of up to
    /// ``populateChunk``,
    /// the first time it writes there: one `madvise(MADV_POPULATE_WRITE)` (Linux 5.14) per
    /// chunk costs much less than a page fault per page. Nothing to do once the ring has been
    /// swept; on an older kernel the call fails and the pages fault in one by one as before.
    private func prepare(upTo end: Int) {
        let done = populated.offset.load(ordering: .relaxed)
        guard end > done, done < capacity else { return }
        // Growing chunks: a queue that holds little populates little.
        let chunk = min(max(done, 64 << 10), Self.populateChunk, capacity - done)
        _ = madvise(ring + done, chunk, 23 /* MADV_POPULATE_WRITE */)
        populated.offset.store(done + chunk, ordering: .relaxed)
    }

    /// The largest chunk populated at once.
    static let populateChunk = 1 << 20

    /// Writes a record (length word, payload) at byte position `position`, in two parts
    /// where it wraps.
    private func write(_ payload: UnsafeRawBufferPointer, at position: Int) {
        let offset = position & (capacity - 1)
        ring.storeBytes(of: UInt32(payload.count), toByteOffset: offset, as: UInt32.self)
        guard let source = payload.baseAddress, !payload.isEmpty else { return }
        let start = (offset + 4) & (capacity - 1)
        let first = min(payload.count, capacity - start)
        (ring + start).copyMemory(from: source, byteCount: first)
        if first < payload.count { ring.copyMemory(from: source + first, byteCount: payload.count - first) }
    }

    /// Reads `buffer.count` bytes starting at ring offset `offset` (which may be past the end:
    /// it wraps), in two parts where it wraps.
    private func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int) {
        guard let target = buffer.baseAddress, !buffer.isEmpty else { return }
        let start = offset & (capacity - 1)
        let first = min(buffer.count, capacity - start)
        target.copyMemory(from: ring + start, byteCount: first)
        if first < buffer.count { target.advanced(by: first).copyMemory(from: ring, byteCount: buffer.count - first) }
    }
}

/// How far a mapping of a ring has been populated. Only producers of this process move it,
/// under the producers' lock; a race could only populate a chunk twice.
final class PopulatedPrefix: Sendable {
    let offset = Atomic<Int>(0)
}

// MARK: Side items

extension QueueRing {
    /// The flag of a length word that makes the record a placeholder: its payload is the
    /// sequence number of a datagram of the queue's ``QueueSideChannel``, which holds the item.
    /// Real lengths are below 2³¹ (the ring holds at most 1 GiB).
    static let placeholderFlag: UInt32 = 1 << 31

    /// Whether an item of `count` bytes can be a record of the ring: at most half the ring,
    /// so that a record always fits once the ring drains.
    func fits(payload count: Int) -> Bool {
        Self.recordSize(count) <= capacity / 2
    }

    /// Puts a side item: holding the producers' lock, with room in the ring for its
    /// placeholder, `send` sends its datagram numbered with the next sequence number (`false`:
    /// the socket has no room now, nothing sent), then the placeholder is published, so the
    /// ring and the socket keep the same order. Waits (for room in the ring, or in the socket
    /// with `waitForRoom`, the lock released) until `deadline`. `afterSend` runs holding the
    /// lock, the datagram sent and the placeholder not yet published (a hook for tests that
    /// kill a producer there). `dropOrphans` drops every datagram in the socket and says how
    /// many there were: called when the socket is full and the ring holds no item, so they
    /// can only be orphans.
    ///
    /// - Returns: `false` if the time ran out (nothing was put).
    /// - Throws: ``QueueError/closed``; what `send` throws (nothing was put).
    func putPlaceholder(
        deadline: Deadline?, check: () throws -> Void, afterSend: () -> Void = {}, send: (UInt64) throws -> Bool,
        waitForRoom: (Deadline?) -> Void, dropOrphans: () -> Int
    ) throws -> Bool {
        let size = Self.recordSize(8)
        var looking = true
        while true {
            guard try lock(producers, deadline: deadline, check: check) else { return false }
            FaultInjection.step("queue.putSide.locked")
            if isClosed {
                producers.unlock()
                throw QueueError.closed
            }
            var tail = tail
            let head = head
            if hasRoom(for: size, head: head, tail: tail) {
                // A number is never used twice, even when the send fails or its producer dies:
                // consumers only compare them.
                let counter = atomic64(Offset.sideSequence)
                let sequence = counter.load(ordering: .sequentiallyConsistent) &+ 1
                counter.store(sequence, ordering: .sequentiallyConsistent)
                FaultInjection.step("queue.putSide.numbered")
                let sent: Bool
                do {
                    sent = try send(sequence)
                } catch {
                    producers.unlock()
                    throw error
                }
                if sent {
                    afterSend()
                    FaultInjection.step("queue.putSide.afterSend")
                    let offset = Int(tail.bytes) & (capacity - 1)
                    if tail.bytes == head.bytes && offset >= Self.hotWindow && size <= offset {
                        tail = recycle(tail)
                    }
                    prepare(upTo: (Int(tail.bytes) & (capacity - 1)) + size)
                    withUnsafeBytes(of: sequence) { write($0, at: Int(tail.bytes)) }
                    ring.storeBytes(
                        of: Self.placeholderFlag | 8, toByteOffset: Int(tail.bytes) & (capacity - 1), as: UInt32.self)
                    FaultInjection.step("queue.putSide.afterCopy")
                    let next = Position(items: tail.items &+ 1, bytes: tail.bytes &+ UInt32(size))
                    publishTail(next, after: tail)
                    FaultInjection.step("queue.putSide.afterPublish")
                    producers.unlock()
                    FaultInjection.step("queue.putSide.afterUnlock")
                    post(Offset.itemsPosted, sleepers: Offset.itemSleepers, wanted: Offset.itemsWanted)
                    return true
                }
                // The socket is full. Of orphans only, if the ring holds no item: producers killed
                // between send and publish could otherwise fill it for good. Holding both locks,
                // no placeholder can appear or be half taken, so every datagram is an orphan.
                if self.head.items == tail.items, let acquisition = try? consumers.tryLock() {
                    if acquisition == .previousOwnerDied { consumers.markConsistent() }
                    FaultInjection.step("queue.putSide.droppingOrphans")
                    let dropped = self.head.items == tail.items ? dropOrphans() : 0
                    consumers.unlock()
                    if dropped > 0 {
                        producers.unlock()
                        continue
                    }
                }
                // Otherwise it is full of unread side items: wait for a consumer without the lock
                // (ring items may still go in meanwhile), a slice at a time to run `check`.
                producers.unlock()
                if deadline.hasPassed { return false }
                let sliceEnd = ContinuousClock.now.advanced(by: SharedMonitor.slice)
                waitForRoom(deadline.map { min($0, sliceEnd) } ?? sliceEnd)
                try check()
                continue
            }
            producers.unlock()
            if deadline.hasPassed { return false }
            try sleep(
                on: Offset.spacePosted, sleepers: Offset.spaceSleepers, wanted: Offset.spaceWanted, deadline: deadline,
                looking: &looking, check: check
            ) {
                hasRoom(for: size, head: self.head, tail: self.tail)
            }
        }
    }

    /// Takes the placeholder record at ring offset `offset` (the head), called holding the
    /// consumers' lock, which it releases: copies its item out of the side channel (leaving
    /// the datagram queued), steps the head over the record, then drops the datagram.
    /// A process killed before the step leaves the item in the queue; after it, an orphan
    /// datagram that the next consumer drops.
    ///
    /// - Returns: the item; `nil` if its datagram was gone (the placeholder is skipped).
    /// - Throws: what ``QueueSideChannel/peek(sequence:)`` throws; nothing is taken then.
    private func takePlaceholder(
        _ record: Record, side: QueueSideChannel?, afterCopy: () -> Void, afterStep: () -> Void
    ) throws -> QueueSideChannel.Incoming? {
        let (offset, head, tail) = (record.offset, record.head, record.tail)
        let size = Self.recordSize(8)
        guard let side, record.length == 8, size <= Int(tail.bytes &- head.bytes) else {
            preconditionFailure("swift-multiprocessing: a queue's memory is corrupt")
        }
        var sequence: UInt64 = 0
        withUnsafeMutableBytes(of: &sequence) { read(into: $0, at: offset + 4) }
        let item: QueueSideChannel.Incoming?
        do {
            item = try side.peek(sequence: sequence)
        } catch {
            consumers.unlock()
            throw error
        }
        afterCopy()
        FaultInjection.step("queue.getSide.afterPeek")
        let next = Position(items: head.items &+ 1, bytes: head.bytes &+ UInt32(size))
        atomic64(Offset.head).store(next.word, ordering: .sequentiallyConsistent)
        afterStep()
        FaultInjection.step("queue.getSide.afterStep")
        if item != nil { side.dropFront() }
        FaultInjection.step("queue.getSide.afterDrop")
        consumers.unlock()
        post(Offset.spacePosted, sleepers: Offset.spaceSleepers, wanted: Offset.spaceWanted)
        return item
    }
}
