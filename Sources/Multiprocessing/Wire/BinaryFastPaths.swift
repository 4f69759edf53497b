import Synchronization

// Types the binary codec encodes its own way instead of through their Codable conformance.
//
// The encoder and decoder check `T.self as? any _BinaryEncodingSpecial.Type` (one cached
// conformance lookup) whenever a generic, non-primitive value goes through them, and hand
// the value to the conformance below when it matches:
//
// - Optional: a tag byte (0 = nil, 1 = some) then the wrapped value. Optional's own
//   Codable writes a bare `encodeNil()` or the bare value, which is ambiguous here
//   (`Int?.some(0)` would start with the same 0 byte as nil) and flattens `Int??`.
// - Dictionary: a pair count then key, value, key, value. Dictionary's own Codable uses a
//   keyed container for String and Int keys and decodes it through `allKeys`, which a
//   sequential format cannot list. For String keys the bytes are identical to a keyed
//   container's.
// - Arrays of fixed-width numbers: an element count then the raw little-endian element
//   bytes, copied with one memcpy each way. The bytes are exactly what the element-wise
//   unkeyed encoding would produce, so the fast path is invisible in the format.

/// A value the binary encoder writes itself when it reaches it through a generic `encode`.
protocol _BinaryEncodingSpecial {
    /// Writes `self` at the encoder's current path.
    func _encodeBinary(into encoder: _BinaryEncoderImpl) throws
}

/// A type the binary decoder reads itself when it is requested through a generic `decode`.
protocol _BinaryDecodingSpecial {
    /// Reads a value at the decoder's current path. On error the caller restores the
    /// read position.
    static func _decodeBinary(from decoder: _BinaryDecoderImpl) throws -> Self
}

/// Element types whose arrays are copied as raw bytes.
///
/// Every conforming type is a fixed-width number whose in-memory representation on the
/// supported (little-endian) targets is exactly its wire encoding, and for which EVERY bit
/// pattern is a valid value, so copying untrusted bytes into it cannot create an invalid
/// value. `Bool` is deliberately absent: a byte other than 0 or 1 is not a valid `Bool`.
/// `Float16` is absent because its Codable encoding is a 4-byte `Float`.
protocol _BinaryTrivialElement: BitwiseCopyable {}

extension UInt8: _BinaryTrivialElement {}
extension Int8: _BinaryTrivialElement {}
extension UInt16: _BinaryTrivialElement {}
extension Int16: _BinaryTrivialElement {}
extension UInt32: _BinaryTrivialElement {}
extension Int32: _BinaryTrivialElement {}
extension UInt64: _BinaryTrivialElement {}
extension Int64: _BinaryTrivialElement {}
extension UInt: _BinaryTrivialElement {}
extension Int: _BinaryTrivialElement {}
extension Float: _BinaryTrivialElement {}
extension Double: _BinaryTrivialElement {}

/// Looks up, for each of `types`, whether the codec reads it its own way: the runtime's
/// conformance lookup, done once per type and process (a search through every conformance
/// the program holds, 15-40 µs in a fresh worker), is then cached for this process and for
/// every process forked from it (see ``ForkServerPrepared``). Returns how many of the
/// types have a fast path, which the caller must use: a cast whose result nobody reads has
/// no effect the optimizer must keep, and a release build dropped the lookups (measured:
/// no worker start got faster until the result was kept).
func _lookUpBinaryFastPaths(for types: [any Decodable.Type]) -> Int {
    // Through a generic function, as the codec asks (`T.self as? ...`): a cast of the
    // existential metatype does not leave in the runtime's caches what the codec's asks
    // find (measured: the codec's first ask still took 7-30 µs after it).
    func lookUp<T>(_: T.Type) -> Int {
        ((T.self as? any _BinaryDecodingSpecial.Type) != nil ? 1 : 0)
            + ((T.self as? any _BinaryEncodingSpecial.Type) != nil ? 1 : 0)
    }
    return types.reduce(0) { $0 + _openExistential($1, do: lookUp) }
}

/// For tests: the types a decoder looked its fast path up for, when it is given one under
/// `CodingUserInfoKey.fastPathLookups`.
final class _BinaryFastPathLookups: Sendable {
    private let types = Mutex<[(id: ObjectIdentifier, name: String)]>([])

    func note(_ type: Any.Type) {
        let id = ObjectIdentifier(type)
        types.withLock { types in
            if !types.contains(where: { $0.id == id }) { types.append((id, String(reflecting: type))) }
        }
    }

    /// The names of the types looked up that are not among `known`.
    func names(notIn known: [any Decodable.Type]) -> [String] {
        let ids = Set(known.map { ObjectIdentifier($0) })
        return types.withLock { $0.filter { !ids.contains($0.id) }.map(\.name) }
    }

    /// How many types were looked up.
    var count: Int { types.withLock { $0.count } }
}

extension CodingUserInfoKey {
    /// A ``_BinaryFastPathLookups`` that a decoder notes the types it looks up in.
    static let fastPathLookups = CodingUserInfoKey(rawValue: "swift-multiprocessing.fast-path-lookups")!
}

/// The last few types found to have no fast path, so that coding many values of one
/// type (the elements of an array of structs) does not repeat the runtime's conformance
/// lookup, a hash-table search, for each of them.
struct _BinaryOrdinaryTypeCache {
    private var entries: (ObjectIdentifier?, ObjectIdentifier?, ObjectIdentifier?, ObjectIdentifier?) =
        (nil, nil, nil, nil)
    private var next = 0

    @inline(__always)
    func contains(_ id: ObjectIdentifier) -> Bool {
        entries.0 == id || entries.1 == id || entries.2 == id || entries.3 == id
    }

    mutating func insert(_ id: ObjectIdentifier) {
        switch next {
        case 0: entries.0 = id
        case 1: entries.1 = id
        case 2: entries.2 = id
        default: entries.3 = id
        }
        next = (next + 1) & 3
    }
}

// MARK: - Optional

extension Optional: _BinaryEncodingSpecial where Wrapped: Encodable {
    func _encodeBinary(into encoder: _BinaryEncoderImpl) throws {
        switch self {
        case .none:
            encoder.writeByte(0)
        case .some(let wrapped):
            encoder.writeByte(1)
            try encoder.encodeValue(wrapped, at: encoder.currentSpot, appending: nil)
        }
    }
}

extension Optional: _BinaryDecodingSpecial where Wrapped: Decodable {
    static func _decodeBinary(from decoder: _BinaryDecoderImpl) throws -> Self {
        let tag = try decoder.readFixed(UInt8.self, decoder.currentPathString)
        switch tag {
        case 0:
            return .none
        case 1:
            return .some(try decoder.decodeValue(Wrapped.self, at: decoder.currentSpot, appending: nil))
        default:
            decoder.position -= 1
            throw WireError.invalidData(
                "an optional's tag byte must be 0 (nil) or 1 (some), found \(tag)",
                codingPath: decoder.currentPathString)
        }
    }
}

// MARK: - Dictionary

extension Dictionary: _BinaryEncodingSpecial where Key: Encodable, Value: Encodable {
    func _encodeBinary(into encoder: _BinaryEncoderImpl) throws {
        guard count <= Int(UInt32.max) else {
            throw WireError.unencodable(
                "a dictionary of \(count) entries exceeds the format's limit of \(UInt32.max)",
                codingPath: encoder.currentPathString)
        }
        encoder.writeFixed(UInt32(count))
        let spot = encoder.currentSpot
        var index = 0
        for (key, value) in self {
            try encoder.encodeValue(key, at: spot, appending: .index(index))
            try encoder.encodeValue(value, at: spot, appending: .index(index))
            index += 1
        }
    }
}

extension Dictionary: _BinaryDecodingSpecial where Key: Decodable, Value: Decodable {
    static func _decodeBinary(from decoder: _BinaryDecoderImpl) throws -> Self {
        // Each key and each value takes at least one byte: refuse an impossible count
        // before reserving anything for it.
        let count = try decoder.readCount(bytesPerElement: 2, decoder.currentPathString)
        var result = Self(minimumCapacity: count)
        let spot = decoder.currentSpot
        for index in 0..<count {
            let key = try decoder.decodeValue(Key.self, at: spot, appending: .index(index))
            let value = try decoder.decodeValue(Value.self, at: spot, appending: .index(index))
            if result.updateValue(value, forKey: key) != nil {
                throw WireError.invalidData(
                    "dictionary key \(key) appears twice", codingPath: decoder.pathString(spot, .index(index)))
            }
        }
        return result
    }
}

// MARK: - Arrays of fixed-width numbers

extension Array: _BinaryEncodingSpecial where Element: _BinaryTrivialElement {
    func _encodeBinary(into encoder: _BinaryEncoderImpl) throws {
        guard count <= Int(UInt32.max) else {
            throw WireError.unencodable(
                "an array of \(count) elements exceeds the format's limit of \(UInt32.max)",
                codingPath: encoder.currentPathString)
        }
        encoder.reserve(4 + count * MemoryLayout<Element>.stride)
        encoder.writeFixed(UInt32(count))
        withUnsafeBytes { encoder.writeRaw($0) }
    }
}

/// An array of fixed-width numbers encoded as the whole message: its bytes go straight
/// into the caller's array, one copy in all, instead of through the encoder's buffer.
protocol _BinaryTopLevelArray {
    func _appendBinary(to bytes: inout [UInt8]) throws
}

extension Array: _BinaryTopLevelArray where Element: _BinaryTrivialElement {
    func _appendBinary(to bytes: inout [UInt8]) throws {
        guard count <= Int(UInt32.max) else {
            throw WireError.unencodable(
                "an array of \(count) elements exceeds the format's limit of \(UInt32.max)", codingPath: "")
        }
        bytes.reserveCapacity(bytes.count + 4 + count * MemoryLayout<Element>.stride)
        Swift.withUnsafeBytes(of: UInt32(count).littleEndian) { bytes.append(contentsOf: $0) }
        withUnsafeBytes { bytes.append(contentsOf: $0) }
    }
}

extension Array: _BinaryDecodingSpecial where Element: _BinaryTrivialElement {
    static func _decodeBinary(from decoder: _BinaryDecoderImpl) throws -> Self {
        let stride = MemoryLayout<Element>.stride
        let count = try decoder.readCount(bytesPerElement: stride, decoder.currentPathString)
        let byteCount = count * stride
        guard count > 0 else { return [] }
        let source = decoder.rawBytes(at: decoder.position, count: byteCount)
        let result = Self(unsafeUninitializedCapacity: count) { buffer, initialized in
            UnsafeMutableRawBufferPointer(buffer).copyMemory(from: source)
            initialized = count
        }
        decoder.position += byteCount
        return result
    }
}
