/// Decodes values from the binary format written by ``BinaryEncoder``.
///
/// The bytes usually come from another process, so the decoder treats them as untrusted:
/// every read is bounds-checked, every declared count is checked against the bytes that
/// remain *before* anything is allocated for it, strings are validated as UTF-8, and the
/// nesting depth is limited. Malformed input makes `decode` throw a ``WireError``; it never
/// traps, reads out of bounds or loops forever.
///
/// The format is sequential and not self-describing, which shapes what keyed containers
/// can do:
/// - `decode(_:forKey:)` reads the next entry and throws
///   ``WireError/typeMismatch(expected:found:codingPath:)`` if its key is not the one
///   requested. Values must be decoded in the order they were encoded, which synthesized
///   Codable conformances (and almost all hand-written ones) do.
/// - `contains(_:)`, `decodeNil(forKey:)` and `decodeIfPresent(_:forKey:)` look at the
///   next key without consuming it: a key that is not next is reported as absent. That is
///   how a skipped nil (`encodeIfPresent`) reads back as nil.
/// - `allKeys` can only list the keys visible without decoding values: the next key, if
///   entries remain. That is exactly what synthesized enum Codable needs (one key: the
///   case name). Code that iterates `allKeys` to read every entry will see one entry, and
///   the unread entries are then reported as an error rather than silently dropped.
/// - A type must read every entry it wrote: entries left unread when its `init(from:)`
///   returns make decoding throw ``WireError/invalidData(_:codingPath:)``.
///
/// Decoding `T` must consume all the bytes; leftover bytes throw
/// ``WireError/trailingBytes(count:type:)``, which catches most decodes of the wrong type.
public struct BinaryDecoder {
    /// Context handed to every `Decoder` the value sees (`Decoder.userInfo`), for
    /// conformances that need more than the bytes, e.g. the file descriptors that arrived
    /// beside the message.
    public var userInfo: [CodingUserInfoKey: Any]

    /// Creates a decoder; `userInfo` reaches `Decoder.userInfo` of every value decoded.
    public init(userInfo: [CodingUserInfoKey: Any] = [:]) {
        self.userInfo = userInfo
    }

    /// Decodes a `T` that occupies all of `bytes`.
    ///
    /// - Throws: ``WireError`` if the bytes are not a valid encoding of a `T`; errors
    ///   thrown by `T`'s own `init(from:)` unchanged.
    public func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8]) throws -> T {
        try bytes.withUnsafeBytes { try decode(type, from: $0) }
    }

    /// Decodes a `T` that occupies all of `bytes`, reading them in place (a received
    /// frame's payload is decoded without being copied into an array first).
    ///
    /// The bytes are only read during this call.
    ///
    /// - Throws: the same errors as `decode(_:from:)` taking an array.
    public func decode<T: Decodable>(_ type: T.Type, from bytes: UnsafeRawBufferPointer) throws -> T {
        let decoder = _BinaryDecoderImpl(bytes: bytes, userInfo: userInfo)
        // A conformance could keep the Decoder; once the call returns, it must not be able
        // to reach the caller's memory any more.
        defer { decoder.detach() }
        return try decoder.decodeTopLevel(type)
    }
}

/// How many entries a keyed decoding container has left.
///
/// Keyed containers' methods are not `mutating`, so this state cannot live in the
/// container struct; it lives in the decoder, in a stack of slots that is cut back when
/// the value that opened them finishes decoding. The `id` catches a container used after
/// that point, whose slot number may have been reused.
struct _BinaryKeyedSlot {
    var remaining: Int
    let id: Int
    /// Where the value behind the container's latest `superDecoder()` starts, until the
    /// container reads again; -1 when there is none (see `settleSuperValue`).
    var superValueStart = -1
}

/// The one `Decoder` of a decoding run: it holds the input, the read position and the
/// coding-path stack, and every container reads through it.
final class _BinaryDecoderImpl: Decoder, _BinaryPathTracking {
    /// How deeply `init(from:)` calls may nest. A recursive type (a tree, a linked list)
    /// would otherwise let a hostile message nest deep enough to overflow the stack.
    static let maximumDepth = _BinaryEncoderImpl.maximumDepth

    // Touched for every value read; see `_BinaryEncoderImpl` for why the run-time
    // exclusivity check is dropped and why that is sound (short, non-overlapping accesses
    // inside this codec; a decoding run is confined to the calling thread).
    @exclusivity(unchecked) private var base: UnsafeRawPointer?
    @exclusivity(unchecked) private var end: Int
    /// The read offset into the input. Readers only advance it after a successful read.
    @exclusivity(unchecked) var position = 0
    @exclusivity(unchecked) var path: [_BinaryPathComponent] = []
    @exclusivity(unchecked) var slots: [_BinaryKeyedSlot] = []
    private var nextSlotID = 0
    @exclusivity(unchecked) private var depth = 0
    @exclusivity(unchecked) private var ordinaryTypes = _BinaryOrdinaryTypeCache()
    let userInfo: [CodingUserInfoKey: Any]
    /// For tests: where the types looked up are noted (see ``_BinaryFastPathLookups``).
    private let lookups: _BinaryFastPathLookups?

    init(bytes: UnsafeRawBufferPointer, userInfo: [CodingUserInfoKey: Any]) {
        self.base = bytes.baseAddress
        self.end = bytes.baseAddress == nil ? 0 : bytes.count
        self.userInfo = userInfo
        lookups = userInfo.isEmpty ? nil : userInfo[.fastPathLookups] as? _BinaryFastPathLookups
    }

    /// Forgets the input, so a decoder kept past the end of `decode` can only throw.
    func detach() {
        base = nil
        end = 0
        position = 0
        slots = []
    }

    // MARK: Decoder

    var codingPath: [any CodingKey] { path.map(\.codingKey) }

    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        try makeKeyedContainer(at: currentSpot)
    }

    func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
        try makeUnkeyedContainer(at: currentSpot)
    }

    func singleValueContainer() throws -> any SingleValueDecodingContainer {
        _BinarySingleValueDecodingContainer(decoder: self, spot: currentSpot)
    }

    func makeKeyedContainer<Key: CodingKey>(at spot: _BinaryPathSpot) throws -> KeyedDecodingContainer<Key> {
        // An entry takes at least two bytes: its key's length and one byte of value.
        let count = try readCount(bytesPerElement: 2, pathString(spot))
        let id = nextSlotID
        nextSlotID &+= 1
        slots.append(_BinaryKeyedSlot(remaining: count, id: id))
        return KeyedDecodingContainer(
            _BinaryKeyedDecodingContainer<Key>(decoder: self, spot: spot, slot: slots.count - 1, slotID: id))
    }

    func makeUnkeyedContainer(at spot: _BinaryPathSpot) throws -> _BinaryUnkeyedDecodingContainer {
        // Every element takes at least one byte.
        let count = try readCount(bytesPerElement: 1, pathString(spot))
        return _BinaryUnkeyedDecodingContainer(decoder: self, spot: spot, declaredCount: count)
    }

    // MARK: Running

    func decodeTopLevel<T: Decodable>(_ type: T.Type) throws -> T {
        let value = try decodeValue(T.self, at: currentSpot, appending: nil)
        guard position == end else {
            throw WireError.trailingBytes(count: end - position, type: String(describing: T.self))
        }
        return value
    }

    /// Decodes a value requested through a generic `decode`, at the path `spot` + `last`.
    @inline(__always)
    func decodeValue<T: Decodable>(_ type: T.Type, at spot: _BinaryPathSpot, appending last: _BinaryPathComponent?)
        throws -> T
    {
        if let value = try decodePrimitive(T.self, at: spot, appending: last) { return value }
        return try withPath(spot, last) { try decodeComposite(T.self) }
    }

    /// Decodes a non-primitive value at the current path. On error the read position is
    /// restored, so a caller that catches the error (`try?` one type, then another) can
    /// go on reading.
    func decodeComposite<T: Decodable>(_ type: T.Type) throws -> T {
        let start = position
        let mark = slots.count
        defer { if slots.count > mark { slots.removeSubrange(mark...) } }
        do {
            if let special = specialType(T.self) {
                return try decodeSpecial(special, as: T.self)
            }
            guard depth < Self.maximumDepth else {
                throw WireError.invalidData(
                    "values nest more than \(Self.maximumDepth) levels deep", codingPath: currentPathString)
            }
            depth += 1
            defer { depth -= 1 }
            let value = try T(from: self)
            if slots.count > mark {
                for slot in mark..<slots.count { settleSuperValue(slot: slot) }
            }
            skipUnreadEmptyContainer(valueStart: start)
            try checkAllEntriesRead(since: mark, by: T.self)
            return value
        } catch {
            position = start
            throw error
        }
    }

    /// `T`'s fast-path conformance, if it has one; types without one are remembered.
    @inline(__always)
    private func specialType<T>(_ type: T.Type) -> (any _BinaryDecodingSpecial.Type)? {
        let id = ObjectIdentifier(T.self)
        if ordinaryTypes.contains(id) { return nil }
        lookups?.note(T.self)
        if let special = T.self as? any _BinaryDecodingSpecial.Type { return special }
        ordinaryTypes.insert(id)
        return nil
    }

    private func decodeSpecial<S: _BinaryDecodingSpecial, T>(_: S.Type, as type: T.Type) throws -> T {
        // `S` is `T` (the cast above succeeded), so this reinterpretation is an identity.
        unsafeBitCast(try S._decodeBinary(from: self), to: T.self)
    }

    /// Steps over an empty container header (four zero bytes) at `valueStart` if the value
    /// that starts there read nothing at all.
    ///
    /// A type without stored properties gets a synthesized `encode(to:)` that opens an
    /// empty keyed container, but a synthesized `init(from:)` that never touches the
    /// decoder; and the encoder stores a value whose `encode(to:)` wrote nothing as an
    /// empty container too. Every value takes at least one byte, so a decode that read
    /// nothing where an empty container was written can only be one of these cases;
    /// anything else is left for the usual checks to report.
    @inline(__always)
    private func skipUnreadEmptyContainer(valueStart: Int) {
        guard position == valueStart, valueStart >= 0, end &- position >= 4, let base,
            base.loadUnaligned(fromByteOffset: position, as: UInt32.self) == 0
        else { return }
        position &+= 4
    }

    /// Settles the value behind a keyed container's `superDecoder()` once the container
    /// reads again or its value ends: if the superclass read nothing (a superclass without
    /// stored properties), its empty container is stepped over.
    func settleSuperValue(slot: Int) {
        guard slot >= 0, slot < slots.count else { return }
        let start = slots[slot].superValueStart
        guard start >= 0 else { return }
        slots[slot].superValueStart = -1
        skipUnreadEmptyContainer(valueStart: start)
    }

    /// Records that the value behind `superDecoder()` starts at the current position.
    func beginSuperValue(slot: Int, id: Int) {
        guard slot >= 0, slot < slots.count, slots[slot].id == id else { return }
        slots[slot].superValueStart = position
    }

    /// A keyed container the value opened still has entries: the value's type reads
    /// fewer keys than were written, so the data belongs to another type or version. The
    /// bytes cannot be skipped (the format does not record value sizes), and reading on
    /// would misinterpret them.
    private func checkAllEntriesRead<T>(since mark: Int, by type: T.Type) throws {
        guard slots.count > mark else { return }
        for slot in slots[mark...] where slot.remaining > 0 {
            throw WireError.invalidData(
                "\(T.self).init(from:) left \(slot.remaining) encoded entr\(slot.remaining == 1 ? "y" : "ies") unread; "
                    + "the data was encoded from a different type (entries are read in order, and allKeys lists "
                    + "only the next key)",
                codingPath: currentPathString)
        }
    }

    /// Reads `T` if it is one of the primitives with a fixed encoding; nil otherwise.
    @inline(__always)
    func decodePrimitive<T>(_ type: T.Type, at spot: _BinaryPathSpot, appending last: _BinaryPathComponent?)
        throws -> T?
    {
        if T.self == Int.self {
            return unsafeBitCast(try readFixed(Int.self, pathString(spot, last)), to: T.self)
        } else if T.self == String.self {
            return unsafeBitCast(try readString(pathString(spot, last)), to: T.self)
        } else if T.self == Double.self {
            return unsafeBitCast(Double(bitPattern: try readFixed(UInt64.self, pathString(spot, last))), to: T.self)
        } else if T.self == Bool.self {
            return unsafeBitCast(try readBool(pathString(spot, last)), to: T.self)
        } else if T.self == Float.self {
            return unsafeBitCast(Float(bitPattern: try readFixed(UInt32.self, pathString(spot, last))), to: T.self)
        } else if T.self == Int64.self {
            return unsafeBitCast(try readFixed(Int64.self, pathString(spot, last)), to: T.self)
        } else if T.self == UInt8.self {
            return unsafeBitCast(try readFixed(UInt8.self, pathString(spot, last)), to: T.self)
        } else if T.self == Int32.self {
            return unsafeBitCast(try readFixed(Int32.self, pathString(spot, last)), to: T.self)
        } else if T.self == UInt.self {
            return unsafeBitCast(try readFixed(UInt.self, pathString(spot, last)), to: T.self)
        } else if T.self == UInt64.self {
            return unsafeBitCast(try readFixed(UInt64.self, pathString(spot, last)), to: T.self)
        } else if T.self == UInt32.self {
            return unsafeBitCast(try readFixed(UInt32.self, pathString(spot, last)), to: T.self)
        } else if T.self == Int16.self {
            return unsafeBitCast(try readFixed(Int16.self, pathString(spot, last)), to: T.self)
        } else if T.self == UInt16.self {
            return unsafeBitCast(try readFixed(UInt16.self, pathString(spot, last)), to: T.self)
        } else if T.self == Int8.self {
            return unsafeBitCast(try readFixed(Int8.self, pathString(spot, last)), to: T.self)
        } else if T.self == Int128.self {
            return unsafeBitCast(try readFixed(Int128.self, pathString(spot, last)), to: T.self)
        } else if T.self == UInt128.self {
            return unsafeBitCast(try readFixed(UInt128.self, pathString(spot, last)), to: T.self)
        }
        return nil
    }

    // MARK: Input

    /// `count` input bytes starting at `offset`; the caller has checked they exist.
    func rawBytes(at offset: Int, count: Int) -> UnsafeRawBufferPointer {
        guard let base, count > 0 else { return UnsafeRawBufferPointer(start: nil, count: 0) }
        return UnsafeRawBufferPointer(start: base + offset, count: count)
    }

    @inline(__always)
    func readFixed<I: FixedWidthInteger>(_ type: I.Type, _ codingPath: @autoclosure () -> String) throws -> I {
        let size = MemoryLayout<I>.size
        guard size <= end &- position, let base else {
            throw WireError.truncated(needed: size, available: end - position, codingPath: codingPath())
        }
        let value = base.loadUnaligned(fromByteOffset: position, as: I.self)
        position &+= size
        return I(littleEndian: value)
    }

    /// The next byte, without consuming it; nil at the end of the input.
    @inline(__always)
    func peekByte() -> UInt8? {
        guard position < end, let base else { return nil }
        return base.load(fromByteOffset: position, as: UInt8.self)
    }

    @inline(__always)
    func readBool(_ codingPath: @autoclosure () -> String) throws -> Bool {
        guard let byte = peekByte() else {
            throw WireError.truncated(needed: 1, available: 0, codingPath: codingPath())
        }
        guard byte <= 1 else {
            throw WireError.invalidData("a Bool must be encoded as 0 or 1, found \(byte)", codingPath: codingPath())
        }
        position &+= 1
        return byte == 1
    }

    /// An unsigned LEB128 varint of at most 10 bytes (64 bits).
    func readVarint(_ codingPath: @autoclosure () -> String) throws -> UInt64 {
        guard let base else { throw WireError.truncated(needed: 1, available: 0, codingPath: codingPath()) }
        var result: UInt64 = 0
        var shift: UInt64 = 0
        var offset = position
        while true {
            guard offset < end else {
                throw WireError.truncated(
                    needed: offset - position + 1, available: end - position, codingPath: codingPath())
            }
            let byte = base.load(fromByteOffset: offset, as: UInt8.self)
            offset += 1
            if shift == 63 && byte > 1 {
                throw WireError.invalidData("a length varint does not fit in 64 bits", codingPath: codingPath())
            }
            result |= UInt64(byte & 0x7F) << shift
            if byte & 0x80 == 0 {
                position = offset
                return result
            }
            shift += 7
        }
    }

    /// A varint byte length that must fit in the remaining input.
    private func readLength(_ codingPath: @autoclosure () -> String) throws -> Int {
        let start = position
        let raw = try readVarint(codingPath())
        guard raw <= UInt64(end - position) else {
            let available = end - position
            position = start
            throw WireError.truncated(
                needed: raw > UInt64(Int.max) ? Int.max : Int(raw), available: available, codingPath: codingPath())
        }
        return Int(raw)
    }

    func readString(_ codingPath: @autoclosure () -> String) throws -> String {
        let start = position
        let length = try readLength(codingPath())
        guard length > 0 else { return "" }
        guard let string = Self.string(validating: rawBytes(at: position, count: length)) else {
            position = start
            throw WireError.invalidData("a string's bytes are not valid UTF-8", codingPath: codingPath())
        }
        position += length
        return string
    }

    /// The string whose UTF-8 encoding is `bytes`, or nil if they are not valid UTF-8.
    ///
    /// ASCII (nearly every string in practice) is checked with a plain loop and handed to
    /// `String(decoding:)`, which cannot then find anything to repair; the standard
    /// library's validating initializer goes through an unspecialized generic path that
    /// costs noticeably more per string.
    private static func string(validating bytes: UnsafeRawBufferPointer) -> String? {
        var isASCII = true
        for byte in bytes where byte >= 0x80 {
            isASCII = false
            break
        }
        if isASCII {
            return bytes.withMemoryRebound(to: UInt8.self) { String(decoding: $0, as: UTF8.self) }
        }
        return String(validating: bytes, as: UTF8.self)
    }

    /// A `UInt32` element count, refused (with the position restored) if `count` elements
    /// of at least `bytesPerElement` bytes cannot fit in the remaining input.
    func readCount(bytesPerElement: Int, _ codingPath: @autoclosure () -> String) throws -> Int {
        let count = Int(try readFixed(UInt32.self, codingPath()))
        let needed = count * bytesPerElement
        guard needed <= end - position else {
            let available = end - position
            position -= 4
            throw WireError.truncated(needed: needed, available: available, codingPath: codingPath())
        }
        return count
    }

    // MARK: Keys

    /// Where the next key's UTF-8 bytes are, without consuming anything.
    private func locateKey(_ codingPath: @autoclosure () -> String) throws -> (start: Int, length: Int) {
        let saved = position
        defer { position = saved }
        let length = try readLength(codingPath())
        return (position, length)
    }

    private func keyBytes(at start: Int, length: Int, equal key: String) -> Bool {
        var key = key
        return key.withUTF8 { utf8 in
            guard utf8.count == length else { return false }
            let bytes = rawBytes(at: start, count: length)
            for index in 0..<length where bytes[index] != utf8[index] { return false }
            return true
        }
    }

    /// Whether the next key is `key`; false at the end of the input or on bad bytes.
    func nextKeyIs(_ key: String) -> Bool {
        guard let (start, length) = try? locateKey("") else { return false }
        return keyBytes(at: start, length: length, equal: key)
    }

    /// The next key as a string, without consuming it; nil if it cannot be read.
    func peekKey() -> String? {
        guard let (start, length) = try? locateKey("") else { return nil }
        if length == 0 { return "" }
        return Self.string(validating: rawBytes(at: start, count: length))
    }

    /// Consumes the next key, which must be `key`.
    func consumeKey(
        _ key: String, entriesRemaining: Int, _ codingPath: @autoclosure () -> String
    ) throws {
        guard entriesRemaining > 0 else {
            throw WireError.typeMismatch(
                expected: "key \"\(key)\"", found: "the end of the keyed container", codingPath: codingPath())
        }
        let (start, length) = try locateKey(codingPath())
        guard keyBytes(at: start, length: length, equal: key) else {
            let shown = Swift.min(length, 100)
            let found = String(decoding: rawBytes(at: start, count: shown), as: UTF8.self)
            throw WireError.typeMismatch(
                expected: "key \"\(key)\"", found: "key \"\(found)\(shown < length ? "…" : "")\"",
                codingPath: codingPath())
        }
        position = start + length
    }

    // MARK: Keyed slots

    /// Entries left in a keyed container; nil for a container whose value has finished
    /// decoding.
    func entriesRemaining(slot: Int, id: Int) -> Int? {
        guard slot >= 0, slot < slots.count, slots[slot].id == id else { return nil }
        if slots[slot].superValueStart >= 0 { settleSuperValue(slot: slot) }
        return slots[slot].remaining
    }

    func consumeEntry(slot: Int, id: Int) {
        guard slot >= 0, slot < slots.count, slots[slot].id == id else { return }
        slots[slot].remaining -= 1
    }
}

/// A keyed container: reads entries in order, comparing each key with the requested one.
/// Its remaining-entry count lives in the decoder (see ``_BinaryKeyedSlot``).
struct _BinaryKeyedDecodingContainer<Key: CodingKey>: KeyedDecodingContainerProtocol {
    let decoder: _BinaryDecoderImpl
    let spot: _BinaryPathSpot
    let slot: Int
    let slotID: Int

    var codingPath: [any CodingKey] { decoder.codingKeys(spot) }

    private var remaining: Int { decoder.entriesRemaining(slot: slot, id: slotID) ?? 0 }

    /// Only the next key: the keys after it cannot be found without decoding the values
    /// in between. Enough for synthesized enum Codable, which expects exactly one key.
    var allKeys: [Key] {
        guard remaining > 0, let string = decoder.peekKey(), let key = Key(stringValue: string) else { return [] }
        return [key]
    }

    /// Whether `key` is the next entry; a key further on is reported as absent.
    func contains(_ key: Key) -> Bool {
        remaining > 0 && decoder.nextKeyIs(key.stringValue)
    }

    /// True when `key` is not the next entry: nil values are not written in keyed
    /// containers, so an absent key is a nil.
    func decodeNil(forKey key: Key) throws -> Bool {
        !contains(key)
    }

    /// Consumes the entry for `key`, reading its value with `value`; on error the key is
    /// put back, so the container is unchanged.
    @inline(__always)
    private func entry<R>(_ key: Key, _ value: () throws -> R) throws -> R {
        guard let remaining = decoder.entriesRemaining(slot: slot, id: slotID) else {
            throw WireError.invalidData(
                "a keyed container was used after the value that opened it finished decoding",
                codingPath: decoder.pathString(spot, .key(key)))
        }
        let start = decoder.position
        try decoder.consumeKey(key.stringValue, entriesRemaining: remaining, decoder.pathString(spot, .key(key)))
        do {
            let result = try value()
            decoder.consumeEntry(slot: slot, id: slotID)
            return result
        } catch {
            decoder.position = start
            throw error
        }
    }

    private func path(_ key: Key) -> String { decoder.pathString(spot, .key(key)) }

    func decode(_ type: Bool.Type, forKey key: Key) throws -> Bool {
        try entry(key) { try decoder.readBool(path(key)) }
    }
    func decode(_ type: String.Type, forKey key: Key) throws -> String {
        try entry(key) { try decoder.readString(path(key)) }
    }
    func decode(_ type: Double.Type, forKey key: Key) throws -> Double {
        try entry(key) { Double(bitPattern: try decoder.readFixed(UInt64.self, path(key))) }
    }
    func decode(_ type: Float.Type, forKey key: Key) throws -> Float {
        try entry(key) { Float(bitPattern: try decoder.readFixed(UInt32.self, path(key))) }
    }
    func decode(_ type: Int.Type, forKey key: Key) throws -> Int {
        try entry(key) { try decoder.readFixed(Int.self, path(key)) }
    }
    func decode(_ type: Int8.Type, forKey key: Key) throws -> Int8 {
        try entry(key) { try decoder.readFixed(Int8.self, path(key)) }
    }
    func decode(_ type: Int16.Type, forKey key: Key) throws -> Int16 {
        try entry(key) { try decoder.readFixed(Int16.self, path(key)) }
    }
    func decode(_ type: Int32.Type, forKey key: Key) throws -> Int32 {
        try entry(key) { try decoder.readFixed(Int32.self, path(key)) }
    }
    func decode(_ type: Int64.Type, forKey key: Key) throws -> Int64 {
        try entry(key) { try decoder.readFixed(Int64.self, path(key)) }
    }
    func decode(_ type: Int128.Type, forKey key: Key) throws -> Int128 {
        try entry(key) { try decoder.readFixed(Int128.self, path(key)) }
    }
    func decode(_ type: UInt.Type, forKey key: Key) throws -> UInt {
        try entry(key) { try decoder.readFixed(UInt.self, path(key)) }
    }
    func decode(_ type: UInt8.Type, forKey key: Key) throws -> UInt8 {
        try entry(key) { try decoder.readFixed(UInt8.self, path(key)) }
    }
    func decode(_ type: UInt16.Type, forKey key: Key) throws -> UInt16 {
        try entry(key) { try decoder.readFixed(UInt16.self, path(key)) }
    }
    func decode(_ type: UInt32.Type, forKey key: Key) throws -> UInt32 {
        try entry(key) { try decoder.readFixed(UInt32.self, path(key)) }
    }
    func decode(_ type: UInt64.Type, forKey key: Key) throws -> UInt64 {
        try entry(key) { try decoder.readFixed(UInt64.self, path(key)) }
    }
    func decode(_ type: UInt128.Type, forKey key: Key) throws -> UInt128 {
        try entry(key) { try decoder.readFixed(UInt128.self, path(key)) }
    }
    func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T {
        try entry(key) { try decoder.decodeValue(T.self, at: spot, appending: .key(key)) }
    }

    // `decodeIfPresent` peeks once instead of the default's `contains` + `decodeNil`.
    func decodeIfPresent(_ type: Bool.Type, forKey key: Key) throws -> Bool? {
        contains(key) ? try decode(type, forKey: key) : nil
    }
    func decodeIfPresent(_ type: String.Type, forKey key: Key) throws -> String? {
        contains(key) ? try decode(type, forKey: key) : nil
    }
    func decodeIfPresent(_ type: Double.Type, forKey key: Key) throws -> Double? {
        contains(key) ? try decode(type, forKey: key) : nil
    }
    func decodeIfPresent(_ type: Float.Type, forKey key: Key) throws -> Float? {
        contains(key) ? try decode(type, forKey: key) : nil
    }
    func decodeIfPresent(_ type: Int.Type, forKey key: Key) throws -> Int? {
        contains(key) ? try decode(type, forKey: key) : nil
    }
    func decodeIfPresent(_ type: Int8.Type, forKey key: Key) throws -> Int8? {
        contains(key) ? try decode(type, forKey: key) : nil
    }
    func decodeIfPresent(_ type: Int16.Type, forKey key: Key) throws -> Int16? {
        contains(key) ? try decode(type, forKey: key) : nil
    }
    func decodeIfPresent(_ type: Int32.Type, forKey key: Key) throws -> Int32? {
        contains(key) ? try decode(type, forKey: key) : nil
    }
    func decodeIfPresent(_ type: Int64.Type, forKey key: Key) throws -> Int64? {
        contains(key) ? try decode(type, forKey: key) : nil
    }
    func decodeIfPresent(_ type: Int128.Type, forKey key: Key) throws -> Int128? {
        contains(key) ? try decode(type, forKey: key) : nil
    }
    func decodeIfPresent(_ type: UInt.Type, forKey key: Key) throws -> UInt? {
        contains(key) ? try decode(type, forKey: key) : nil
    }
    func decodeIfPresent(_ type: UInt8.Type, forKey key: Key) throws -> UInt8? {
        contains(key) ? try decode(type, forKey: key) : nil
    }
    func decodeIfPresent(_ type: UInt16.Type, forKey key: Key) throws -> UInt16? {
        contains(key) ? try decode(type, forKey: key) : nil
    }
    func decodeIfPresent(_ type: UInt32.Type, forKey key: Key) throws -> UInt32? {
        contains(key) ? try decode(type, forKey: key) : nil
    }
    func decodeIfPresent(_ type: UInt64.Type, forKey key: Key) throws -> UInt64? {
        contains(key) ? try decode(type, forKey: key) : nil
    }
    func decodeIfPresent(_ type: UInt128.Type, forKey key: Key) throws -> UInt128? {
        contains(key) ? try decode(type, forKey: key) : nil
    }
    func decodeIfPresent<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T? {
        contains(key) ? try decode(type, forKey: key) : nil
    }

    func nestedContainer<NestedKey: CodingKey>(
        keyedBy type: NestedKey.Type, forKey key: Key
    ) throws -> KeyedDecodingContainer<NestedKey> {
        try entry(key) { try decoder.makeKeyedContainer(at: spot.appending(.key(key))) }
    }

    func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer {
        try entry(key) { try decoder.makeUnkeyedContainer(at: spot.appending(.key(key))) }
    }

    /// The decoder for the superclass's data, stored under the key `"super"`. It must be
    /// used right away, before this container decodes anything else.
    func superDecoder() throws -> any Decoder {
        guard let remaining = decoder.entriesRemaining(slot: slot, id: slotID) else {
            throw WireError.invalidData(
                "a keyed container was used after the value that opened it finished decoding",
                codingPath: decoder.pathString(spot))
        }
        let key = _BinaryCodingKey.super
        try decoder.consumeKey(key.stringValue, entriesRemaining: remaining, decoder.pathString(spot, .key(key)))
        decoder.consumeEntry(slot: slot, id: slotID)
        decoder.beginSuperValue(slot: slot, id: slotID)
        return _BinarySuperDecoder(decoder: decoder, spot: spot.appending(.key(key)))
    }

    func superDecoder(forKey key: Key) throws -> any Decoder {
        let superDecoder = try entry(key) { _BinarySuperDecoder(decoder: decoder, spot: spot.appending(.key(key))) }
        decoder.beginSuperValue(slot: slot, id: slotID)
        return superDecoder
    }
}

/// An unkeyed container: `count` elements read in order.
struct _BinaryUnkeyedDecodingContainer: UnkeyedDecodingContainer {
    let decoder: _BinaryDecoderImpl
    let spot: _BinaryPathSpot
    let declaredCount: Int
    private(set) var currentIndex = 0

    init(decoder: _BinaryDecoderImpl, spot: _BinaryPathSpot, declaredCount: Int) {
        self.decoder = decoder
        self.spot = spot
        self.declaredCount = declaredCount
    }

    var codingPath: [any CodingKey] { decoder.codingKeys(spot) }
    var count: Int? { declaredCount }
    var isAtEnd: Bool { currentIndex >= declaredCount }

    private var path: String { decoder.pathString(spot, .index(currentIndex)) }

    /// Throws when every declared element has been read.
    private func checkNotAtEnd(_ wanted: @autoclosure () -> String) throws {
        guard currentIndex < declaredCount else {
            throw WireError.typeMismatch(
                expected: wanted(),
                found: "the end of the unkeyed container (\(declaredCount) element\(declaredCount == 1 ? "" : "s"))",
                codingPath: path)
        }
    }

    /// True (and consumed) if the next element is the nil tag, a 0 byte. A non-optional
    /// value can also start with 0, so use this only where the encoder wrote
    /// `encodeNil()` or a tagged Optional.
    mutating func decodeNil() throws -> Bool {
        try checkNotAtEnd("nil or a value")
        guard let byte = decoder.peekByte() else {
            throw WireError.truncated(needed: 1, available: 0, codingPath: path)
        }
        guard byte == 0 else { return false }
        decoder.position += 1
        currentIndex += 1
        return true
    }

    mutating func decode(_ type: Bool.Type) throws -> Bool {
        try checkNotAtEnd("Bool")
        let value = try decoder.readBool(path)
        currentIndex += 1
        return value
    }
    mutating func decode(_ type: String.Type) throws -> String {
        try checkNotAtEnd("String")
        let value = try decoder.readString(path)
        currentIndex += 1
        return value
    }
    mutating func decode(_ type: Double.Type) throws -> Double {
        Double(bitPattern: try readFixed(UInt64.self, "Double"))
    }
    mutating func decode(_ type: Float.Type) throws -> Float {
        Float(bitPattern: try readFixed(UInt32.self, "Float"))
    }
    mutating func decode(_ type: Int.Type) throws -> Int { try readFixed(Int.self, "Int") }
    mutating func decode(_ type: Int8.Type) throws -> Int8 { try readFixed(Int8.self, "Int8") }
    mutating func decode(_ type: Int16.Type) throws -> Int16 { try readFixed(Int16.self, "Int16") }
    mutating func decode(_ type: Int32.Type) throws -> Int32 { try readFixed(Int32.self, "Int32") }
    mutating func decode(_ type: Int64.Type) throws -> Int64 { try readFixed(Int64.self, "Int64") }
    mutating func decode(_ type: Int128.Type) throws -> Int128 { try readFixed(Int128.self, "Int128") }
    mutating func decode(_ type: UInt.Type) throws -> UInt { try readFixed(UInt.self, "UInt") }
    mutating func decode(_ type: UInt8.Type) throws -> UInt8 { try readFixed(UInt8.self, "UInt8") }
    mutating func decode(_ type: UInt16.Type) throws -> UInt16 { try readFixed(UInt16.self, "UInt16") }
    mutating func decode(_ type: UInt32.Type) throws -> UInt32 { try readFixed(UInt32.self, "UInt32") }
    mutating func decode(_ type: UInt64.Type) throws -> UInt64 { try readFixed(UInt64.self, "UInt64") }
    mutating func decode(_ type: UInt128.Type) throws -> UInt128 { try readFixed(UInt128.self, "UInt128") }

    @inline(__always)
    private mutating func readFixed<I: FixedWidthInteger>(_ type: I.Type, _ name: StaticString) throws -> I {
        try checkNotAtEnd("\(name)")
        let value = try decoder.readFixed(I.self, path)
        currentIndex += 1
        return value
    }

    mutating func decode<T: Decodable>(_ type: T.Type) throws -> T {
        try checkNotAtEnd(String(describing: T.self))
        let value = try decoder.decodeValue(T.self, at: spot, appending: .index(currentIndex))
        currentIndex += 1
        return value
    }

    // Optionals in an unkeyed container are written as tagged Optionals (the encoder's
    // generic `encode` of an `Optional`), so read them the same way instead of the
    // default's ambiguous `decodeNil()` peek.
    mutating func decodeIfPresent(_ type: Bool.Type) throws -> Bool? { try decodeTagged(type) }
    mutating func decodeIfPresent(_ type: String.Type) throws -> String? { try decodeTagged(type) }
    mutating func decodeIfPresent(_ type: Double.Type) throws -> Double? { try decodeTagged(type) }
    mutating func decodeIfPresent(_ type: Float.Type) throws -> Float? { try decodeTagged(type) }
    mutating func decodeIfPresent(_ type: Int.Type) throws -> Int? { try decodeTagged(type) }
    mutating func decodeIfPresent(_ type: Int8.Type) throws -> Int8? { try decodeTagged(type) }
    mutating func decodeIfPresent(_ type: Int16.Type) throws -> Int16? { try decodeTagged(type) }
    mutating func decodeIfPresent(_ type: Int32.Type) throws -> Int32? { try decodeTagged(type) }
    mutating func decodeIfPresent(_ type: Int64.Type) throws -> Int64? { try decodeTagged(type) }
    mutating func decodeIfPresent(_ type: Int128.Type) throws -> Int128? { try decodeTagged(type) }
    mutating func decodeIfPresent(_ type: UInt.Type) throws -> UInt? { try decodeTagged(type) }
    mutating func decodeIfPresent(_ type: UInt8.Type) throws -> UInt8? { try decodeTagged(type) }
    mutating func decodeIfPresent(_ type: UInt16.Type) throws -> UInt16? { try decodeTagged(type) }
    mutating func decodeIfPresent(_ type: UInt32.Type) throws -> UInt32? { try decodeTagged(type) }
    mutating func decodeIfPresent(_ type: UInt64.Type) throws -> UInt64? { try decodeTagged(type) }
    mutating func decodeIfPresent(_ type: UInt128.Type) throws -> UInt128? { try decodeTagged(type) }
    mutating func decodeIfPresent<T: Decodable>(_ type: T.Type) throws -> T? { try decodeTagged(type) }

    /// Nil at the end of the container, otherwise a tagged `Optional<T>`.
    private mutating func decodeTagged<T: Decodable>(_ type: T.Type) throws -> T? {
        if isAtEnd { return nil }
        return try decode(Optional<T>.self)
    }

    mutating func nestedContainer<NestedKey: CodingKey>(
        keyedBy type: NestedKey.Type
    ) throws -> KeyedDecodingContainer<NestedKey> {
        try checkNotAtEnd("a keyed container")
        let container: KeyedDecodingContainer<NestedKey> =
            try decoder.makeKeyedContainer(at: spot.appending(.index(currentIndex)))
        currentIndex += 1
        return container
    }

    mutating func nestedUnkeyedContainer() throws -> any UnkeyedDecodingContainer {
        try checkNotAtEnd("an unkeyed container")
        let container = try decoder.makeUnkeyedContainer(at: spot.appending(.index(currentIndex)))
        currentIndex += 1
        return container
    }

    /// A decoder for the next element; it must be used right away, before this container
    /// decodes anything else.
    mutating func superDecoder() throws -> any Decoder {
        try checkNotAtEnd("a value")
        let superDecoder = _BinarySuperDecoder(decoder: decoder, spot: spot.appending(.index(currentIndex)))
        currentIndex += 1
        return superDecoder
    }
}

/// A single value container: reads the value's bytes directly at the current position.
struct _BinarySingleValueDecodingContainer: SingleValueDecodingContainer {
    let decoder: _BinaryDecoderImpl
    let spot: _BinaryPathSpot

    var codingPath: [any CodingKey] { decoder.codingKeys(spot) }

    private var path: String { decoder.pathString(spot) }

    /// True (and consumed) if the next byte is the nil tag 0. A non-optional value can
    /// also start with 0, so use this only where the encoder wrote `encodeNil()` or a
    /// tagged Optional.
    func decodeNil() -> Bool {
        guard decoder.peekByte() == 0 else { return false }
        decoder.position += 1
        return true
    }

    func decode(_ type: Bool.Type) throws -> Bool { try decoder.readBool(path) }
    func decode(_ type: String.Type) throws -> String { try decoder.readString(path) }
    func decode(_ type: Double.Type) throws -> Double { Double(bitPattern: try decoder.readFixed(UInt64.self, path)) }
    func decode(_ type: Float.Type) throws -> Float { Float(bitPattern: try decoder.readFixed(UInt32.self, path)) }
    func decode(_ type: Int.Type) throws -> Int { try decoder.readFixed(Int.self, path) }
    func decode(_ type: Int8.Type) throws -> Int8 { try decoder.readFixed(Int8.self, path) }
    func decode(_ type: Int16.Type) throws -> Int16 { try decoder.readFixed(Int16.self, path) }
    func decode(_ type: Int32.Type) throws -> Int32 { try decoder.readFixed(Int32.self, path) }
    func decode(_ type: Int64.Type) throws -> Int64 { try decoder.readFixed(Int64.self, path) }
    func decode(_ type: Int128.Type) throws -> Int128 { try decoder.readFixed(Int128.self, path) }
    func decode(_ type: UInt.Type) throws -> UInt { try decoder.readFixed(UInt.self, path) }
    func decode(_ type: UInt8.Type) throws -> UInt8 { try decoder.readFixed(UInt8.self, path) }
    func decode(_ type: UInt16.Type) throws -> UInt16 { try decoder.readFixed(UInt16.self, path) }
    func decode(_ type: UInt32.Type) throws -> UInt32 { try decoder.readFixed(UInt32.self, path) }
    func decode(_ type: UInt64.Type) throws -> UInt64 { try decoder.readFixed(UInt64.self, path) }
    func decode(_ type: UInt128.Type) throws -> UInt128 { try decoder.readFixed(UInt128.self, path) }

    func decode<T: Decodable>(_ type: T.Type) throws -> T {
        try decoder.decodeValue(T.self, at: spot, appending: nil)
    }
}

/// The `Decoder` returned by `superDecoder()`: reads from the same input at the path of
/// the `"super"` entry (or unkeyed element) it was created for.
final class _BinarySuperDecoder: Decoder {
    let decoder: _BinaryDecoderImpl
    let spot: _BinaryPathSpot

    init(decoder: _BinaryDecoderImpl, spot: _BinaryPathSpot) {
        self.decoder = decoder
        self.spot = spot
    }

    var codingPath: [any CodingKey] { decoder.codingKeys(spot) }
    var userInfo: [CodingUserInfoKey: Any] { decoder.userInfo }

    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        try decoder.makeKeyedContainer(at: spot)
    }

    func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
        try decoder.makeUnkeyedContainer(at: spot)
    }

    func singleValueContainer() throws -> any SingleValueDecodingContainer {
        _BinarySingleValueDecodingContainer(decoder: decoder, spot: spot)
    }
}
