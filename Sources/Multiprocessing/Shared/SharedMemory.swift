import Glibc
import SystemPackage

/// A named block of shared memory (Python's `shared_memory.SharedMemory`): any process that
/// knows the name can attach to it, not only the children that were given a handle.
///
/// ```swift
/// let segment = try SharedMemory(creating: nil, size: 4096)    // a fresh random name
/// segment.withUnsafeMutableBytes { $0.storeBytes(of: 42, as: Int.self) }
/// // elsewhere, in any process of this user:
/// let same = try SharedMemory(attachingTo: segment.name)
/// ```
///
/// - **Nothing is left behind.** The process that creates a segment owns it: when that
///   process exits, however it ends (a crash, SIGKILL), the segment is unlinked by a small
///   watcher process the library starts, which learns of the exit from a socket the kernel
///   closes. Pass `unlinkWhenOwnerExits: false` to keep it, and call ``unlink()`` yourself.
///   Attaching never registers anything (Python's resource tracker unlinks a segment when a
///   process that merely attached exits; this does not).
/// - **Private to the user**: created with mode 0600, exclusively (`O_EXCL`: creating never
///   opens a segment someone else made), and attaching accepts only this user's segments.
///   Any process of the same user can attach by the name (`/dev/shm` lists it): for memory
///   only your own children should see, use ``SharedArray`` or ``SharedValue``.
/// - New memory reads as zeros. Unnamed memory (``SharedArray``, ``SharedValue``) needs
///   none of this: it has no name to leak, and is the better choice between a parent and
///   its children.
/// - A handle is Codable: it travels as its name, and the receiver attaches.
public final class SharedMemory: Sendable, Codable {
    /// The segment's name (without the leading `/` of `/dev/shm`).
    public let name: String
    /// Its size in bytes.
    public var size: Int { mapping.size }
    private let mapping: MemoryMapping
    private let descriptor: FileDescriptor
    /// Whether this process created it and asked for it to be unlinked at its exit.
    private let tracked: Bool

    /// Creates a segment of `size` bytes (zeros) named `name`, or a random name if `nil`.
    /// - Throws: ``SharedMemoryError/alreadyExists(_:)`` if the name is taken (a random name
    ///   that collides is replaced, not reported), ``SharedMemoryError/invalidName(_:)``,
    ///   ``SharedMemoryError/invalidSize(_:)``.
    public init(creating name: String?, size: Int, unlinkWhenOwnerExits: Bool = true) throws {
        guard size > 0 else { throw SharedMemoryError.invalidSize(size) }
        if let name { try Self.check(name) }
        var chosen = name ?? Self.randomName()
        var opened: Int32
        while true {
            opened = shm_open("/" + chosen, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            if opened >= 0 { break }
            let error = Errno(rawValue: errno)
            if error == .fileExists {
                if name != nil { throw SharedMemoryError.alreadyExists(chosen) }
                chosen = Self.randomName()
                continue
            }
            if error == .interrupted { continue }
            throw SharedMemoryError.system(error, during: "creating shared memory \"\(chosen)\" (shm_open)")
        }
        let descriptor = FileDescriptor(rawValue: opened)
        do throws(Errno) {
            _ = try systemCall { ftruncate(opened, off_t(size)) }
            mapping = try MemoryMapping(descriptor, size: size)
        } catch {
            descriptor.closeIgnoringErrors()
            _ = shm_unlink("/" + chosen)
            throw SharedMemoryError.system(error, during: "sizing shared memory \"\(chosen)\" to \(size) bytes")
        }
        self.name = chosen
        self.descriptor = descriptor
        if unlinkWhenOwnerExits {
            do {
                try SegmentWatcher.shared.watch(chosen)
            } catch {
                mapping.unmap()
                descriptor.closeIgnoringErrors()
                _ = shm_unlink("/" + chosen)
                throw error
            }
        }
        tracked = unlinkWhenOwnerExits
    }

    /// Attaches to the segment named `name`, created by this or another process of the same
    /// user.
    /// - Throws: ``SharedMemoryError/notFound(_:)`` if there is none;
    ///   ``SharedMemoryError/system(_:during:)`` with `EACCES` if it belongs to another user
    ///   (checked even where the system would allow it, as for root).
    public init(attachingTo name: String) throws {
        try Self.check(name)
        let opened = shm_open("/" + name, O_RDWR | O_CLOEXEC, 0)
        guard opened >= 0 else {
            let error = Errno(rawValue: errno)
            if error == .noSuchFileOrDirectory { throw SharedMemoryError.notFound(name) }
            throw SharedMemoryError.system(error, during: "attaching to shared memory \"\(name)\" (shm_open)")
        }
        let descriptor = FileDescriptor(rawValue: opened)
        // Only this user's segments: a name is known to every process (/dev/shm is listed),
        // and a segment another user made under it (after ours was unlinked, or before we
        // looked) would feed us bytes that user controls. Root, which could open any, too.
        var status = stat()
        if fstat(opened, &status) == 0 && status.st_uid != geteuid() {
            descriptor.closeIgnoringErrors()
            throw SharedMemoryError.system(
                .permissionDenied,
                during: "attaching to shared memory \"\(name)\" of user \(status.st_uid) as user \(geteuid())")
        }
        do throws(Errno) {
            mapping = try MemoryMapping(wholeFileOf: descriptor)
        } catch {
            throw SharedMemoryError.system(error, during: "mapping shared memory \"\(name)\"")
        }
        self.name = name
        self.descriptor = descriptor
        tracked = false
    }

    deinit {
        mapping.unmap()
        descriptor.closeIgnoringErrors()
    }

    /// Calls `body` with the segment's bytes.
    public func withUnsafeMutableBytes<Result>(_ body: (UnsafeMutableRawBufferPointer) throws -> Result) rethrows
        -> Result
    {
        try body(UnsafeMutableRawBufferPointer(start: mapping.base, count: mapping.size))
    }

    /// Removes the name: no process can attach any more, and the memory goes once every
    /// process that has it mapped lets go. Unlinking twice is harmless.
    public func unlink() throws {
        if shm_unlink("/" + name) != 0 {
            let error = Errno(rawValue: errno)
            if error != .noSuchFileOrDirectory {
                throw SharedMemoryError.system(error, during: "unlinking shared memory \"\(name)\"")
            }
        }
        if tracked { SegmentWatcher.shared.forget(name) }
    }

    /// Encodes the name; the receiver attaches. Refused by an encoder whose message leaves
    /// this machine: the name means nothing on another.
    public func encode(to encoder: any Encoder) throws {
        if encoder.userInfo[.leavesMachine] as? Bool == true {
            throw EncodingError.invalidValue(
                name,
                .init(
                    codingPath: encoder.codingPath,
                    debugDescription:
                        "shared memory can only be encoded by swift-multiprocessing, for another process on this machine"
                ))
        }
        var container = encoder.singleValueContainer()
        try container.encode(name)
    }

    /// Attaches to the segment whose name was encoded.
    public convenience init(from decoder: any Decoder) throws {
        try self.init(attachingTo: try decoder.singleValueContainer().decode(String.self))
    }

    private static func check(_ name: String) throws {
        guard !name.isEmpty, name.utf8.count <= 200, !name.contains("/"), !name.utf8.contains(0) else {
            throw SharedMemoryError.invalidName(name)
        }
    }

    private static func randomName() -> String {
        var random = SystemRandomNumberGenerator()
        return "mp-\(getpid())-\(String(random.next() as UInt64, radix: 16))"
    }
}
