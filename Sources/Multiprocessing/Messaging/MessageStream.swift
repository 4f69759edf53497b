import Glibc
import Synchronization
import SystemPackage

/// One received message: its payload and the descriptors that came with it (owned by the
/// receiver, which must close the ones it does not keep).
struct Frame: Sendable {
    var payload: [UInt8]
    var descriptors: [FileDescriptor]
}

/// One end of a stream socket carrying framed messages (``FrameHeader``): the engine under
/// every connection and the channel between a parent and each child.
///
/// - Messages keep their boundaries, and a reader never takes half a message: bytes are
///   read into this object, and only whole messages leave it. A wait that times out in the
///   middle of a message keeps what arrived for the next call.
/// - No lock is held while waiting: blocking callers `poll(2)`, `async` callers suspend on
///   the ``Reactor``; both then read or write without blocking under a short lock.
/// - Closing defers the `close(2)` until no call is using the descriptor, so a number that
///   the kernel hands out again can never be read or written by mistake.
final class MessageStream: Sendable {
    /// The largest payload accepted in either direction.
    let maximumMessageSize: Int
    private let descriptor: FileDescriptor
    /// Bit 0: closed. The rest: twice the number of calls using the descriptor. One word,
    /// so entering and leaving a call is one atomic operation, not a lock.
    private let lifecycle = Atomic<Int>(0)
    private let reader = Mutex(Reader())
    private let writer = Mutex(Writer())

    /// Payloads up to this size are read through the shared buffer; larger ones are read
    /// straight into their own array, so a 1 MiB message is copied once, by the kernel.
    static let chunkSize = 64 * 1024

    /// A message with more than this left to arrive is read straight into its array (one
    /// copy, by the kernel) rather than through the buffer (two).
    static let directReadThreshold = 16 * 1024

    init(descriptor: FileDescriptor, maximumMessageSize: Int) {
        encoder = BinaryEncoder(userInfo: [.descriptorOutbox: outbox])
        self.descriptor = descriptor
        self.maximumMessageSize = min(maximumMessageSize, FrameHeader.maximumLength)
    }

    deinit {
        if !isClosed { descriptor.closeIgnoringErrors() }
        reader.withLock { $0.release() }
    }

    // MARK: Lifecycle

    var isClosed: Bool { lifecycle.load(ordering: .acquiring) & 1 != 0 }

    /// The raw descriptor, for handing this end to a child. Valid while the stream is open.
    var rawDescriptor: FileDescriptor { descriptor }

    /// Closes this end. Waiters in `async` calls are woken and see ``ConnectionError/closed``.
    func close() {
        let before = lifecycle.bitwiseOr(1, ordering: .acquiringAndReleasing).oldValue
        guard before & 1 == 0 else { return }  // closed already
        Reactor.forgetIfRunning(descriptor)
        if before == 0 { descriptor.closeIgnoringErrors() }  // no call is using it
    }

    private func withDescriptor<Result>(_ body: (FileDescriptor) throws -> Result) throws -> Result {
        try enter()
        defer { leave() }
        return try body(descriptor)
    }

    private func withDescriptor<Result>(_ body: (FileDescriptor) async throws -> Result) async throws -> Result {
        try enter()
        defer { leave() }
        return try await body(descriptor)
    }

    /// Counts a call that uses the descriptor, so `close` leaves it open until the call ends.
    private func enter() throws(ConnectionError) {
        var current = lifecycle.load(ordering: .relaxed)
        while true {
            // Never count a call once closed: then the last `leave` is the one that closes.
            if current & 1 != 0 { throw .closed }
            let (exchanged, original) = lifecycle.compareExchange(
                expected: current, desired: current + 2, ordering: .acquiringAndReleasing)
            if exchanged { return }
            current = original
        }
    }

    private func leave() {
        // Closed (bit 0) and this was the last call: the descriptor is ours to close.
        if lifecycle.subtract(2, ordering: .acquiringAndReleasing).newValue == 1 { descriptor.closeIgnoringErrors() }
    }

    // MARK: Receiving

    /// Receives the next message, waiting until the deadline. Returns `nil` on timeout.
    func receive(deadline: Deadline?) throws -> Frame? {
        try withDescriptor { descriptor in
            if deadline == nil {
                // Waiting forever: under the reader lock, look for a while (the answer to a
                // request often comes within microseconds, and a sleeping CPU takes tens of
                // them to wake), then read in blocking mode.
                return try reader.withLock { reader in
                    if let frame = try reader.spinForMessage(from: descriptor, limit: maximumMessageSize) {
                        return frame
                    }
                    return try reader.next(from: descriptor, limit: maximumMessageSize, mode: .blocking)
                }
            }
            while true {
                // A timed wait never waits on the lock: another thread may hold it for as long
                // as its untimed receive waits. When it is taken, look again soon.
                let attempt = try reader.withLockIfAvailable {
                    try $0.next(from: descriptor, limit: maximumMessageSize, mode: .nonBlocking)
                }
                if let frame = attempt ?? nil { return frame }
                let wakeUp = attempt == nil ? Self.soon(deadline) : deadline
                guard try descriptor.waitReadable(deadline: wakeUp) else {
                    if deadline.hasPassed { return nil }
                    continue
                }
                if isClosed { throw ConnectionError.closed }
            }
        }
    }

    /// Receives the next message without blocking a thread. Returns `nil` on timeout.
    func receive(deadline: Deadline?) async throws -> Frame? {
        try await withDescriptor { descriptor in
            while true {
                // Never wait on the lock here: that would block a cooperative thread. When it
                // is taken (a blocking receive in another thread), look again soon.
                let attempt = try reader.withLockIfAvailable {
                    try $0.next(from: descriptor, limit: maximumMessageSize, mode: .nonBlocking)
                }
                if let frame = attempt ?? nil { return frame }
                let wakeUp = attempt == nil ? Self.soon(deadline) : deadline
                guard try await Reactor.shared.waitReadable(descriptor, deadline: wakeUp) else {
                    if deadline.hasPassed { return nil }
                    continue
                }
                if isClosed { throw ConnectionError.closed }
            }
        }
    }

    /// Whether a whole message (or the end of the stream, or an error) can be received
    /// without waiting, waiting for one until the deadline.
    func poll(deadline: Deadline?) throws -> Bool {
        try withDescriptor { descriptor in
            while true {
                let attempt = try reader.withLockIfAvailable {
                    try $0.hasMessage(from: descriptor, limit: maximumMessageSize)
                }
                if attempt == true { return true }
                guard try descriptor.waitReadable(deadline: attempt == nil ? Self.soon(deadline) : deadline) else {
                    if deadline == nil || deadline.hasPassed { return false }
                    continue
                }
            }
        }
    }

    /// 10 ms from now, or the deadline if sooner: how long to wait before looking again
    /// when another thread holds the reader lock.
    private static func soon(_ deadline: Deadline?) -> Deadline {
        let soon = ContinuousClock.now.advanced(by: .milliseconds(10))
        return deadline.map { min($0, soon) } ?? soon
    }

    // MARK: Sending

    /// Sends one message whose header space (the first ``FrameHeader/size`` bytes of
    /// `frame`) is filled in here, blocking until the kernel has taken all of it.
    func send(frame: inout [UInt8], descriptors: [FileDescriptor] = []) throws {
        let length = frame.count - FrameHeader.size
        try checkSize(length)
        frame.withUnsafeMutableBytes {
            FrameHeader(length: length, descriptorCount: descriptors.count).write(to: $0)
        }
        try frame.withUnsafeBytes { bytes in
            try sendBlocking(bytes, UnsafeRawBufferPointer(start: nil, count: 0), descriptors: descriptors)
        }
    }

    /// Sends `payload` as one message, header and payload in one system call, no copy.
    func send(payload: UnsafeRawBufferPointer, descriptors: [FileDescriptor] = []) throws {
        try checkSize(payload.count)
        let header = FrameHeader(length: payload.count, descriptorCount: descriptors.count)
        // A small message is assembled on the stack and goes out with send(2); a large one
        // goes as header + payload in one sendmsg(2), without copying the payload.
        let assembled = payload.count <= 4096 ? FrameHeader.size + payload.count : FrameHeader.size
        try withUnsafeTemporaryAllocation(byteCount: assembled, alignment: 8) { buffer in
            header.write(to: buffer)
            if payload.count <= 4096 {
                if let source = payload.baseAddress {
                    (buffer.baseAddress! + FrameHeader.size).copyMemory(from: source, byteCount: payload.count)
                }
                try sendBlocking(
                    UnsafeRawBufferPointer(buffer), UnsafeRawBufferPointer(start: nil, count: 0),
                    descriptors: descriptors)
            } else {
                try sendBlocking(UnsafeRawBufferPointer(buffer), payload, descriptors: descriptors)
            }
        }
    }

    /// Sends a message prepared like ``send(frame:descriptors:)`` without blocking a thread.
    func send(frame: [UInt8], descriptors: [FileDescriptor] = []) async throws {
        var frame = frame
        let length = frame.count - FrameHeader.size
        try checkSize(length)
        frame.withUnsafeMutableBytes {
            FrameHeader(length: length, descriptorCount: descriptors.count).write(to: $0)
        }
        let message = frame
        try await withDescriptor { descriptor in
            var owner = false
            var cancelled = false
            while true {
                let done = try writer.withLock { writer throws -> Bool in
                    do {
                        if !owner {
                            if writer.asyncOwned { return false }
                            let sent = try Self.sendSome(message, from: 0, descriptors: descriptors, on: descriptor)
                            if sent == message.count { return true }
                            // The rest goes out later; until then this call owns the stream, so
                            // no other message can slip into the middle of this one.
                            writer.pending = message
                            writer.pendingOffset = sent
                            writer.asyncOwned = true
                            owner = true
                            return false
                        }
                        writer.pendingOffset += try Self.sendSome(
                            writer.pending, from: writer.pendingOffset, descriptors: [], on: descriptor)
                        guard writer.pendingOffset == writer.pending.count else { return false }
                    } catch {
                        // The peer is gone: nothing more will go out, so release the stream.
                        if owner { writer.releaseAsyncMessage() }
                        throw error
                    }
                    writer.releaseAsyncMessage()
                    return true
                }
                if done {
                    if cancelled { throw CancellationError() }
                    return
                }
                if owner {
                    // A message that has started is sent whole, even if the task is cancelled
                    // meanwhile (a cut message would corrupt the stream for every later one);
                    // the cancellation is reported once it is out.
                    cancelled = cancelled || Task.isCancelled
                    _ = try await Reactor.shared.wait(
                        for: .writable, on: descriptor, deadline: nil, cancellable: false)
                } else {
                    _ = try await Reactor.shared.wait(for: .writable, on: descriptor, deadline: nil)
                }
                if isClosed {
                    if owner { writer.withLock { $0.releaseAsyncMessage() } }
                    throw ConnectionError.closed
                }
            }
        }
    }

    private func checkSize(_ length: Int) throws {
        if length > maximumMessageSize { throw WireError.oversized(size: length, limit: maximumMessageSize) }
    }

    private func sendBlocking(
        _ head: UnsafeRawBufferPointer, _ tail: UnsafeRawBufferPointer, descriptors: [FileDescriptor]
    ) throws {
        try withDescriptor { descriptor in
            while true {
                let sent = try writer.withLock { writer throws -> Bool in
                    // An `async` sender is in the middle of a message: let it finish.
                    if writer.asyncOwned { return false }
                    try Self.sendAll(head, tail, descriptors: descriptors, on: descriptor)
                    return true
                }
                if sent { return }
                descriptor.waitWritable(deadline: ContinuousClock.now.advanced(by: .milliseconds(1)))
            }
        }
    }

    /// Sends `head` then `tail` whole. With a deadline, the first bytes wait for room only
    /// until then: `false` means nothing was sent. Once a message has started it is sent to
    /// the end, whatever the deadline: a message is never cut.
    @discardableResult
    private static func sendAll(
        _ head: UnsafeRawBufferPointer, _ tail: UnsafeRawBufferPointer, descriptors: [FileDescriptor],
        on descriptor: FileDescriptor, startBy deadline: Deadline? = nil
    ) throws -> Bool {
        var head = head
        var tail = tail
        var attached = descriptors.map(\.rawValue)
        var started = deadline == nil
        while head.count + tail.count > 0 {
            var sent: Int
            do throws(Errno) {
                sent = try descriptor.send(head, tail, descriptors: attached, nonBlocking: !started)
            } catch .wouldBlock {
                if !descriptor.waitWritable(deadline: deadline) && deadline.hasPassed { return false }
                continue
            } catch {
                throw Self.sendError(error)
            }
            started = true
            attached = []
            let fromHead = min(sent, head.count)
            head = UnsafeRawBufferPointer(rebasing: head[fromHead...])
            sent -= fromHead
            tail = UnsafeRawBufferPointer(rebasing: tail[sent...])
        }
        return true
    }

    /// One non-blocking send of `bytes[offset...]`; returns how many bytes went out.
    private static func sendSome(
        _ bytes: [UInt8], from offset: Int, descriptors: [FileDescriptor], on descriptor: FileDescriptor
    ) throws -> Int {
        var result: Result<Int, Errno> = .success(0)
        bytes.withUnsafeBytes { raw in
            result = Result { () throws(Errno) in
                try descriptor.send(
                    UnsafeRawBufferPointer(rebasing: raw[offset...]), descriptors: descriptors.map(\.rawValue),
                    nonBlocking: true)
            }
        }
        switch result {
        case .success(let sent): return sent
        case .failure(.wouldBlock): return 0
        case .failure(let error): throw Self.sendError(error)
        }
    }

    private static func sendError(_ error: Errno) -> ConnectionError {
        switch error {
        case .brokenPipe, .connectionReset, .socketNotConnected: .peerGone
        default: .system(error, during: "sending a message")
        }
    }

    private struct Writer {
        /// The message an `async` send has started and not finished, and how much of it
        /// has gone out. While it is there, no other message may be sent.
        var pending: [UInt8] = []
        var pendingOffset = 0
        var asyncOwned = false

        mutating func releaseAsyncMessage() {
            pending = []
            pendingOffset = 0
            asyncOwned = false
        }
        /// The buffer the last message was encoded into, kept for the next one: memory the
        /// process has already touched costs no page faults (8 MB of fresh memory costs
        /// more to fault in than to fill).
        var scratch: [UInt8] = []
    }

    /// The encoder and the outbox it fills, made once per stream rather than per message
    /// (a dictionary and two objects less per send). `nonisolated(unsafe)` because they
    /// are mutable and not Sendable: they are touched only inside `writer.withLock`, which
    /// serialises every use.
    private nonisolated(unsafe) let outbox = DescriptorOutbox()
    private nonisolated(unsafe) let encoder: BinaryEncoder

    /// Encodes `value` (after header space) into the writer's reusable buffer and sends it,
    /// with the descriptors of the handles inside. Returns the streams that moved with it,
    /// or `nil` when a deadline was given and the message could not start before it.
    func sendEncoded<Value: Encodable>(_ value: Value, startBy deadline: Deadline? = nil) throws -> [any MovingHandle]?
    {
        return try withDescriptor { descriptor in
            while true {
                let step = try writer.withLock { writer throws -> SendStep in
                    if writer.asyncOwned { return .busy }
                    let outbox = self.outbox
                    var frame = writer.scratch
                    writer.scratch = []
                    defer {
                        if frame.capacity <= Self.largestKeptBuffer { writer.scratch = frame }
                    }
                    _ = outbox.reset()
                    frame.removeAll(keepingCapacity: true)
                    frame.append(contentsOf: repeatElement(0, count: FrameHeader.size))
                    try encoder.encode(value, appendingTo: &frame)
                    let length = frame.count - FrameHeader.size
                    try checkSize(length)
                    frame.withUnsafeMutableBytes {
                        FrameHeader(length: length, descriptorCount: outbox.descriptors.count).write(to: $0)
                    }
                    let sent = try frame.withUnsafeBytes { bytes in
                        try Self.sendAll(
                            bytes, UnsafeRawBufferPointer(start: nil, count: 0), descriptors: outbox.descriptors,
                            on: descriptor, startBy: deadline)
                    }
                    // Handles of a message that was not sent stay open here.
                    let moved = outbox.reset()
                    return sent ? .sent(moved) : .timedOut
                }
                switch step {
                case .sent(let moved): return moved
                case .timedOut: return nil
                case .busy:
                    // An `async` sender is in the middle of a message: let it finish.
                    if deadline.hasPassed { return nil }
                    descriptor.waitWritable(deadline: ContinuousClock.now.advanced(by: .milliseconds(1)))
                }
            }
        }
    }

    /// What one attempt at sending under the writer lock came to.
    private enum SendStep {
        case busy, timedOut
        case sent([any MovingHandle])
    }

    /// The largest buffer kept for reuse between messages, on either side.
    static let largestKeptBuffer = 64 * 1024 * 1024

    /// Gives back the payload of a message that was decoded here (the caller never saw the
    /// array), so the next large message can be read into memory already touched.
    func recycle(_ payload: consuming [UInt8]) {
        let payload = payload
        guard payload.capacity >= Self.chunkSize, payload.capacity <= Self.largestKeptBuffer else { return }
        reader.withLock { $0.keepSpare(payload) }
    }
}

// MARK: - Reading messages out of a byte stream

extension MessageStream {
    fileprivate struct Reader: ~Copyable {
        /// Bytes read but not yet parsed: `storage[head..<tail]`.
        private var storage = UnsafeMutableRawBufferPointer.allocate(byteCount: MessageStream.chunkSize, alignment: 8)
        private var head = 0
        private var tail = 0
        /// The message whose header has been parsed and whose payload is arriving: its
        /// header, its payload array (written in place, so it must stay uniquely referenced:
        /// a separate stored property, mutated directly, never copied out while filling)
        /// and how much of it has arrived.
        private var current: FrameHeader?
        private var currentPayload: [UInt8] = []
        private var currentFilled = 0
        /// A payload array given back after decoding, reused for the next large message.
        private var spare: [UInt8] = []

        mutating func keepSpare(_ payload: [UInt8]) {
            if payload.capacity > spare.capacity { spare = payload }
        }
        /// Whole messages (or the error that replaced one), in arrival order.
        private var ready: [Result<Frame, any Error>] = []
        private var readyHead = 0
        /// Descriptors received and not yet given to a message, in arrival order.
        private var descriptors: [Int32] = []
        /// Bytes of a refused (oversized) message still to skip.
        private var discard = 0
        private var sawEnd = false
        /// When to look for a message for a while before sleeping (see `spinForMessage`).
        private var spin = SpinPolicy()

        /// Looks for the next message without sleeping for up to ``SpinPolicy/window``,
        /// yielding the CPU between looks so a peer on the same CPU can answer. Adaptive:
        /// after looks that found nothing, it stops looking for a growing number of receives,
        /// so a connection that waits long costs no CPU.
        mutating func spinForMessage(from descriptor: FileDescriptor, limit: Int) throws -> Frame? {
            if let frame = try next(from: descriptor, limit: limit, mode: .bufferedOnly) { return frame }
            guard spin.shouldSpin() else { return nil }
            let start = ContinuousClock.now
            repeat {
                if let frame = try next(from: descriptor, limit: limit, mode: .nonBlocking) {
                    spin.found()
                    return frame
                }
                if sawEnd || failure != nil { return nil }
                sched_yield()
            } while ContinuousClock.now - start < SpinPolicy.window
            spin.missed()
            return nil
        }
        /// An error that leaves the stream unusable (a bad header): every later call rethrows it.
        private var failure: (any Error)?

        /// Frees the buffer and closes descriptors no message took; the reader is empty after.
        mutating func release() {
            storage.deallocate()
            storage = UnsafeMutableRawBufferPointer(start: nil, count: 0)
            for descriptor in descriptors { FileDescriptor(rawValue: descriptor).closeIgnoringErrors() }
            descriptors = []
        }

        mutating func hasMessage(from descriptor: FileDescriptor, limit: Int) throws -> Bool {
            if readyHead < ready.count || failure != nil { return true }
            while try readOnce(from: descriptor, blocking: false) {
                try parse(limit: limit)
                if readyHead < ready.count { return true }
            }
            return sawEnd
        }

        enum ReadMode { case bufferedOnly, nonBlocking, blocking }

        /// The next whole message: from what is buffered, then (unless `bufferedOnly`) from
        /// the descriptor. `nil` when no whole message is there yet (never in `blocking`).
        mutating func next(from descriptor: FileDescriptor, limit: Int, mode: ReadMode) throws -> Frame? {
            while true {
                if let failure { throw failure }
                if readyHead < ready.count {
                    let result = ready[readyHead]
                    readyHead += 1
                    if readyHead == ready.count {
                        ready.removeAll(keepingCapacity: true)
                        readyHead = 0
                    }
                    return try result.get()
                }
                // Nothing parsed ahead: take the next message straight from the buffer.
                if let result = try parseOne(limit: limit) { return try result.get() }
                if sawEnd {
                    if let current {
                        throw ConnectionError.peerClosedMidMessage(expected: current.length, received: currentFilled)
                    }
                    if tail > head || discard > 0 {
                        throw ConnectionError.peerClosedMidMessage(expected: FrameHeader.size, received: tail - head)
                    }
                    throw ConnectionError.endOfStream
                }
                guard mode != .bufferedOnly, try readOnce(from: descriptor, blocking: mode == .blocking) else {
                    if mode == .blocking || sawEnd { continue }  // at the end, the loop's top reports it
                    return nil
                }
            }
        }

        /// Turns all buffered bytes into messages, queued in `ready` (for `hasMessage`).
        private mutating func parse(limit: Int) throws {
            while let result = try parseOne(limit: limit) { ready.append(result) }
        }

        /// Turns buffered bytes into the next message (or the error that replaces it), or
        /// returns `nil` when more bytes are needed.
        private mutating func parseOne(limit: Int) throws -> Result<Frame, any Error>? {
            while true {
                if discard > 0 {
                    let dropped = min(discard, tail - head)
                    head += dropped
                    discard -= dropped
                    if discard > 0 { return nil }
                }
                if let header = current {
                    let take = min(header.length - currentFilled, tail - head)
                    if take > 0 {
                        let offset = currentFilled
                        let source = storage.baseAddress!.advanced(by: head)
                        currentPayload.withUnsafeMutableBytes { payload in
                            payload.baseAddress!.advanced(by: offset).copyMemory(from: source, byteCount: take)
                        }
                        head += take
                        currentFilled += take
                    }
                    guard currentFilled == header.length else { return nil }
                    let payload = currentPayload
                    currentPayload = []
                    current = nil
                    return Result { Frame(payload: payload, descriptors: try takeDescriptors(header.descriptorCount)) }
                }
                guard tail - head >= FrameHeader.size else { return nil }
                let header: FrameHeader
                do {
                    header = try FrameHeader(
                        parsing: UnsafeRawBufferPointer(rebasing: storage[head..<head + FrameHeader.size]))
                } catch {
                    failure = error
                    throw error
                }
                head += FrameHeader.size
                if header.length > limit {
                    // Refuse this one message but keep the stream in step: skip its bytes and
                    // close its descriptors, and let later messages through.
                    discard = header.length
                    for descriptor in (try? takeDescriptors(header.descriptorCount)) ?? [] {
                        descriptor.closeIgnoringErrors()
                    }
                    return .failure(WireError.oversized(size: header.length, limit: limit))
                }
                if spare.capacity >= header.length && header.length >= MessageStream.chunkSize {
                    // Memory a decoded message left behind: zeroing it is cheaper than
                    // faulting in fresh pages.
                    currentPayload = spare
                    spare = []
                    currentPayload.removeAll(keepingCapacity: true)
                    currentPayload.append(contentsOf: repeatElement(0, count: header.length))
                } else {
                    currentPayload = [UInt8](unsafeUninitializedCapacity: header.length) { _, count in
                        count = header.length
                    }
                }
                currentFilled = 0
                current = header
            }
        }

        private mutating func takeDescriptors(_ count: Int) throws -> [FileDescriptor] {
            guard count > 0 else { return [] }
            guard descriptors.count >= count else {
                throw WireError.invalidData(
                    "the message announced \(count) descriptors but \(descriptors.count) arrived", codingPath: "")
            }
            defer { descriptors.removeFirst(count) }
            return descriptors.prefix(count).map(FileDescriptor.init(rawValue:))
        }

        /// One non-blocking read. Large payloads are read in place; everything else into the
        /// buffer. Returns `false` when nothing could be read (would block, or end of stream).
        private mutating func readOnce(from descriptor: FileDescriptor, blocking: Bool) throws -> Bool {
            if sawEnd { return false }
            var count: Int
            do throws(Errno) {
                if let header = current, tail == head,
                    header.length - currentFilled > MessageStream.directReadThreshold
                {
                    // Read straight into the message's own array.
                    let offset = currentFilled
                    var result: Result<Int, Errno> = .success(0)
                    currentPayload.withUnsafeMutableBytes { raw in
                        result = Result { () throws(Errno) in
                            try descriptor.receive(
                                into: UnsafeMutableRawBufferPointer(rebasing: raw[offset...]),
                                descriptors: &descriptors, nonBlocking: !blocking)
                        }
                    }
                    count = try result.get()
                    currentFilled += count
                } else {
                    if head == tail {
                        head = 0
                        tail = 0
                    } else if head > 0 && storage.count - tail < MessageStream.chunkSize / 2 {
                        storage.baseAddress!.copyMemory(from: storage.baseAddress! + head, byteCount: tail - head)
                        tail -= head
                        head = 0
                    }
                    count = try descriptor.receive(
                        into: UnsafeMutableRawBufferPointer(rebasing: storage[tail...]), descriptors: &descriptors,
                        nonBlocking: !blocking)
                    tail += count
                }
            } catch .wouldBlock {
                return false
            } catch .connectionReset {
                count = 0
            } catch {
                throw ConnectionError.system(error, during: "receiving a message")
            }
            if count == 0 { sawEnd = true }
            return count > 0
        }
    }
}

/// When a blocking receive looks for a message before going to sleep.
///
/// Sleeping on a socket costs a wake-up when the message comes: on a VM like the project's
/// machine about 35 µs to wake an idle CPU, many times the cost of the message itself. A
/// receive that expects an answer soon (a request/response exchange) does better to look
/// for it for a few tens of microseconds. One that waits long (a worker between tasks)
/// must not burn CPU: each look that finds nothing doubles the number of receives that
/// skip looking, up to 1,024; a look that finds a message starts over.
struct SpinPolicy {
    /// How long one look lasts at most.
    static let window = Duration.microseconds(50)
    private var skip = 0
    private var misses = 0

    mutating func shouldSpin() -> Bool {
        if skip > 0 {
            skip -= 1
            return false
        }
        return true
    }

    mutating func found() { misses = 0 }

    mutating func missed() {
        misses = min(misses + 1, 10)
        skip = 1 << misses
    }
}
