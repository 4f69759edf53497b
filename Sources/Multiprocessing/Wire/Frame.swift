/// The 8-byte header in front of every message on a connection:
///
/// | bytes | field |
/// |---|---|
/// | 0-1 | magic `MP` (0x4D 0x50) |
/// | 2 | format version (1) |
/// | 3 | number of descriptors sent with the message (SCM_RIGHTS) |
/// | 4-7 | payload length, little-endian `UInt32` |
///
/// Boundaries are kept: an empty payload is a message. The magic catches a peer that
/// writes something else on the socket, or a stream that lost its place.
struct FrameHeader: Equatable {
    static let size = 8
    static let magic: UInt16 = 0x504D  // "MP" read as little-endian
    static let version: UInt8 = 1
    /// The largest payload the header can describe.
    static let maximumLength = Int(UInt32.max)

    var length: Int
    var descriptorCount: Int

    init(length: Int, descriptorCount: Int) {
        precondition(length <= Self.maximumLength && descriptorCount <= 253)
        self.length = length
        self.descriptorCount = descriptorCount
    }

    /// Reads a header, checking magic and version.
    init(parsing bytes: UnsafeRawBufferPointer) throws(WireError) {
        precondition(bytes.count >= Self.size)
        let magic = UInt16(bytes[0]) | UInt16(bytes[1]) << 8
        guard magic == Self.magic else { throw .badMagic(found: magic) }
        guard bytes[2] == Self.version else { throw .unsupportedVersion(bytes[2]) }
        descriptorCount = Int(bytes[3])
        length = Int(bytes.loadUnaligned(fromByteOffset: 4, as: UInt32.self).littleEndian)
    }

    /// Writes the header into the first 8 bytes of `bytes`.
    func write(to bytes: UnsafeMutableRawBufferPointer) {
        bytes[0] = UInt8(Self.magic & 0xFF)
        bytes[1] = UInt8(Self.magic >> 8)
        bytes[2] = Self.version
        bytes[3] = UInt8(descriptorCount)
        bytes.storeBytes(of: UInt32(length).littleEndian, toByteOffset: 4, as: UInt32.self)
    }

    /// The header as bytes.
    var bytes: [UInt8] {
        [UInt8](unsafeUninitializedCapacity: Self.size) { buffer, count in
            write(to: UnsafeMutableRawBufferPointer(buffer))
            count = Self.size
        }
    }
}
