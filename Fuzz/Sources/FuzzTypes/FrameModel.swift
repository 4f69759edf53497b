@_spi(Fuzzing) import Multiprocessing

/// The largest message the frame target's connection accepts: small, so that inputs of a
/// few KiB reach the oversized-message path.
public let frameTargetMessageLimit = 1024

/// What one receive from a connection produced, reduced to what the frame target compares.
public enum FrameOutcome: Equatable, CustomStringConvertible {
    case payload([UInt8])
    /// `WireError.oversized`: the message was refused, the stream stays in step.
    case oversized(Int)
    /// `WireError.invalidData`: the header announced descriptors that never came.
    case missingDescriptors
    /// `WireError.badMagic` or `.unsupportedVersion`: the stream is unusable.
    case badHeader
    /// `ConnectionError.endOfStream`.
    case end
    /// `ConnectionError.peerClosedMidMessage`.
    case cutShort

    /// The outcome of one receive; traps on an error the framing must never throw.
    public init(_ result: Result<[UInt8], any Error>) {
        switch result {
        case .success(let payload): self = .payload(payload)
        case .failure(WireError.oversized(let size, _)): self = .oversized(size)
        case .failure(WireError.invalidData): self = .missingDescriptors
        case .failure(WireError.badMagic), .failure(WireError.unsupportedVersion): self = .badHeader
        case .failure(ConnectionError.endOfStream): self = .end
        case .failure(ConnectionError.peerClosedMidMessage): self = .cutShort
        case .failure(let error): fatalError("receiving a fuzzed stream threw an unexpected error: \(error)")
        }
    }

    public var description: String {
        switch self {
        case .payload(let bytes): "payload(\(bytes.count) bytes)"
        case .oversized(let size): "oversized(\(size))"
        case .missingDescriptors: "missingDescriptors"
        case .badHeader: "badHeader"
        case .end: "end"
        case .cutShort: "cutShort"
        }
    }
}

/// What a connection must make of `stream` followed by its end: the framing rules
/// restated as simply as possible (8-byte headers: "MP", version 1, descriptor count,
/// little-endian length), as the oracle the real reader is compared with.
public func expectedOutcomes(of stream: [UInt8], maximumMessageSize limit: Int) -> [FrameOutcome] {
    var outcomes: [FrameOutcome] = []
    var position = 0
    while true {
        if position == stream.count { return outcomes + [.end] }
        if stream.count - position < 8 { return outcomes + [.cutShort] }
        guard stream[position] == 0x4D, stream[position + 1] == 0x50, stream[position + 2] == 1 else {
            return outcomes + [.badHeader]
        }
        let descriptorCount = Int(stream[position + 3])
        var length = 0
        for index in 0..<4 { length |= Int(stream[position + 4 + index]) << (8 * index) }
        position += 8
        if length > limit {
            outcomes.append(.oversized(length))
        }
        guard length <= stream.count - position else { return outcomes + [.cutShort] }
        if length <= limit {
            if descriptorCount > 0 {
                outcomes.append(.missingDescriptors)
            } else {
                outcomes.append(.payload(Array(stream[position..<position + length])))
            }
        }
        position += length
    }
}

/// Frames `payloads` as a connection sends them, with `descriptorCount` in each header
/// (no descriptors are actually sent).
public func framed(_ payloads: [[UInt8]], descriptorCount: Int = 0) -> [UInt8] {
    payloads.flatMap { WireFuzzing.frameHeader(length: $0.count, descriptorCount: descriptorCount) + $0 }
}
