import Glibc
import SystemPackage

/// Memory that every process holding the handle sees: an anonymous memory file (memfd)
/// mapped in each of them. The engine under shared values, arrays, locks and queues.
///
/// - Anonymous: it has no name in `/dev/shm`, so nothing can leak there, whatever way the
///   processes end; the memory goes when the last descriptor and mapping are gone.
/// - Shared, not moved: encoding a region for another process sends a copy of its
///   descriptor, and this process keeps its own (any number of children may hold it).
/// - New memory reads as zeros.
final class SharedRegion: Sendable, Codable {
    let descriptor: FileDescriptor
    let mapping: MemoryMapping

    /// The first byte.
    var base: UnsafeMutableRawPointer { mapping.base }
    /// The size in bytes.
    var size: Int { mapping.size }

    /// New zeroed memory of `size` bytes (at least 1).
    init(size: Int) throws {
        precondition(size > 0, "a shared region has at least one byte")
        do throws(Errno) {
            descriptor = try makeMemoryFile(size: size)
        } catch {
            throw ConnectionError.system(error, during: "creating \(size) bytes of shared memory (memfd_create)")
        }
        do throws(Errno) {
            mapping = try MemoryMapping(descriptor, size: size)
        } catch {
            descriptor.closeIgnoringErrors()
            throw ConnectionError.system(error, during: "mapping \(size) bytes of shared memory")
        }
    }

    /// Maps a region whose descriptor came from another process.
    init(adopting descriptor: FileDescriptor) throws {
        self.descriptor = descriptor
        do throws(Errno) {
            mapping = try MemoryMapping(wholeFileOf: descriptor)
        } catch {
            throw ConnectionError.system(error, during: "mapping shared memory received from another process")
        }
    }

    deinit {
        mapping.unmap()
        descriptor.closeIgnoringErrors()
    }

    /// Encodes a copy of the region for another process: only the library's own encoder
    /// can (the descriptor travels beside the message).
    func encode(to encoder: any Encoder) throws {
        guard let outbox = encoder.userInfo[.descriptorOutbox] as? DescriptorOutbox else {
            throw EncodingError.invalidValue(
                size,
                .init(
                    codingPath: encoder.codingPath,
                    debugDescription: "shared memory can only be encoded by swift-multiprocessing, for another process")
            )
        }
        var container = encoder.singleValueContainer()
        try container.encode(try outbox.add(descriptor))
    }

    /// Maps the region that came with a message.
    convenience init(from decoder: any Decoder) throws {
        guard let inbox = decoder.userInfo[.descriptorInbox] as? DescriptorInbox else {
            throw DecodingError.dataCorrupted(
                .init(
                    codingPath: decoder.codingPath,
                    debugDescription: "shared memory can only be decoded by swift-multiprocessing"))
        }
        let index = try decoder.singleValueContainer().decode(Int.self)
        try self.init(adopting: try inbox.take(index))
    }
}
