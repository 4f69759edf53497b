import Testing

@_spi(Fuzzing) @testable import Multiprocessing

// The frame reader fed crafted byte streams through the entry point the fuzz target uses
// (Fuzz/, see RELIABILITY.md): the same streams delivered whole and in small pieces must
// give the same messages, and every malformed stream a thrown error.

private func framed(_ payload: [UInt8], descriptorCount: Int = 0) -> [UInt8] {
    FrameHeader(length: payload.count, descriptorCount: descriptorCount).bytes + payload
}

/// What each receive produced, as text that names the error case.
private func outcomes(_ stream: [UInt8], pieceSize: Int, limit: Int = 1024) throws -> [String] {
    try stream.withUnsafeBytes { bytes in
        try WireFuzzing.receiveFrames(fromStream: bytes, pieceSize: pieceSize, maximumMessageSize: limit)
    }.map { result in
        switch result {
        case .success(let payload): "payload \(payload)"
        case .failure(WireError.oversized(let size, _)): "oversized \(size)"
        case .failure(WireError.invalidData): "invalidData"
        case .failure(WireError.badMagic): "badMagic"
        case .failure(WireError.unsupportedVersion): "unsupportedVersion"
        case .failure(ConnectionError.endOfStream): "endOfStream"
        case .failure(ConnectionError.peerClosedMidMessage): "peerClosedMidMessage"
        case .failure(let error): "unexpected \(error)"
        }
    }
}

@Suite("Frame stream")
struct FrameStreamTests {
    @Test("messages split at every byte arrive whole, an oversized one is skipped in step", arguments: [1, 3, 7, 4096])
    func splitDelivery(pieceSize: Int) throws {
        let stream =
            framed([]) + framed([1, 2, 3]) + framed([UInt8](repeating: 0xAB, count: 1500)) + framed([9])
            + framed([4], descriptorCount: 2) + framed([5])
        #expect(
            try outcomes(stream, pieceSize: pieceSize) == [
                "payload []", "payload [1, 2, 3]", "oversized 1500", "payload [9]", "invalidData", "payload [5]",
                "endOfStream",
            ])
    }

    @Test("a bad header ends the stream with a thrown error", arguments: [1, 64])
    func badHeaders(pieceSize: Int) throws {
        #expect(
            try outcomes(framed([1]) + [0x58, 0x58, 1, 0, 0, 0, 0, 0], pieceSize: pieceSize) == [
                "payload [1]", "badMagic",
            ])
        #expect(try outcomes([0x4D, 0x50, 9, 0, 0, 0, 0, 0], pieceSize: pieceSize) == ["unsupportedVersion"])
    }

    @Test("a stream that ends inside a header or a payload reports the cut", arguments: [1, 64])
    func cutShort(pieceSize: Int) throws {
        #expect(try outcomes(Array(framed([1, 2]).prefix(5)), pieceSize: pieceSize) == ["peerClosedMidMessage"])
        #expect(try outcomes(Array(framed([1, 2, 3]).dropLast()), pieceSize: pieceSize) == ["peerClosedMidMessage"])
        // A header claiming UInt32.max bytes: refused at once, not allocated, then cut short.
        let huge = FrameHeader(length: FrameHeader.maximumLength, descriptorCount: 0).bytes + [1, 2]
        #expect(
            try outcomes(huge, pieceSize: pieceSize) == [
                "oversized \(FrameHeader.maximumLength)", "peerClosedMidMessage",
            ])
    }

    @Test("the header parser needs eight bytes and checks magic and version")
    func headerParser() throws {
        func parse(_ bytes: [UInt8]) throws -> (length: Int, descriptorCount: Int)? {
            try bytes.withUnsafeBytes { try WireFuzzing.parseFrameHeader($0) }
        }
        #expect(try parse([UInt8](repeating: 0, count: 7)) == nil)
        let header = try parse(framed([1, 2, 3], descriptorCount: 4))
        #expect(header?.length == 3 && header?.descriptorCount == 4)
        #expect(throws: WireError.self) { try parse([0x4D, 0x51, 1, 0, 0, 0, 0, 0]) }
    }
}
