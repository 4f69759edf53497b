import SystemPackage

/// Entry points for the libFuzzer targets in `Fuzz/` (see RELIABILITY.md): the frame
/// parser and the message stream's framing are internal, and a fuzz target is a separate
/// package that cannot use `@testable import` (release builds lack `-enable-testing`).
///
/// `@_spi(Fuzzing)` rather than `package` access: the fuzz package is another package, so
/// `package` would not reach it. An SPI is invisible to `import Multiprocessing`, absent
/// from the documentation, and names only a small surface: bytes in, frames or thrown
/// errors out. (The binary decoder needs no entry point: ``BinaryDecoder`` is public.)
@_spi(Fuzzing)
public enum WireFuzzing {
    /// The size of a frame header in bytes.
    public static var frameHeaderSize: Int { FrameHeader.size }

    /// Parses the frame header in the first ``frameHeaderSize`` bytes of `bytes`; nil if
    /// there are fewer.
    ///
    /// - Throws: ``WireError/badMagic(found:)`` or ``WireError/unsupportedVersion(_:)``.
    public static func parseFrameHeader(
        _ bytes: UnsafeRawBufferPointer
    ) throws(WireError) -> (length: Int, descriptorCount: Int)? {
        guard bytes.count >= FrameHeader.size else { return nil }
        let header = try FrameHeader(parsing: UnsafeRawBufferPointer(rebasing: bytes[..<FrameHeader.size]))
        return (header.length, header.descriptorCount)
    }

    /// A frame header for a payload of `length` bytes (at most `UInt32.max`) sent with
    /// `descriptorCount` descriptors (at most 253), as bytes.
    public static func frameHeader(length: Int, descriptorCount: Int) -> [UInt8] {
        FrameHeader(length: length, descriptorCount: descriptorCount).bytes
    }

    /// Feeds `bytes` to a ``Connection``'s receiving machinery as the raw byte stream of a
    /// socket (no framing added), then the end of the stream, and returns what each
    /// receive produced, in order: a payload or the error it threw. Stops after the first
    /// ``ConnectionError``, or after the first error that leaves the stream unusable
    /// (``WireError/badMagic(found:)``, ``WireError/unsupportedVersion(_:)``), which
    /// every later receive would only repeat.
    ///
    /// The bytes are written in pieces of at most `pieceSize` bytes, each receive coming
    /// between two pieces, so that headers and payloads arrive split at every place.
    ///
    /// - Throws: ``ConnectionError`` if the socket pair cannot be made or written.
    public static func receiveFrames(
        fromStream bytes: UnsafeRawBufferPointer, pieceSize: Int, maximumMessageSize: Int
    ) throws -> [Result<[UInt8], any Error>] {
        precondition(pieceSize > 0, "pieceSize must be positive")
        let (writer, readerDescriptor) = try makeSocketPair()
        let reader = MessageStream(descriptor: readerDescriptor, maximumMessageSize: maximumMessageSize)
        var writerOpen = true
        defer {
            if writerOpen { writer.closeIgnoringErrors() }
            reader.close()
        }
        var results: [Result<[UInt8], any Error>] = []
        var offset = 0
        while true {
            if offset < bytes.count {
                let piece = UnsafeRawBufferPointer(rebasing: bytes[offset..<min(bytes.count, offset + pieceSize)])
                do {
                    offset += try writer.send(piece, nonBlocking: true)
                } catch .wouldBlock {
                    // The socket is full: the receive below makes room.
                } catch {
                    throw ConnectionError.system(error, during: "writing the fuzzed stream")
                }
            }
            if offset == bytes.count && writerOpen {
                writer.closeIgnoringErrors()
                writerOpen = false
            }
            do {
                guard let frame = try reader.receiveNow() else { continue }
                for descriptor in frame.descriptors { descriptor.closeIgnoringErrors() }
                results.append(.success(frame.payload))
            } catch {
                results.append(.failure(error))
                switch error {
                case is ConnectionError, WireError.badMagic, WireError.unsupportedVersion:
                    return results
                default:
                    continue
                }
            }
        }
    }
}
