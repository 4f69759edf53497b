/// Arrays of fixed-width numbers: a queue stores their elements' bytes as they are, with no
/// encoder and no count in front (the record's length gives it). Both ends of a queue know
/// its element type, so nothing else is needed to read them back.
protocol QueueNumberArray {
    /// Runs `body` on the elements' bytes of `item`, which must be of this type.
    static func withElementBytes<Item, Result>(
        of item: Item, _ body: (UnsafeRawBufferPointer) throws -> Result
    ) rethrows -> Result

    /// An array made of `bytes`, returned as `Item` (which must be this type); `nil` if the
    /// byte count is not a whole number of elements.
    static func make<Item>(from bytes: UnsafeRawBufferPointer, as item: Item.Type) -> Item?
}

extension Array: QueueNumberArray where Element: _BinaryTrivialElement {
    static func withElementBytes<Item, Result>(
        of item: Item, _ body: (UnsafeRawBufferPointer) throws -> Result
    ) rethrows -> Result {
        // `Item` is this very type (the caller found so): the cast reinterprets the same value.
        try unsafeBitCast(item, to: Self.self).withUnsafeBytes(body)
    }

    static func make<Item>(from bytes: UnsafeRawBufferPointer, as item: Item.Type) -> Item? {
        let stride = MemoryLayout<Element>.stride
        guard bytes.count % stride == 0 else { return nil }
        let count = bytes.count / stride
        let array = Self(unsafeUninitializedCapacity: count) { buffer, initialized in
            if count > 0 { UnsafeMutableRawBufferPointer(buffer).copyMemory(from: bytes) }
            initialized = count
        }
        return unsafeBitCast(array, to: Item.self)
    }
}
