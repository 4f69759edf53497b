import CMultiprocessing
import Glibc
import SystemPackage

/// The way a queue's items go when they cannot be bytes in its ring: items that hold
/// handles (their descriptors must travel through a socket, as SCM_RIGHTS) and items whose
/// encoding is larger than half the ring.
///
/// A `SOCK_SEQPACKET` socket pair made with the queue, both ends in every handle of it:
/// producers send on one end, consumers receive on the other. A side item is one datagram
/// (all or nothing: a process killed while sending leaves a whole datagram or none) holding
/// a header with a sequence number, the item's bytes (inline up to ``inlineLimit``, else in a
/// memory file whose descriptor rides along), and the item's own descriptors. The ring gets
/// a *placeholder* record carrying the same sequence number, so side items keep their place
/// among the others, and count for ``Queue/count``, `maxSize`, `close()` and
/// ``JoinableQueue`` exactly like ring items.
///
/// The ring's locks order the socket: a producer sends the datagram, then publishes the
/// placeholder, both holding the producers' lock; a consumer holding the consumers' lock
/// *peeks* at the datagram of the placeholder it took (copies of the descriptors come to it,
/// the datagram stays queued), steps the ring's head past the placeholder, and only then
/// drops the datagram. A process killed at any point leaves the queue usable:
///
/// - a producer killed between sending and publishing leaves an *orphan* datagram, whose
///   sequence number is lower than that of any placeholder published later: consumers drop
///   it (with its descriptors) when they meet it;
/// - a consumer killed before stepping the head leaves the datagram queued and the
///   placeholder in the ring: the next consumer takes the item;
/// - a consumer killed after stepping the head and before dropping the datagram leaves it
///   at the front with a sequence number lower than the next placeholder's: an orphan.
///
/// No datagram is waited for: one is always sent before its placeholder is visible.
final class QueueSideChannel: Sendable {
    /// Where producers send.
    let sender: FileDescriptor
    /// Where consumers receive.
    let receiver: FileDescriptor

    /// Item bytes up to this size go in the datagram; larger ones in a memory file.
    let inlineLimit: Int
    /// The largest ``inlineLimit``: far below the socket's send buffer (about 208 KiB by
    /// default), so a datagram always fits and several wait at once.
    static let maximumInline = 32 << 10
    /// The most descriptors one datagram carries (`SCM_MAX_FD`).
    static let maximumDescriptors = 253

    /// A new socket pair, both ends close-on-exec.
    init() throws {
        var fds: [Int32] = [-1, -1]
        do throws(Errno) {
            _ = try systemCall {
                socketpair(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds)
            }
        } catch {
            throw ConnectionError.system(error, during: "creating a queue's socket pair (socketpair)")
        }
        sender = FileDescriptor(rawValue: fds[0])
        receiver = FileDescriptor(rawValue: fds[1])
        // The send buffer bounds the side items waiting at once (their datagrams), about 280
        // small ones with the default 208 KiB. Ask for more: the kernel caps the request at
        // `net.core.wmem_max` (4 MiB on the project's VM: about 5,000), and only what is
        // queued costs memory. A refusal leaves the default.
        var size = Self.sendBuffer
        _ = setsockopt(sender.rawValue, SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        inlineLimit = Self.inlineLimit(sendingOn: sender)
    }

    /// The send buffer asked for (see ``init()``).
    static let sendBuffer: Int32 = 4 << 20

    /// Adopts ends that came with a queue handle.
    init(sender: FileDescriptor, receiver: FileDescriptor) {
        self.sender = sender
        self.receiver = receiver
        inlineLimit = Self.inlineLimit(sendingOn: sender)
    }

    /// ``maximumInline``, or less where the system's socket send buffers are small (a
    /// datagram larger than the buffer could never be sent): a quarter of the buffer.
    private static func inlineLimit(sendingOn socket: FileDescriptor) -> Int {
        var size: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        guard getsockopt(socket.rawValue, SOL_SOCKET, SO_SNDBUF, &size, &length) == 0 else { return 0 }
        return max(0, min(maximumInline, Int(size) / 4 - Header.size))
    }

    deinit {
        sender.closeIgnoringErrors()
        receiver.closeIgnoringErrors()
    }

    // MARK: Datagrams

    /// The header of a datagram.
    struct Header {
        static let size = 32
        static let magic: UInt32 = 0x5351_504d  // "MPQS"

        var sequence: UInt64
        /// The item's bytes.
        var length: Int
        /// Whether the bytes are in a memory file (its descriptor is the last one).
        var inMemoryFile: Bool
        /// The item's own descriptors (the first ones).
        var itemDescriptors: Int

        func write(to buffer: UnsafeMutableRawBufferPointer) {
            buffer.storeBytes(of: Self.magic, toByteOffset: 0, as: UInt32.self)
            buffer.storeBytes(of: inMemoryFile ? 1 : 0, toByteOffset: 4, as: UInt32.self)
            buffer.storeBytes(of: sequence, toByteOffset: 8, as: UInt64.self)
            buffer.storeBytes(of: UInt64(length), toByteOffset: 16, as: UInt64.self)
            buffer.storeBytes(of: UInt32(itemDescriptors), toByteOffset: 24, as: UInt32.self)
        }

        /// The header at the start of `buffer`; `nil` if it is not one.
        init?(_ buffer: UnsafeRawBufferPointer) {
            guard buffer.count >= Self.size, buffer.loadUnaligned(as: UInt32.self) == Self.magic else { return nil }
            inMemoryFile = buffer.loadUnaligned(fromByteOffset: 4, as: UInt32.self) != 0
            sequence = buffer.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
            length = Int(truncatingIfNeeded: buffer.loadUnaligned(fromByteOffset: 16, as: UInt64.self))
            itemDescriptors = Int(buffer.loadUnaligned(fromByteOffset: 24, as: UInt32.self))
            guard length >= 0 else { return nil }
        }

        init(sequence: UInt64, length: Int, inMemoryFile: Bool, itemDescriptors: Int) {
            self.sequence = sequence
            self.length = length
            self.inMemoryFile = inMemoryFile
            self.itemDescriptors = itemDescriptors
        }
    }

    /// An item made ready to send, before any lock is taken: only its sequence number is
    /// missing.
    struct Outgoing {
        /// The item's bytes when they go inline.
        var inline: [UInt8]
        /// The memory file holding them otherwise (closed here once the datagram is sent or
        /// dropped: the datagram holds its own reference).
        var memoryFile: SharedRegion?
        var length: Int
        var itemDescriptors: [Int32]

        /// Prepares `bytes` and the item's `descriptors`, the bytes inline up to `inlineLimit`.
        init(_ bytes: UnsafeRawBufferPointer, descriptors: [FileDescriptor], inlineLimit: Int) throws {
            length = bytes.count
            itemDescriptors = descriptors.map(\.rawValue)
            if bytes.count <= inlineLimit {
                inline = Array(bytes)
                memoryFile = nil
            } else {
                guard descriptors.count < QueueSideChannel.maximumDescriptors else {
                    throw WireError.unencodable(
                        "a queue item larger than \(inlineLimit) bytes can hold at most "
                            + "\(QueueSideChannel.maximumDescriptors - 1) handles",
                        codingPath: "")
                }
                inline = []
                let file = try SharedRegion(size: bytes.count)
                if let source = bytes.baseAddress { file.base.copyMemory(from: source, byteCount: bytes.count) }
                memoryFile = file
            }
        }
    }

    /// Sends `item` as the datagram numbered `sequence`, without waiting: `false` if the
    /// socket has no room now (nothing was sent).
    ///
    /// - Throws: ``ConnectionError/system(_:during:)`` if the system refuses it, most often
    ///   because too many descriptors are in flight (`ETOOMANYREFS`). Nothing was sent.
    func trySend(_ item: Outgoing, sequence: UInt64) throws -> Bool {
        let header = Header(
            sequence: sequence, length: item.length, inMemoryFile: item.memoryFile != nil,
            itemDescriptors: item.itemDescriptors.count)
        var descriptors = item.itemDescriptors
        if let file = item.memoryFile { descriptors.append(file.descriptor.rawValue) }
        return try withUnsafeTemporaryAllocation(byteCount: Header.size, alignment: 8) { headerBytes in
            header.write(to: headerBytes)
            return try item.inline.withUnsafeBytes { payload in
                do throws(Errno) {
                    _ = try sender.send(
                        UnsafeRawBufferPointer(headerBytes), payload, descriptors: descriptors, nonBlocking: true)
                    return true
                } catch .wouldBlock {
                    return false
                } catch .tooManyReferences {
                    throw ConnectionError.system(
                        .tooManyReferences,
                        during:
                            "putting an item holding \(item.itemDescriptors.count) handles into a queue: too many "
                            + "descriptors are in flight (unread items holding handles count against RLIMIT_NOFILE)")
                } catch {
                    throw ConnectionError.system(error, during: "sending a queue item of \(item.length) bytes")
                }
            }
        }
    }

    /// Waits until the socket may have room for a datagram, or the deadline passes.
    func waitForRoom(deadline: Deadline?) {
        sender.waitWritable(deadline: deadline)
    }

    /// An item received, its descriptors now open in this process.
    final class Incoming {
        private let storage: UnsafeMutableRawBufferPointer?
        private let memoryFile: SharedRegion?
        private let length: Int
        /// The item's descriptors, for its decoder; closes those no handle took.
        let inbox: DescriptorInbox

        init(storage: UnsafeMutableRawBufferPointer?, memoryFile: SharedRegion?, length: Int, inbox: DescriptorInbox) {
            self.storage = storage
            self.memoryFile = memoryFile
            self.length = length
            self.inbox = inbox
        }

        /// The item's bytes (16-byte aligned), valid during `body`.
        func withBytes<Result>(_ body: (UnsafeRawBufferPointer) throws -> Result) rethrows -> Result {
            if let memoryFile { return try body(UnsafeRawBufferPointer(start: memoryFile.base, count: length)) }
            guard let storage else { return try body(UnsafeRawBufferPointer(start: nil, count: 0)) }
            return try body(UnsafeRawBufferPointer(rebasing: storage[Header.size..<Header.size + length]))
        }

        deinit {
            storage?.deallocate()
            inbox.closeUnclaimed()
        }
    }

    /// Copies the datagram numbered `sequence` out of the socket, leaving it queued
    /// (`MSG_PEEK`); call holding the consumers' lock, with the placeholder `sequence` taken
    /// from the ring and not yet stepped over. Orphans met first (lower numbers) are dropped.
    ///
    /// - Returns: `nil` if the datagram is not there (a consumer killed after dropping it):
    ///   the placeholder is to be skipped.
    /// - Throws: ``ConnectionError/descriptorsLost(expected:received:)`` if the descriptors
    ///   could not all be opened here (this process at its descriptor limit): the item stays
    ///   in the queue.
    func peek(sequence: UInt64) throws -> Incoming? {
        while true {
            guard let header = try peekHeader() else { return nil }
            if header.sequence < sequence {
                FaultInjection.step("queue.getSide.droppingOrphan")
                dropFront()
                continue
            }
            if header.sequence > sequence { return nil }
            return try peekWhole(header)
        }
    }

    /// The header of the first datagram without taking it; `nil` if there is none. A
    /// datagram that is not a side item's is dropped.
    private func peekHeader() throws -> Header? {
        try withUnsafeTemporaryAllocation(byteCount: Header.size, alignment: 8) { buffer in
            while true {
                // No room for descriptors: a peek without it leaves them in the datagram.
                let count = recv(receiver.rawValue, buffer.baseAddress, Header.size, Int32(MSG_PEEK | MSG_DONTWAIT))
                if count < 0 {
                    let error = Errno(rawValue: errno)
                    if error == .interrupted { continue }
                    if error == .wouldBlock { return nil }
                    throw ConnectionError.system(error, during: "reading a queue item's header")
                }
                if let header = Header(UnsafeRawBufferPointer(rebasing: buffer[..<count])) { return header }
                dropFront()
            }
        }
    }

    /// Copies the first datagram, described by `header`, and copies of its descriptors.
    private func peekWhole(_ header: Header) throws -> Incoming {
        let size = Header.size + (header.inMemoryFile ? 0 : header.length)
        let storage = UnsafeMutableRawBufferPointer.allocate(byteCount: max(size, 1), alignment: 16)
        var received: Int32 = 0
        var truncated: Int32 = 0
        let result = withUnsafeTemporaryAllocation(of: Int32.self, capacity: Self.maximumDescriptors) { fds in
            do throws(Errno) {
                let count = try systemCall {
                    mp_receive_with_fds(
                        receiver.rawValue, storage.baseAddress, size, fds.baseAddress, Int32(Self.maximumDescriptors),
                        &received, &truncated, Int32(MSG_PEEK | MSG_DONTWAIT))
                }
                return Result<(Int, [FileDescriptor]), Errno>.success(
                    (count, fds.prefix(Int(received)).map(FileDescriptor.init(rawValue:))))
            } catch {
                return .failure(error)
            }
        }
        let (count, descriptors): (Int, [FileDescriptor])
        do {
            (count, descriptors) = try result.get()
        } catch {
            storage.deallocate()
            throw ConnectionError.system(error, during: "receiving a queue item of \(header.length) bytes")
        }
        let expected = header.itemDescriptors + (header.inMemoryFile ? 1 : 0)
        guard truncated == 0, descriptors.count == expected, count == size else {
            storage.deallocate()
            for descriptor in descriptors { descriptor.closeIgnoringErrors() }
            throw ConnectionError.descriptorsLost(expected: expected, received: descriptors.count)
        }
        guard header.inMemoryFile, let last = descriptors.last else {
            return Incoming(
                storage: storage, memoryFile: nil, length: header.length, inbox: DescriptorInbox(descriptors))
        }
        storage.deallocate()
        let inbox = DescriptorInbox(Array(descriptors.dropLast()))
        let file: SharedRegion
        do {
            file = try SharedRegion(adopting: last)
        } catch {
            last.closeIgnoringErrors()
            inbox.closeUnclaimed()
            throw error
        }
        guard file.size >= header.length else {
            inbox.closeUnclaimed()
            throw WireError.invalidData(
                "a queue item's memory file holds \(file.size) bytes, fewer than its \(header.length)", codingPath: "")
        }
        return Incoming(storage: nil, memoryFile: file, length: header.length, inbox: inbox)
    }

    /// Drops every datagram in the socket (all orphans: see
    /// ``QueueRing/putPlaceholder(deadline:check:afterSend:send:waitForRoom:dropOrphans:)``);
    /// returns how many.
    func dropAll() -> Int {
        var dropped = 0
        var byte: UInt8 = 0
        while true {
            let count = recv(receiver.rawValue, &byte, 1, Int32(MSG_DONTWAIT))
            if count < 0 && errno == EINTR { continue }
            if count < 0 { return dropped }
            dropped += 1
        }
    }

    /// Drops the first datagram, if any, with its descriptors (never opened here: with no
    /// room for them, the kernel releases them).
    func dropFront() {
        var byte: UInt8 = 0
        while recv(receiver.rawValue, &byte, 1, Int32(MSG_DONTWAIT)) < 0 && errno == EINTR {}
    }
}
