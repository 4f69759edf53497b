/// Why a message could not be encoded, framed or decoded.
///
/// One error type covers the whole wire: the binary codec (``BinaryEncoder`` and
/// ``BinaryDecoder``) and the framing around it. A peer that sends garbage must never
/// crash the receiver, so every way the bytes can be wrong has a case here, and each case
/// carries enough context (sizes, keys, the coding path rendered as `items[3].x`) to find
/// the mismatch without a debugger. Coding paths are rendered to text only when an error
/// is thrown, never on the success path.
///
/// Errors thrown by a type's own `encode(to:)` or `init(from:)` are not wrapped in this
/// type; they reach the caller unchanged.
public enum WireError: Error, Sendable, CustomStringConvertible {
    /// A frame did not start with the protocol's magic number: the peer is not speaking
    /// this protocol, or the stream lost its framing.
    case badMagic(found: UInt16)

    /// A frame announced a format version this build cannot read.
    case unsupportedVersion(UInt8)

    /// The input ended before a value was complete: `needed` bytes were required at
    /// `codingPath` but only `available` were left.
    ///
    /// For a declared element or entry count, `needed` is the least number of bytes the
    /// elements can occupy, which is how an absurd count is refused before anything is
    /// allocated for it.
    case truncated(needed: Int, available: Int, codingPath: String)

    /// A message is larger than the configured maximum, so it was refused instead of
    /// buffered.
    case oversized(size: Int, limit: Int)

    /// The bytes hold something other than what the decoding type asked for, for example
    /// key `"x"` was requested but the next encoded key is `"name"`.
    case typeMismatch(expected: String, found: String, codingPath: String)

    /// The bytes cannot be a valid encoding: a bool byte other than 0 or 1, invalid UTF-8,
    /// an optional tag other than 0 or 1, an overlong varint, nesting that is too deep.
    case invalidData(String, codingPath: String)

    /// Decoding the requested type finished with `count` bytes still unread. The format
    /// is not self-describing, so this is usually the sign that the data was encoded from
    /// a different type than `type`.
    case trailingBytes(count: Int, type: String)

    /// The value cannot be represented in this format (for example more than
    /// `UInt32.max` elements in one container, or values nested more deeply than the
    /// decoder accepts, which usually means a reference cycle).
    case unencodable(String, codingPath: String)

    /// A one-sentence explanation suitable for logs and test failures.
    public var description: String {
        switch self {
        case .badMagic(let found):
            let hex = String(found, radix: 16, uppercase: true)
            let padded = String(repeating: "0", count: max(0, 4 - hex.utf8.count)) + hex
            return "bad frame magic 0x\(padded): the bytes are not a swift-multiprocessing frame"
        case .unsupportedVersion(let version):
            return "unsupported wire format version \(version)"
        case .truncated(let needed, let available, let codingPath):
            return "truncated message: needed \(needed) bytes at \(Self.location(codingPath)), only \(available) left"
        case .oversized(let size, let limit):
            return "message of \(size) bytes exceeds the limit of \(limit) bytes"
        case .typeMismatch(let expected, let found, let codingPath):
            return "type mismatch at \(Self.location(codingPath)): expected \(expected), found \(found)"
        case .invalidData(let reason, let codingPath):
            return "invalid data at \(Self.location(codingPath)): \(reason)"
        case .trailingBytes(let count, let type):
            return
                "\(count) bytes left unread after decoding \(type): the data was probably encoded from a different type"
        case .unencodable(let reason, let codingPath):
            return "cannot encode the value at \(Self.location(codingPath)): \(reason)"
        }
    }

    /// Renders an empty coding path (the value passed to `encode`/`decode` itself) as words,
    /// so a sentence never reads "at ,".
    private static func location(_ codingPath: String) -> String {
        codingPath.isEmpty ? "the top level" : codingPath
    }
}
