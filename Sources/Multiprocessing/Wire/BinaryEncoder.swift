/// Encodes `Encodable` values into the compact binary format that processes exchange.
///
/// The format is not self-describing and not JSON: it is the shortest encoding that the
/// *same* Swift types can decode again, written in one pass into one growing buffer.
/// Both ends of a connection run the same program (a child process is a copy of its
/// parent), so type information on the wire would only cost bytes and time.
///
/// Layout (all integers little-endian):
/// - `Int`/`UInt`: 8 bytes; `Int8`…`Int64`, `UInt8`…`UInt64`, `Int128`, `UInt128`: their
///   width; `Bool`: one byte, 0 or 1; `Float`/`Double`: their IEEE bit pattern.
/// - `String`: the UTF-8 byte count as an unsigned LEB128 varint, then the UTF-8 bytes.
/// - Unkeyed container: a `UInt32` element count, then the elements.
/// - Keyed container: a `UInt32` entry count, then for each entry its key (as a string)
///   followed by its value. Keys are written in the order the value encodes them.
/// - `Optional` reached through a generic `encode`: a tag byte (0 = nil, 1 = some), then
///   the wrapped value. A `nil` passed to `encodeIfPresent`, or `encodeNil(forKey:)`,
///   writes no entry at all: in a keyed container, nil means absent.
/// - `Dictionary`: a `UInt32` pair count, then key, value, key, value…
/// - Arrays of fixed-width numbers (`[Double]`, `[UInt8]`, …): the count, then the raw
///   element bytes, copied with a single memcpy (the same bytes as element by element).
/// - A value whose `encode(to:)` writes nothing: an empty container (four zero bytes), so
///   that every value takes at least one byte and the decoder can check any element
///   count against the bytes that remain.
///
/// Decoding is sequential: ``BinaryDecoder`` reads values in the order they were
/// encoded, which synthesized Codable conformances always do.
///
/// Because everything is written in one pass, a container or super encoder must be used
/// while it is current: the encoder returned by `superEncoder()` must be encoded into
/// before its container encodes anything else (which is what `super.encode(to:
/// container.superEncoder())` does). `Optional`'s own `encode(to:)`, called directly
/// instead of through a container, writes an untagged value that only its own
/// `init(from:)` can read back.
public struct BinaryEncoder {
    /// Context handed to every `Encoder` the value sees (`Encoder.userInfo`), for
    /// conformances that need more than the value itself, e.g. an object that collects
    /// the file descriptors of the handles being encoded.
    public var userInfo: [CodingUserInfoKey: Any]

    /// Creates an encoder; `userInfo` reaches `Encoder.userInfo` of every value encoded.
    public init(userInfo: [CodingUserInfoKey: Any] = [:]) {
        self.userInfo = userInfo
    }

    /// Encodes `value` into a new byte array.
    ///
    /// - Throws: ``WireError/unencodable(_:codingPath:)`` for a value the format cannot
    ///   represent; errors thrown by the value's own `encode(to:)` unchanged.
    public func encode<T: Encodable>(_ value: T) throws -> [UInt8] {
        if let array = value as? any _BinaryTopLevelArray {
            var bytes: [UInt8] = []
            try array._appendBinary(to: &bytes)
            return bytes
        }
        let encoder = _BinaryEncoderImpl(userInfo: userInfo)
        try encoder.encodeTopLevel(value)
        return encoder.makeArray()
    }

    /// Encodes `value` at the end of `bytes`, so a caller can put a frame header in front
    /// of the payload without building the payload as a separate array first.
    ///
    /// If encoding throws, `bytes` is left unchanged.
    ///
    /// - Throws: the same errors as ``encode(_:)``.
    public func encode<T: Encodable>(_ value: T, appendingTo bytes: inout [UInt8]) throws {
        if let array = value as? any _BinaryTopLevelArray {
            try array._appendBinary(to: &bytes)
            return
        }
        let encoder = _BinaryEncoderImpl(userInfo: userInfo)
        try encoder.encodeTopLevel(value)
        encoder.append(to: &bytes)
    }
}

/// The one `Encoder` of an encoding run: it owns the output buffer and the coding-path
/// stack, and every container writes straight into its buffer.
///
/// The buffer is raw memory rather than an `[UInt8]` because appending a few bytes to an
/// array costs several times more than a store (uniqueness and capacity checks, no way to
/// append uninitialized bytes); the finished message is copied into an array once.
final class _BinaryEncoderImpl: Encoder, _BinaryPathTracking {
    /// How deeply `encode(to:)` calls may nest. Deeper nesting is almost always a
    /// reference cycle (which would otherwise overflow the stack), and the decoder refuses
    /// the same depth, so nothing is sent that the peer would reject.
    static let maximumDepth = 512

    // The mutable state below is touched for every value written. Swift checks exclusive
    // access to a class's stored properties at run time (SE-0176), which costs more than
    // the writes themselves here; `@exclusivity(unchecked)` (SE-0176's opt-out) drops the
    // check. That is sound because every access is a short, non-overlapping read or
    // assignment inside this codec (no property is passed `inout` across a call that could
    // reach it again), and an encoding run is confined to the calling thread.
    @exclusivity(unchecked) private var storage: UnsafeMutableRawPointer
    @exclusivity(unchecked) private var capacity: Int
    /// Bytes written so far; lowering it discards what was written after that point.
    @exclusivity(unchecked) var count = 0
    @exclusivity(unchecked) var path: [_BinaryPathComponent] = []
    let userInfo: [CodingUserInfoKey: Any]
    @exclusivity(unchecked) private var depth = 0
    @exclusivity(unchecked) private var ordinaryTypes = _BinaryOrdinaryTypeCache()
    /// An error found in a method that cannot throw (a container's count overflowing while
    /// `nestedContainer` was creating an element); reported when encoding finishes.
    private var deferredError: WireError?

    init(userInfo: [CodingUserInfoKey: Any], initialCapacity: Int = 256) {
        self.userInfo = userInfo
        self.capacity = initialCapacity
        self.storage = .allocate(byteCount: initialCapacity, alignment: 16)
    }

    deinit { storage.deallocate() }

    // MARK: Encoder

    var codingPath: [any CodingKey] { path.map(\.codingKey) }

    func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
        makeKeyedContainer(at: currentSpot)
    }

    func unkeyedContainer() -> any UnkeyedEncodingContainer {
        makeUnkeyedContainer(at: currentSpot)
    }

    func singleValueContainer() -> any SingleValueEncodingContainer {
        _BinarySingleValueEncodingContainer(encoder: self, spot: currentSpot)
    }

    func makeKeyedContainer<Key: CodingKey>(at spot: _BinaryPathSpot) -> KeyedEncodingContainer<Key> {
        KeyedEncodingContainer(_BinaryKeyedEncodingContainer<Key>(encoder: self, spot: spot, header: reserveCount()))
    }

    func makeUnkeyedContainer(at spot: _BinaryPathSpot) -> _BinaryUnkeyedEncodingContainer {
        _BinaryUnkeyedEncodingContainer(encoder: self, spot: spot, header: reserveCount())
    }

    // MARK: Running

    func encodeTopLevel<T: Encodable>(_ value: T) throws {
        try encodeValue(value, at: currentSpot, appending: nil)
        if let deferredError { throw deferredError }
    }

    /// Encodes a value reached through a generic `encode`, at the path `spot` + `last`.
    ///
    /// Primitive types are recognised by comparing metadata pointers, which the optimizer
    /// folds away when `T` is known, and written without touching the path stack.
    @inline(__always)
    func encodeValue<T: Encodable>(_ value: T, at spot: _BinaryPathSpot, appending last: _BinaryPathComponent?)
        throws
    {
        if encodePrimitive(value) { return }
        try withPath(spot, last) { try encodeComposite(value) }
    }

    /// Encodes a non-primitive value at the current path: a fast-path type itself,
    /// anything else through its `encode(to:)`. On error the partial output is discarded
    /// so the enclosing container stays consistent.
    func encodeComposite<T: Encodable>(_ value: T) throws {
        let start = count
        do {
            if let special = specialType(T.self) {
                try encodeSpecial(special, value)
            } else {
                guard depth < Self.maximumDepth else {
                    throw WireError.unencodable(
                        "values nest more than \(Self.maximumDepth) levels deep (is there a reference cycle?)",
                        codingPath: currentPathString)
                }
                depth += 1
                defer { depth -= 1 }
                try value.encode(to: self)
            }
            if count == start {
                // Every value must occupy at least one byte: that is what lets the decoder
                // refuse an impossible element count before allocating for it. A value that
                // wrote nothing is stored as an empty container, which the decoder steps
                // over when the matching `init(from:)` reads nothing either.
                writeFixed(UInt32(0))
            }
        } catch {
            count = start
            throw error
        }
    }

    /// `T`'s fast-path conformance, if it has one. Types without one are remembered, so
    /// an array of structs pays for the conformance lookup once, not per element.
    @inline(__always)
    private func specialType<T>(_ type: T.Type) -> (any _BinaryEncodingSpecial.Type)? {
        let id = ObjectIdentifier(T.self)
        if ordinaryTypes.contains(id) { return nil }
        if let special = T.self as? any _BinaryEncodingSpecial.Type { return special }
        ordinaryTypes.insert(id)
        return nil
    }

    private func encodeSpecial<S: _BinaryEncodingSpecial, T>(_: S.Type, _ value: T) throws {
        // `S` is `T` (the cast above succeeded), so this reinterpretation is an identity.
        try unsafeBitCast(value, to: S.self)._encodeBinary(into: self)
    }

    /// Writes `value` if its type is one of the primitives with a fixed encoding.
    @inline(__always)
    func encodePrimitive<T>(_ value: T) -> Bool {
        if T.self == Int.self {
            writeFixed(unsafeBitCast(value, to: Int.self))
        } else if T.self == String.self {
            writeString(unsafeBitCast(value, to: String.self))
        } else if T.self == Double.self {
            writeFixed(unsafeBitCast(value, to: Double.self).bitPattern)
        } else if T.self == Bool.self {
            writeByte(unsafeBitCast(value, to: Bool.self) ? 1 : 0)
        } else if T.self == Float.self {
            writeFixed(unsafeBitCast(value, to: Float.self).bitPattern)
        } else if T.self == Int64.self {
            writeFixed(unsafeBitCast(value, to: Int64.self))
        } else if T.self == UInt8.self {
            writeByte(unsafeBitCast(value, to: UInt8.self))
        } else if T.self == Int32.self {
            writeFixed(unsafeBitCast(value, to: Int32.self))
        } else if T.self == UInt.self {
            writeFixed(unsafeBitCast(value, to: UInt.self))
        } else if T.self == UInt64.self {
            writeFixed(unsafeBitCast(value, to: UInt64.self))
        } else if T.self == UInt32.self {
            writeFixed(unsafeBitCast(value, to: UInt32.self))
        } else if T.self == Int16.self {
            writeFixed(unsafeBitCast(value, to: Int16.self))
        } else if T.self == UInt16.self {
            writeFixed(unsafeBitCast(value, to: UInt16.self))
        } else if T.self == Int8.self {
            writeFixed(unsafeBitCast(value, to: Int8.self))
        } else if T.self == Int128.self {
            writeFixed(unsafeBitCast(value, to: Int128.self))
        } else if T.self == UInt128.self {
            writeFixed(unsafeBitCast(value, to: UInt128.self))
        } else {
            return false
        }
        return true
    }

    // MARK: Output

    /// Makes room for `additional` more bytes.
    @inline(__always)
    func reserve(_ additional: Int) {
        if capacity &- count < additional { grow(additional) }
    }

    @inline(never)
    private func grow(_ additional: Int) {
        let newCapacity = Swift.max(capacity * 2, count + additional)
        let newStorage = UnsafeMutableRawPointer.allocate(byteCount: newCapacity, alignment: 16)
        newStorage.copyMemory(from: storage, byteCount: count)
        storage.deallocate()
        storage = newStorage
        capacity = newCapacity
    }

    @inline(__always)
    func writeByte(_ byte: UInt8) {
        reserve(1)
        storage.storeBytes(of: byte, toByteOffset: count, as: UInt8.self)
        count &+= 1
    }

    @inline(__always)
    func writeFixed<I: FixedWidthInteger>(_ value: I) {
        let size = MemoryLayout<I>.size
        reserve(size)
        storage.storeBytes(of: value.littleEndian, toByteOffset: count, as: I.self)
        count &+= size
    }

    /// Unsigned LEB128: seven bits per byte, low bits first, high bit set on all but the
    /// last byte. Lengths under 128 (nearly all keys and strings) take one byte.
    @inline(__always)
    func writeVarint(_ value: UInt64) {
        if value < 0x80 {
            writeByte(UInt8(truncatingIfNeeded: value))
            return
        }
        reserve(10)
        var rest = value
        while rest >= 0x80 {
            storage.storeBytes(of: UInt8(truncatingIfNeeded: rest) | 0x80, toByteOffset: count, as: UInt8.self)
            count &+= 1
            rest >>= 7
        }
        storage.storeBytes(of: UInt8(truncatingIfNeeded: rest), toByteOffset: count, as: UInt8.self)
        count &+= 1
    }

    func writeRaw(_ bytes: UnsafeRawBufferPointer) {
        guard let source = bytes.baseAddress, bytes.count > 0 else { return }
        reserve(bytes.count)
        (storage + count).copyMemory(from: source, byteCount: bytes.count)
        count &+= bytes.count
    }

    @inline(__always)
    func writeString(_ string: String) {
        var string = string
        string.withUTF8 { utf8 in
            writeVarint(UInt64(utf8.count))
            writeRaw(UnsafeRawBufferPointer(utf8))
        }
    }

    /// Writes a zero `UInt32` element count and returns its offset, to be incremented in
    /// place as elements are added: there is no tree of containers to finalize later.
    func reserveCount() -> Int {
        let offset = count
        writeFixed(UInt32(0))
        return offset
    }

    /// The element count stored at `offset`.
    func storedCount(at offset: Int) -> Int {
        guard offset >= 0, offset <= count - 4 else { return 0 }
        return Int(UInt32(littleEndian: storage.loadUnaligned(fromByteOffset: offset, as: UInt32.self)))
    }

    /// Adds one to the element count at `offset`.
    func incrementCount(at offset: Int, _ codingPath: @autoclosure () -> String) throws {
        // A count whose bytes were discarded (its container's value failed) is ignored.
        guard offset >= 0, offset <= count - 4 else { return }
        let current = UInt32(littleEndian: storage.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
        guard current < UInt32.max else {
            throw WireError.unencodable(
                "a container cannot hold more than \(UInt32.max) elements", codingPath: codingPath())
        }
        storage.storeBytes(of: (current + 1).littleEndian, toByteOffset: offset, as: UInt32.self)
    }

    /// `incrementCount` for the container methods that cannot throw; the error is
    /// reported when the encoding finishes.
    func incrementCountDeferringError(at offset: Int, _ codingPath: @autoclosure () -> String) {
        do {
            try incrementCount(at: offset, codingPath())
        } catch {
            if deferredError == nil { deferredError = error as? WireError }
        }
    }

    func makeArray() -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
            if count > 0 { UnsafeMutableRawBufferPointer(buffer).copyMemory(from: written) }
            initialized = count
        }
    }

    func append(to bytes: inout [UInt8]) {
        bytes.append(contentsOf: written)
    }

    private var written: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: storage, count: count) }
}

/// A keyed container: writes each entry as key string + value and counts it in the
/// `UInt32` it reserved when it was created.
struct _BinaryKeyedEncodingContainer<Key: CodingKey>: KeyedEncodingContainerProtocol {
    let encoder: _BinaryEncoderImpl
    let spot: _BinaryPathSpot
    /// Offset of this container's entry count in the output.
    let header: Int

    var codingPath: [any CodingKey] { encoder.codingKeys(spot) }

    /// Writes `key`, lets `value` write the value, and counts the entry; on error
    /// everything the entry wrote is discarded, so the container stays consistent.
    @inline(__always)
    private func entry(_ key: Key, _ value: () throws -> Void) throws {
        let start = encoder.count
        encoder.writeString(key.stringValue)
        do {
            try value()
            try encoder.incrementCount(at: header, encoder.pathString(spot, .key(key)))
        } catch {
            encoder.count = start
            throw error
        }
    }

    /// Writes nothing: in a keyed container a nil value is an absent entry, which is what
    /// `decodeNil(forKey:)` and `decodeIfPresent` report as nil.
    mutating func encodeNil(forKey key: Key) throws {}

    mutating func encode(_ value: Bool, forKey key: Key) throws { try entry(key) { encoder.writeByte(value ? 1 : 0) } }
    mutating func encode(_ value: String, forKey key: Key) throws { try entry(key) { encoder.writeString(value) } }
    mutating func encode(_ value: Double, forKey key: Key) throws {
        try entry(key) { encoder.writeFixed(value.bitPattern) }
    }
    mutating func encode(_ value: Float, forKey key: Key) throws {
        try entry(key) { encoder.writeFixed(value.bitPattern) }
    }
    mutating func encode(_ value: Int, forKey key: Key) throws { try entry(key) { encoder.writeFixed(value) } }
    mutating func encode(_ value: Int8, forKey key: Key) throws { try entry(key) { encoder.writeFixed(value) } }
    mutating func encode(_ value: Int16, forKey key: Key) throws { try entry(key) { encoder.writeFixed(value) } }
    mutating func encode(_ value: Int32, forKey key: Key) throws { try entry(key) { encoder.writeFixed(value) } }
    mutating func encode(_ value: Int64, forKey key: Key) throws { try entry(key) { encoder.writeFixed(value) } }
    mutating func encode(_ value: Int128, forKey key: Key) throws { try entry(key) { encoder.writeFixed(value) } }
    mutating func encode(_ value: UInt, forKey key: Key) throws { try entry(key) { encoder.writeFixed(value) } }
    mutating func encode(_ value: UInt8, forKey key: Key) throws { try entry(key) { encoder.writeFixed(value) } }
    mutating func encode(_ value: UInt16, forKey key: Key) throws { try entry(key) { encoder.writeFixed(value) } }
    mutating func encode(_ value: UInt32, forKey key: Key) throws { try entry(key) { encoder.writeFixed(value) } }
    mutating func encode(_ value: UInt64, forKey key: Key) throws { try entry(key) { encoder.writeFixed(value) } }
    mutating func encode(_ value: UInt128, forKey key: Key) throws { try entry(key) { encoder.writeFixed(value) } }

    mutating func encode<T: Encodable>(_ value: T, forKey key: Key) throws {
        try entry(key) { try encoder.encodeValue(value, at: spot, appending: .key(key)) }
    }

    mutating func nestedContainer<NestedKey: CodingKey>(
        keyedBy keyType: NestedKey.Type, forKey key: Key
    ) -> KeyedEncodingContainer<NestedKey> {
        beginEntry(key)
        return encoder.makeKeyedContainer(at: spot.appending(.key(key)))
    }

    mutating func nestedUnkeyedContainer(forKey key: Key) -> any UnkeyedEncodingContainer {
        beginEntry(key)
        return encoder.makeUnkeyedContainer(at: spot.appending(.key(key)))
    }

    /// The encoder for the superclass's data, stored under the key `"super"`. Because the
    /// format is written in one pass, the superclass must be encoded into it right away,
    /// before this container encodes anything else.
    mutating func superEncoder() -> any Encoder {
        makeSuperEncoder(forKey: _BinaryCodingKey.super)
    }

    mutating func superEncoder(forKey key: Key) -> any Encoder {
        makeSuperEncoder(forKey: key)
    }

    private func makeSuperEncoder(forKey key: any CodingKey) -> any Encoder {
        encoder.writeString(key.stringValue)
        encoder.incrementCountDeferringError(at: header, encoder.pathString(spot, .key(key)))
        return _BinarySuperEncoder(encoder: encoder, spot: spot.appending(.key(key)))
    }

    /// Writes the key of an entry whose value (a nested container) follows.
    private func beginEntry(_ key: Key) {
        encoder.writeString(key.stringValue)
        encoder.incrementCountDeferringError(at: header, encoder.pathString(spot, .key(key)))
    }
}

/// An unkeyed container: elements one after another, counted in the `UInt32` it reserved
/// when it was created. The count lives in the output, not in this struct, so copies of
/// the container stay consistent.
struct _BinaryUnkeyedEncodingContainer: UnkeyedEncodingContainer {
    let encoder: _BinaryEncoderImpl
    let spot: _BinaryPathSpot
    /// Offset of this container's element count in the output.
    let header: Int

    var codingPath: [any CodingKey] { encoder.codingKeys(spot) }
    var count: Int { encoder.storedCount(at: header) }

    @inline(__always)
    private func element(_ value: () throws -> Void) throws {
        let start = encoder.count
        do {
            try value()
            try encoder.incrementCount(at: header, encoder.pathString(spot, .index(count)))
        } catch {
            encoder.count = start
            throw error
        }
    }

    /// Writes the nil tag, a single 0 byte.
    mutating func encodeNil() throws { try element { encoder.writeByte(0) } }

    mutating func encode(_ value: Bool) throws { try element { encoder.writeByte(value ? 1 : 0) } }
    mutating func encode(_ value: String) throws { try element { encoder.writeString(value) } }
    mutating func encode(_ value: Double) throws { try element { encoder.writeFixed(value.bitPattern) } }
    mutating func encode(_ value: Float) throws { try element { encoder.writeFixed(value.bitPattern) } }
    mutating func encode(_ value: Int) throws { try element { encoder.writeFixed(value) } }
    mutating func encode(_ value: Int8) throws { try element { encoder.writeFixed(value) } }
    mutating func encode(_ value: Int16) throws { try element { encoder.writeFixed(value) } }
    mutating func encode(_ value: Int32) throws { try element { encoder.writeFixed(value) } }
    mutating func encode(_ value: Int64) throws { try element { encoder.writeFixed(value) } }
    mutating func encode(_ value: Int128) throws { try element { encoder.writeFixed(value) } }
    mutating func encode(_ value: UInt) throws { try element { encoder.writeFixed(value) } }
    mutating func encode(_ value: UInt8) throws { try element { encoder.writeFixed(value) } }
    mutating func encode(_ value: UInt16) throws { try element { encoder.writeFixed(value) } }
    mutating func encode(_ value: UInt32) throws { try element { encoder.writeFixed(value) } }
    mutating func encode(_ value: UInt64) throws { try element { encoder.writeFixed(value) } }
    mutating func encode(_ value: UInt128) throws { try element { encoder.writeFixed(value) } }

    mutating func encode<T: Encodable>(_ value: T) throws {
        let index = count
        try element { try encoder.encodeValue(value, at: spot, appending: .index(index)) }
    }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type)
        -> KeyedEncodingContainer<NestedKey>
    {
        let index = beginElement()
        return encoder.makeKeyedContainer(at: spot.appending(.index(index)))
    }

    mutating func nestedUnkeyedContainer() -> any UnkeyedEncodingContainer {
        let index = beginElement()
        return encoder.makeUnkeyedContainer(at: spot.appending(.index(index)))
    }

    /// An encoder for the next element; as with the keyed container, it must be used
    /// right away, before this container encodes anything else.
    mutating func superEncoder() -> any Encoder {
        let index = beginElement()
        return _BinarySuperEncoder(encoder: encoder, spot: spot.appending(.index(index)))
    }

    /// Counts an element whose bytes (a nested container) follow; returns its index.
    private func beginElement() -> Int {
        let index = count
        encoder.incrementCountDeferringError(at: header, encoder.pathString(spot, .index(index)))
        return index
    }
}

/// A single value container: the value's bytes with no header of their own.
struct _BinarySingleValueEncodingContainer: SingleValueEncodingContainer {
    let encoder: _BinaryEncoderImpl
    let spot: _BinaryPathSpot

    var codingPath: [any CodingKey] { encoder.codingKeys(spot) }

    /// Writes the nil tag, a single 0 byte.
    mutating func encodeNil() throws { encoder.writeByte(0) }

    mutating func encode(_ value: Bool) throws { encoder.writeByte(value ? 1 : 0) }
    mutating func encode(_ value: String) throws { encoder.writeString(value) }
    mutating func encode(_ value: Double) throws { encoder.writeFixed(value.bitPattern) }
    mutating func encode(_ value: Float) throws { encoder.writeFixed(value.bitPattern) }
    mutating func encode(_ value: Int) throws { encoder.writeFixed(value) }
    mutating func encode(_ value: Int8) throws { encoder.writeFixed(value) }
    mutating func encode(_ value: Int16) throws { encoder.writeFixed(value) }
    mutating func encode(_ value: Int32) throws { encoder.writeFixed(value) }
    mutating func encode(_ value: Int64) throws { encoder.writeFixed(value) }
    mutating func encode(_ value: Int128) throws { encoder.writeFixed(value) }
    mutating func encode(_ value: UInt) throws { encoder.writeFixed(value) }
    mutating func encode(_ value: UInt8) throws { encoder.writeFixed(value) }
    mutating func encode(_ value: UInt16) throws { encoder.writeFixed(value) }
    mutating func encode(_ value: UInt32) throws { encoder.writeFixed(value) }
    mutating func encode(_ value: UInt64) throws { encoder.writeFixed(value) }
    mutating func encode(_ value: UInt128) throws { encoder.writeFixed(value) }

    mutating func encode<T: Encodable>(_ value: T) throws {
        try encoder.encodeValue(value, at: spot, appending: nil)
    }
}

/// The `Encoder` returned by `superEncoder()`: writes into the same output at the path
/// of the `"super"` entry (or unkeyed element) it was created for.
final class _BinarySuperEncoder: Encoder {
    let encoder: _BinaryEncoderImpl
    let spot: _BinaryPathSpot

    init(encoder: _BinaryEncoderImpl, spot: _BinaryPathSpot) {
        self.encoder = encoder
        self.spot = spot
    }

    var codingPath: [any CodingKey] { encoder.codingKeys(spot) }
    var userInfo: [CodingUserInfoKey: Any] { encoder.userInfo }

    func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
        encoder.makeKeyedContainer(at: spot)
    }

    func unkeyedContainer() -> any UnkeyedEncodingContainer {
        encoder.makeUnkeyedContainer(at: spot)
    }

    func singleValueContainer() -> any SingleValueEncodingContainer {
        _BinarySingleValueEncodingContainer(encoder: encoder, spot: spot)
    }
}
