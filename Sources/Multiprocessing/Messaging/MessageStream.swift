import CMultiprocessing
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
/// - No lock is held while waiting. Readers take the reader lock only to read what is
///   there without blocking; senders take turns on a ``Turnstile`` (a sender may wait for
///   room while holding its turn, so a message is never interleaved with another), and
///   waiting threads sleep while waiting tasks suspend.
/// - ``close()`` wakes every waiter, blocked threads included (through an eventfd made the
///   first time a thread blocks here), and defers the `close(2)` until no call is using
///   the descriptor, so a number that the kernel hands out again can never be read or
///   written by mistake.
final class MessageStream: Sendable {
    /// The largest payload accepted in either direction.
    let maximumMessageSize: Int
    private let descriptor: FileDescriptor
    /// Bit 0: closed. The rest: twice the number of calls using the descriptor. One word,
    /// so entering and leaving a call is one atomic operation, not a lock.
    private let lifecycle = Atomic<Int>(0)
    /// An eventfd that becomes readable when the stream is closed, so that threads blocked
    /// in `poll(2)` wake up; -1 until a thread first blocks.
    private let closeSignal = Atomic<Int32>(-1)
    private let reader = Mutex(Reader())
    /// Whose turn it is to send: one message goes out whole before the next starts.
    private let sendTurn = Turnstile()

    /// The encoder, the outbox it fills and the buffer it encodes into, made once per
    /// stream rather than per message (a dictionary and two objects less per send, and
    /// memory already touched). `nonisolated(unsafe)` because they are mutable and not
    /// Sendable: they are touched only by the holder of `sendTurn`, which serialises every
    /// use and orders it (the turn is handed over under a lock).
    private nonisolated(unsafe) let outbox = DescriptorOutbox()
    private nonisolated(unsafe) let encoder: BinaryEncoder
    private nonisolated(unsafe) var scratch: [UInt8] = []

    /// Payloads up to this size are read through the shared buffer; larger ones are read
    /// straight into their own array, so a 1 MiB message is copied once, by the kernel.
    static let chunkSize = 64 * 1024

    /// A message with more than this left to arrive is read straight into its array (one
    /// copy, by the kernel) rather than through the buffer (two).
    static let directReadThreshold = 16 * 1024

    /// The most memory set aside for a message before its bytes arrive. A header announces
    /// the length, and a peer may lie: larger messages grow as their bytes come in, so a
    /// crafted header costs at most this much.
    static let initialPayloadAllocation = 4 * 1024 * 1024

    /// The largest buffer kept for reuse between messages, on either side.
    static let largestKeptBuffer = 64 * 1024 * 1024

    init(descriptor: FileDescriptor, maximumMessageSize: Int) {
        encoder = BinaryEncoder(userInfo: [.descriptorOutbox: outbox])
        self.descriptor = descriptor
        self.maximumMessageSize = min(maximumMessageSize, FrameHeader.maximumLength)
    }

    deinit {
        if !isClosed { descriptor.closeIgnoringErrors() }
        let signal = closeSignal.load(ordering: .acquiring)
        if signal >= 0 { _ = Glibc.close(signal) }
        reader.withLock { $0.release() }
    }

    // MARK: Lifecycle

    var isClosed: Bool { lifecycle.load(ordering: .sequentiallyConsistent) & 1 != 0 }

    /// The raw descriptor, for handing this end to a child. Valid while the stream is open.
    var rawDescriptor: FileDescriptor { descriptor }

    /// Closes this end. Every waiter wakes and sees ``ConnectionError/closed``; the
    /// descriptor is closed once the last call using it has left (at once if none is).
    func close() {
        let before = lifecycle.bitwiseOr(1, ordering: .sequentiallyConsistent).oldValue
        guard before & 1 == 0 else { return }  // closed already
        // Blocked threads: the eventfd, if one was ever made. A thread that makes it after
        // this load sees the closed bit before it sleeps (both sides use sequentially
        // consistent operations, so one of them sees the other).
        let signal = closeSignal.load(ordering: .sequentiallyConsistent)
        if signal >= 0 {
            var one: UInt64 = 1
            _ = write(signal, &one, 8)
        }
        // Suspended tasks, and any about to suspend (they check the bit under the
        // reactor's lock, see `Reactor.wait`).
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

    /// Runs `body` with the descriptor, which stays open until `body` returns (a `close`
    /// meanwhile takes effect after it), for waits that watch this stream among others.
    /// - Throws: ``ConnectionError/closed`` if the stream is closed already.
    func usingDescriptor<Result>(_ body: (FileDescriptor) throws -> Result) throws -> Result {
        try withDescriptor(body)
    }

    /// The `async` form of ``usingDescriptor(_:)``.
    func usingDescriptor<Result>(_ body: (FileDescriptor) async throws -> Result) async throws -> Result {
        try await withDescriptor(body)
    }

    /// The eventfd that `close()` fires, made on first use.
    private func closeSignalDescriptor() throws -> FileDescriptor {
        let existing = closeSignal.load(ordering: .sequentiallyConsistent)
        if existing >= 0 { return FileDescriptor(rawValue: existing) }
        let made = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK))
        guard made >= 0 else {
            throw ConnectionError.system(Errno(rawValue: errno), during: "creating the close signal (eventfd)")
        }
        let (exchanged, winner) = closeSignal.compareExchange(
            expected: -1, desired: made, ordering: .sequentiallyConsistent)
        if exchanged { return FileDescriptor(rawValue: made) }
        _ = Glibc.close(made)
        return FileDescriptor(rawValue: winner)
    }

    /// Blocks until `descriptor` is ready for `events`, the stream is closed, or the
    /// deadline passes (`false`). The caller checks which.
    private func waitBlocking(_ descriptor: FileDescriptor, for events: Int16, deadline: Deadline?) throws -> Bool {
        let signal = try closeSignalDescriptor()
        if isClosed { throw ConnectionError.closed }
        do {
            return try pollAny([(descriptor, events), (signal, Int16(POLLIN))], deadline: deadline)
        } catch {
            throw ConnectionError.system(error, during: "waiting on a connection")
        }
    }

    /// Suspends until `descriptor` is ready, the stream is closed, or the deadline passes.
    private func waitSuspending(
        _ descriptor: FileDescriptor, for interest: Reactor.Interest, deadline: Deadline?, cancellable: Bool = true
    ) async throws -> Bool {
        try await Reactor.shared.wait(
            for: interest, on: descriptor, deadline: deadline, cancellable: cancellable, unless: { self.isClosed })
    }

    // MARK: Receiving

    /// Receives the next message, waiting until the deadline. Returns `nil` on timeout.
    func receive(deadline: Deadline?) throws -> Frame? {
        try withDescriptor { descriptor in
            if deadline == nil {
                // Waiting forever: look for a while first (the answer to a request often
                // comes within microseconds, and a sleeping CPU takes tens of them to wake).
                let spun = try reader.withLock { try $0.spinForMessage(from: descriptor, limit: maximumMessageSize) }
                if let spun { return spun }
            }
            while true {
                let frame = try reader.withLock { try $0.next(from: descriptor, limit: maximumMessageSize) }
                if let frame { return frame }
                guard try waitBlocking(descriptor, for: Int16(POLLIN), deadline: deadline) else {
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
                // The reader lock is only ever held to read what is already there, never
                // across a wait, so taking it here does not stall a cooperative thread.
                let frame = try reader.withLock { try $0.next(from: descriptor, limit: maximumMessageSize) }
                if let frame { return frame }
                guard try await waitSuspending(descriptor, for: .readable, deadline: deadline) else {
                    if deadline.hasPassed { return nil }
                    continue
                }
                if isClosed { throw ConnectionError.closed }
            }
        }
    }

    /// The next whole message if one is here already (or the error that replaced it),
    /// reading what the socket holds without waiting; `nil` if none is complete.
    func receiveNow() throws -> Frame? {
        try withDescriptor { descriptor in
            try reader.withLock { try $0.next(from: descriptor, limit: maximumMessageSize) }
        }
    }

    /// Whether a receive would return at once: a whole message is here, or the end of the
    /// stream, or an error (which the receive will throw), or this end is closed.
    var isReadable: Bool {
        guard
            let readable = try? withDescriptor({ descriptor in
                try reader.withLock { try $0.hasMessage(from: descriptor, limit: maximumMessageSize) }
            })
        else { return true }
        return readable
    }

    /// Counts a use of the descriptor and returns it, or `nil` if the stream is closed: a
    /// `close` meanwhile takes effect at ``releaseDescriptor()``. For waits over many
    /// objects, which cannot nest one closure per stream.
    func retainDescriptor() -> FileDescriptor? {
        do {
            try enter()
            return descriptor
        } catch {
            return nil
        }
    }

    /// Ends a use begun by ``retainDescriptor()``.
    func releaseDescriptor() { leave() }

    /// Whether a whole message (or the end of the stream, or an error) can be received
    /// without waiting, waiting for one until the deadline.
    func poll(deadline: Deadline?) throws -> Bool {
        try withDescriptor { descriptor in
            while true {
                if try reader.withLock({ try $0.hasMessage(from: descriptor, limit: maximumMessageSize) }) {
                    return true
                }
                // A look without a wait needs no close signal: making its eventfd could fail
                // (EMFILE) where the answer was simply "no message" (the fault matrix's pool
                // took that failure for its worker's death).
                if deadline != nil && deadline.hasPassed { return false }
                guard try waitBlocking(descriptor, for: Int16(POLLIN), deadline: deadline) else {
                    if deadline == nil || deadline.hasPassed { return false }
                    continue
                }
                if isClosed { throw ConnectionError.closed }
            }
        }
    }

    // MARK: Sending

    /// Sends one message whose header space (the first ``FrameHeader/size`` bytes of
    /// `frame`) is filled in here, blocking until the kernel has taken all of it. The
    /// handles in `moving` are closed here once their descriptors have gone out.
    func send(frame: inout [UInt8], descriptors: [FileDescriptor] = [], moving: [any MovingHandle] = []) throws {
        let length = frame.count - FrameHeader.size
        try checkSize(length)
        frame.withUnsafeMutableBytes {
            FrameHeader(length: length, descriptorCount: descriptors.count).write(to: $0)
        }
        try withDescriptor { descriptor in
            _ = sendTurn.enter()
            defer { sendTurn.leave() }
            try frame.withUnsafeBytes { bytes in
                _ = try sendAll(bytes, descriptors: descriptors, moving: moving, on: descriptor)
            }
        }
    }

    /// Sends `payload` as one message, header and payload in one system call, no copy.
    func send(payload: UnsafeRawBufferPointer) throws {
        try checkSize(payload.count)
        let header = FrameHeader(length: payload.count, descriptorCount: 0)
        // A small message is assembled on the stack and goes out with send(2); a large one
        // goes as header + payload in one sendmsg(2), without copying the payload.
        let small = payload.count <= 4096
        try withUnsafeTemporaryAllocation(
            byteCount: small ? FrameHeader.size + payload.count : FrameHeader.size, alignment: 8
        ) {
            buffer in
            header.write(to: buffer)
            if small, let source = payload.baseAddress {
                (buffer.baseAddress! + FrameHeader.size).copyMemory(from: source, byteCount: payload.count)
            }
            try withDescriptor { descriptor in
                _ = sendTurn.enter()
                defer { sendTurn.leave() }
                _ = try sendAll(UnsafeRawBufferPointer(buffer), small ? nil : payload, on: descriptor)
            }
        }
    }

    /// Sends a message prepared like ``send(frame:descriptors:moving:)`` without blocking a
    /// thread.
    ///
    /// Cancelling the task before any byte has gone out throws `CancellationError` with
    /// nothing sent (the handles stay with the caller). Once a message has started it is
    /// sent whole, even if the task is cancelled meanwhile (a cut message would corrupt the
    /// stream for every later one), and the send succeeds: it happened.
    func send(frame: [UInt8], descriptors: [FileDescriptor] = [], moving: [any MovingHandle] = []) async throws {
        var frame = frame
        let length = frame.count - FrameHeader.size
        try checkSize(length)
        frame.withUnsafeMutableBytes {
            FrameHeader(length: length, descriptorCount: descriptors.count).write(to: $0)
        }
        try await withDescriptor { descriptor in
            try await sendTurn.enter()
            defer { sendTurn.leave() }
            var offset = 0
            while offset < frame.count {
                if isClosed { throw ConnectionError.closed }
                let sent = try Self.sendSome(
                    frame, from: offset, descriptors: offset == 0 ? descriptors : [], on: descriptor)
                if sent > 0 && offset == 0 {
                    // The descriptors went out with these first bytes: the handles moved.
                    for handle in moving { handle.close() }
                }
                if sent > 0 && offset + sent < frame.count {
                    // Cut: the receiver holds a header (and descriptors) and part of a payload.
                    if offset == 0 {
                        FaultInjection.step("stream.send.afterFirstWrite")
                    } else {
                        FaultInjection.step("stream.send.midPayload")
                    }
                }
                offset += sent
                if offset < frame.count {
                    // Fault matrix: a peer that dies with part of a frame written.
                    FaultInjection.step("stream.send.midFrame")
                    _ = try await waitSuspending(descriptor, for: .writable, deadline: nil, cancellable: offset == 0)
                }
            }
        }
    }

    private func checkSize(_ length: Int) throws {
        if length > maximumMessageSize { throw WireError.oversized(size: length, limit: maximumMessageSize) }
    }

    /// Sends `head` then `tail` whole, blocking; the caller holds the send turn. With a
    /// deadline, the first bytes wait for room only until then: `false` means nothing was
    /// sent. Once a message has started it is sent to the end, whatever the deadline: a
    /// message is never cut. The descriptors go with the first bytes, and the handles in
    /// `moving` are closed as soon as they have.
    private func sendAll(
        _ head: UnsafeRawBufferPointer, _ tail: UnsafeRawBufferPointer? = nil, descriptors: [FileDescriptor] = [],
        moving: [any MovingHandle] = [], on descriptor: FileDescriptor, startBy deadline: Deadline? = nil
    ) throws -> Bool {
        var head = head
        var tail = tail ?? UnsafeRawBufferPointer(start: nil, count: 0)
        var attached = descriptors.map(\.rawValue)
        var started = false
        while head.count + tail.count > 0 {
            if isClosed { throw ConnectionError.closed }
            var sent: Int
            do throws(Errno) {
                sent = try descriptor.send(head, tail, descriptors: attached, nonBlocking: true)
            } catch .wouldBlock {
                let waitUntil = started ? nil : deadline
                if try !waitBlocking(descriptor, for: Int16(POLLOUT), deadline: waitUntil) && waitUntil.hasPassed {
                    return false
                }
                continue
            } catch {
                throw Self.sendError(error)
            }
            let first = !started
            if !started {
                started = true
                attached = []
                for handle in moving { handle.close() }
            }
            let fromHead = min(sent, head.count)
            head = UnsafeRawBufferPointer(rebasing: head[fromHead...])
            sent -= fromHead
            tail = UnsafeRawBufferPointer(rebasing: tail[sent...])
            if head.count + tail.count > 0 {
                // Cut: the receiver holds a header (and descriptors) and part of a payload.
                if first {
                    FaultInjection.step("stream.send.afterFirstWrite")
                } else {
                    FaultInjection.step("stream.send.midPayload")
                }
            }
        }
        return true
    }

    /// One non-blocking send of `bytes[offset...]`; returns how many bytes went out (0 when
    /// the socket is full).
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

    /// Encodes `value` (after header space) into the reusable buffer and sends it, with the
    /// descriptors of the handles inside; connection ends inside it move (this process's
    /// copies are closed once their descriptors have gone out). Returns `false` when a
    /// deadline was given and the message could not start before it: then nothing was
    /// sent and every handle stays open here.
    func sendEncoded<Value: Encodable>(_ value: Value, startBy deadline: Deadline? = nil) throws -> Bool {
        try withDescriptor { descriptor in
            guard sendTurn.enter(deadline: deadline) else { return false }
            defer { sendTurn.leave() }
            _ = outbox.reset()
            defer { _ = outbox.reset() }
            var frame = scratch
            scratch = []
            defer { if frame.capacity <= Self.largestKeptBuffer { scratch = frame } }
            frame.removeAll(keepingCapacity: true)
            frame.append(contentsOf: repeatElement(0, count: FrameHeader.size))
            try encoder.encode(value, appendingTo: &frame)
            let length = frame.count - FrameHeader.size
            try checkSize(length)
            frame.withUnsafeMutableBytes {
                FrameHeader(length: length, descriptorCount: outbox.descriptors.count).write(to: $0)
            }
            // Encoded, nothing sent: a sender that dies here loses only its own message.
            FaultInjection.step("stream.send.encoded")
            return try frame.withUnsafeBytes { bytes in
                try sendAll(
                    bytes, descriptors: outbox.descriptors, moving: outbox.moved, on: descriptor, startBy: deadline)
            }
        }
    }

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
    /// The descriptors that came with one `sendmsg` of the peer: they belong to the one
    /// message whose first bytes that send carried (see ``ReceivedBytes``).
    fileprivate struct DescriptorBatch {
        var descriptors: [Int32]
        /// The kernel dropped some (`MSG_CTRUNC`).
        var truncated: Bool
    }

    fileprivate struct Reader: ~Copyable {
        /// Bytes read but not yet parsed: `storage[head..<tail]`.
        private var storage = UnsafeMutableRawBufferPointer.allocate(byteCount: MessageStream.chunkSize, alignment: 8)
        private var head = 0
        private var tail = 0
        /// The message whose header has been parsed and whose payload is arriving: its
        /// header, its payload array (written in place, so it must stay uniquely referenced:
        /// a separate stored property, mutated directly, never copied out while filling)
        /// and how much of it has arrived. The array grows as bytes come (see
        /// ``MessageStream/initialPayloadAllocation``).
        private var current: FrameHeader?
        private var currentPayload: [UInt8] = []
        private var currentFilled = 0
        /// A payload array given back after decoding, reused for the next large message.
        private var spare: [UInt8] = []
        /// Whole messages (or the error that replaced one), in arrival order.
        private var ready: [Result<Frame, any Error>] = []
        private var readyHead = 0
        /// Descriptors received and not yet given to a message, one batch per `sendmsg`,
        /// in arrival order.
        private var batches: [DescriptorBatch] = []
        /// Bytes of a refused (oversized) message still to skip.
        private var discard = 0
        private var sawEnd = false
        /// When to look for a message for a while before sleeping (see `spinForMessage`).
        private var spin = SpinPolicy()
        /// An error that leaves the stream unusable (a bad header): every later call rethrows it.
        private var failure: (any Error)?

        mutating func keepSpare(_ payload: [UInt8]) {
            if payload.capacity > spare.capacity { spare = payload }
        }

        /// Looks for the next message without sleeping for up to ``SpinPolicy/window``,
        /// yielding the CPU between looks so a peer on the same CPU can answer. Adaptive:
        /// after looks that found nothing, it stops looking for a growing number of receives,
        /// so a connection that waits long costs no CPU.
        mutating func spinForMessage(from descriptor: FileDescriptor, limit: Int) throws -> Frame? {
            if let frame = try next(from: descriptor, limit: limit, readingMore: false) { return frame }
            guard spin.shouldSpin() else { return nil }
            let start = ContinuousClock.now
            repeat {
                if let frame = try next(from: descriptor, limit: limit) {
                    spin.found(after: ContinuousClock.now - start)
                    return frame
                }
                if sawEnd || failure != nil { return nil }
                sched_yield()
            } while ContinuousClock.now - start < SpinPolicy.window
            spin.missed()
            return nil
        }

        /// Frees the buffer and closes descriptors no message took; the reader is empty after.
        mutating func release() {
            storage.deallocate()
            storage = UnsafeMutableRawBufferPointer(start: nil, count: 0)
            for batch in batches {
                for descriptor in batch.descriptors { FileDescriptor(rawValue: descriptor).closeIgnoringErrors() }
            }
            batches = []
        }

        mutating func hasMessage(from descriptor: FileDescriptor, limit: Int) throws -> Bool {
            if readyHead < ready.count || failure != nil { return true }
            // What is already buffered first: an earlier read may have taken more than one
            // message from the socket.
            try parse(limit: limit)
            if readyHead < ready.count { return true }
            while try readOnce(from: descriptor) {
                try parse(limit: limit)
                if readyHead < ready.count { return true }
            }
            return sawEnd
        }

        /// The next whole message: from what is buffered, then (with `readingMore`) from
        /// what the socket holds, without waiting. `nil` when no whole message is there yet.
        mutating func next(from descriptor: FileDescriptor, limit: Int, readingMore: Bool = true) throws -> Frame? {
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
                guard readingMore, try readOnce(from: descriptor) else {
                    if sawEnd { continue }  // at the end, the loop's top reports it
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
                        growPayload(toHold: currentFilled + take, of: header.length)
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
                // The header is taken from the buffer: the payload is still to come.
                FaultInjection.step("stream.receive.afterHeader")
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
                    let first = min(header.length, MessageStream.initialPayloadAllocation)
                    currentPayload = [UInt8](unsafeUninitializedCapacity: first) { _, count in count = first }
                }
                currentFilled = 0
                current = header
            }
        }

        /// Makes the arriving payload at least `needed` bytes long (at most `total`),
        /// doubling, so that a message is never given more memory than its bytes justify
        /// by more than half.
        private mutating func growPayload(toHold needed: Int, of total: Int) {
            guard currentPayload.count < needed else { return }
            let size = min(total, max(needed, currentPayload.count * 2))
            let filled = currentFilled
            currentPayload = currentPayload.withUnsafeBytes { old in
                [UInt8](unsafeUninitializedCapacity: size) { buffer, count in
                    UnsafeMutableRawBufferPointer(buffer).copyMemory(
                        from: UnsafeRawBufferPointer(rebasing: old[..<filled]))
                    count = size
                }
            }
        }

        /// The descriptors of a message that announced `count` of them: the next batch.
        private mutating func takeDescriptors(_ count: Int) throws -> [FileDescriptor] {
            guard count > 0 else { return [] }
            guard !batches.isEmpty else {
                throw WireError.invalidData(
                    "the message announced \(count) descriptors but none arrived with it", codingPath: "")
            }
            let batch = batches.removeFirst()
            let descriptors = batch.descriptors.map(FileDescriptor.init(rawValue:))
            guard !batch.truncated, descriptors.count == count else {
                for descriptor in descriptors { descriptor.closeIgnoringErrors() }
                throw ConnectionError.descriptorsLost(expected: count, received: batch.descriptors.count)
            }
            return descriptors
        }

        /// One non-blocking read. Large payloads are read in place; everything else into the
        /// buffer. Returns `false` when nothing could be read (would block, or end of stream).
        private mutating func readOnce(from descriptor: FileDescriptor) throws -> Bool {
            if sawEnd { return false }
            var received: ReceivedBytes
            do throws(Errno) {
                if let header = current, tail == head,
                    header.length - currentFilled > MessageStream.directReadThreshold
                {
                    // Read straight into the message's own array.
                    growPayload(toHold: currentFilled + 1, of: header.length)
                    let offset = currentFilled
                    var result: Result<ReceivedBytes, Errno> = .success(
                        ReceivedBytes(count: 0, descriptors: [], truncated: false))
                    currentPayload.withUnsafeMutableBytes { raw in
                        result = Result { () throws(Errno) in
                            try descriptor.receive(
                                into: UnsafeMutableRawBufferPointer(rebasing: raw[offset...]), nonBlocking: true)
                        }
                    }
                    received = try result.get()
                    currentFilled += received.count
                    if received.count > 0 && currentFilled < header.length {
                        // Part of a large payload read; the sender still has more to write.
                        FaultInjection.step("stream.receive.midPayload")
                    }
                } else {
                    if head == tail {
                        head = 0
                        tail = 0
                    } else if head > 0 && storage.count - tail < MessageStream.chunkSize / 2 {
                        storage.baseAddress!.copyMemory(from: storage.baseAddress! + head, byteCount: tail - head)
                        tail -= head
                        head = 0
                    }
                    received = try descriptor.receive(
                        into: UnsafeMutableRawBufferPointer(rebasing: storage[tail...]), nonBlocking: true)
                    tail += received.count
                }
            } catch .wouldBlock {
                return false
            } catch .connectionReset {
                received = ReceivedBytes(count: 0, descriptors: [], truncated: false)
            } catch {
                throw ConnectionError.system(error, during: "receiving a message")
            }
            if !received.descriptors.isEmpty || received.truncated {
                batches.append(DescriptorBatch(descriptors: received.descriptors, truncated: received.truncated))
            }
            if received.count == 0 { sawEnd = true }
            return received.count > 0
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

    /// A look found a message `elapsed` after it began. Within the window, looking paid off.
    /// Past it, a `sched_yield` gave the CPU away for a whole time slice (other programs keep
    /// the CPUs busy): the message came meanwhile, but the look cost far more than sleeping
    /// would have, and would again on every receive, since it keeps "finding" (measured: a
    /// pool of 2 workers with 2 CPU hogs running took 148 s for what took 16 s without
    /// looking). So it counts as a miss, and the next receives sleep.
    mutating func found(after elapsed: Duration) {
        if elapsed > Self.window {
            missed()
        } else {
            misses = 0
        }
    }

    mutating func missed() {
        misses = min(misses + 1, 10)
        skip = 1 << misses
    }
}
