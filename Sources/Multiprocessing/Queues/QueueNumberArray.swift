/// Arrays of fixed-width numbers: a queue stores their elements' bytes as they are, with no
/// encoder and no count in front (the record's length gives it). Both ends of a queue know
/// its element type, so nothing else is needed to read them back.
///
/// Neither requirement is generic in its result: a queue calls them from its own unspecialised
/// generic code, where each generic result would cost metadata look-ups, several times the copy
/// of a small array.
protocol QueueNumberArray: SendableMetatype {
    /// Runs `body` on the elements' bytes of `item`, which must be of this type.
    static func withElementBytes<Item>(
        of item: Item, _ body: (UnsafeRawBufferPointer) throws -> Bool
    ) rethrows -> Bool

    /// Initialises `item`, memory for one value of this type, with an array made of the bytes
    /// of `first` then `second` (a record that wraps around the end of a ring); `false`, and
    /// nothing initialised, if the byte count is not a whole number of elements.
    static func initialize(
        _ item: UnsafeMutableRawPointer, from first: UnsafeRawBufferPointer, _ second: UnsafeRawBufferPointer
    ) -> Bool
}

// Both witnesses are specialised for every element type (`_BinaryTrivialElement` lists them):
// unspecialised, building an array looks up the metadata of `Array`, `ContiguousArray` and
// their storage class for the element type, about 1,000 instructions per item, several
// times the copy of a 1 KiB array.
extension Array: QueueNumberArray where Element: _BinaryTrivialElement {
    @_specialize(where Element == UInt8, Item == [UInt8])
    @_specialize(where Element == Int8, Item == [Int8])
    @_specialize(where Element == UInt16, Item == [UInt16])
    @_specialize(where Element == Int16, Item == [Int16])
    @_specialize(where Element == UInt32, Item == [UInt32])
    @_specialize(where Element == Int32, Item == [Int32])
    @_specialize(where Element == UInt64, Item == [UInt64])
    @_specialize(where Element == Int64, Item == [Int64])
    @_specialize(where Element == UInt, Item == [UInt])
    @_specialize(where Element == Int, Item == [Int])
    @_specialize(where Element == Float, Item == [Float])
    @_specialize(where Element == Double, Item == [Double])
    static func withElementBytes<Item>(
        of item: Item, _ body: (UnsafeRawBufferPointer) throws -> Bool
    ) rethrows -> Bool {
        // `Item` is this very type (the caller found so): the cast reinterprets the same value.
        try unsafeBitCast(item, to: Self.self).withUnsafeBytes(body)
    }

    @_specialize(where Element == UInt8)
    @_specialize(where Element == Int8)
    @_specialize(where Element == UInt16)
    @_specialize(where Element == Int16)
    @_specialize(where Element == UInt32)
    @_specialize(where Element == Int32)
    @_specialize(where Element == UInt64)
    @_specialize(where Element == Int64)
    @_specialize(where Element == UInt)
    @_specialize(where Element == Int)
    @_specialize(where Element == Float)
    @_specialize(where Element == Double)
    static func initialize(
        _ item: UnsafeMutableRawPointer, from first: UnsafeRawBufferPointer, _ second: UnsafeRawBufferPointer
    ) -> Bool {
        let stride = MemoryLayout<Element>.stride
        let byteCount = first.count + second.count
        guard byteCount % stride == 0 else { return false }
        let count = byteCount / stride
        let array = Self(unsafeUninitializedCapacity: count) { buffer, initialized in
            let bytes = UnsafeMutableRawBufferPointer(buffer)
            bytes.copyMemory(from: first)
            UnsafeMutableRawBufferPointer(rebasing: bytes[first.count...]).copyMemory(from: second)
            initialized = count
        }
        item.initializeMemory(as: Self.self, to: array)
        return true
    }
}
