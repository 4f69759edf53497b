/// A fixed number of trivial values in memory shared between processes (Python's
/// `multiprocessing.Array`), read and written in place: nothing is copied when it goes to
/// another process, only its handle.
///
/// ```swift
/// let samples = try SharedArray<Double>(count: 1_000_000)     // zeros
/// struct Fill: ProcessTarget {
///     let part: SharedArray<Double>                            // a slice: its own indices
///     func run() { for i in part.indices { part[i] = Double(i) } }
/// }
/// let half = samples.count / 2
/// let workers = [ChildProcess(Fill(part: samples[..<half])), ChildProcess(Fill(part: samples[half...]))]
/// ```
///
/// - A slice (`array[range]`) is a `SharedArray` over the same memory, keeping the indices
///   of the whole (as `ArraySlice` does), and can be sent to a worker on its own.
/// - Elements are read and written without a lock: split the work so that processes write
///   different elements, or protect the array with a lock. `withUnsafeMutableBufferPointer`
///   gives the memory itself, for loops that must run at memory speed.
/// - The memory is anonymous: nothing appears in `/dev/shm`, and it is gone when the last
///   process holding it lets go, however it ended.
public struct SharedArray<Element: BitwiseCopyable>: Sendable, Codable, RandomAccessCollection {
    private let region: SharedRegion
    private let bounds: Range<Int>

    /// A header before the elements says what the memory holds, so that a handle decoded as
    /// an array of another element type is refused instead of misread.
    private struct Header {
        var magic: UInt32
        var stride: UInt32
        var count: Int
    }
    private static var magic: UInt32 { 0x4D50_4152 }  // "MPAR"
    private static var elementsOffset: Int { Swift.max(64, MemoryLayout<Element>.alignment) }

    private var elements: UnsafeMutablePointer<Element> {
        (region.base + Self.elementsOffset).assumingMemoryBound(to: Element.self)
    }

    /// `count` elements whose bytes are all zero: `0` for numbers.
    public init(count: Int) throws where Element: Numeric {
        try self.init(uninitializedCount: count)
    }

    /// `count` copies of `value`.
    public init(repeating value: Element, count: Int) throws {
        try self.init(uninitializedCount: count)
        elements.update(repeating: value, count: count)
    }

    /// The elements of `source`, in order.
    public init(_ source: some Collection<Element>) throws {
        try self.init(uninitializedCount: source.count)
        _ = UnsafeMutableBufferPointer(start: elements, count: source.count).initialize(from: source)
    }

    /// New memory, zero-filled (a memfd reads as zeros).
    private init(uninitializedCount count: Int) throws {
        precondition(count >= 0, "a SharedArray cannot have a negative count")
        let bytes = Self.elementsOffset + Swift.max(1, count) * MemoryLayout<Element>.stride
        region = try SharedRegion(size: bytes)
        bounds = 0..<count
        region.base.storeBytes(
            of: Header(magic: Self.magic, stride: UInt32(MemoryLayout<Element>.stride), count: count), as: Header.self)
    }

    private init(region: SharedRegion, bounds: Range<Int>) {
        self.region = region
        self.bounds = bounds
    }

    // MARK: Collection

    public var startIndex: Int { bounds.lowerBound }
    public var endIndex: Int { bounds.upperBound }

    /// The element at `position`; setting it writes the shared memory, seen by every process.
    public subscript(position: Int) -> Element {
        get {
            precondition(bounds.contains(position), "index \(position) out of range \(bounds)")
            return elements[position]
        }
        nonmutating set {
            precondition(bounds.contains(position), "index \(position) out of range \(bounds)")
            elements[position] = newValue
        }
    }

    /// A part of the array over the same memory, with the same indices.
    public subscript(range: Range<Int>) -> SharedArray<Element> {
        precondition(
            range.lowerBound >= bounds.lowerBound && range.upperBound <= bounds.upperBound,
            "range \(range) out of range \(bounds)")
        return SharedArray(region: region, bounds: range)
    }

    // MARK: Memory

    /// Calls `body` with the elements' memory (this slice of it).
    public func withUnsafeBufferPointer<Result>(_ body: (UnsafeBufferPointer<Element>) throws -> Result) rethrows
        -> Result
    {
        try body(UnsafeBufferPointer(start: elements + bounds.lowerBound, count: bounds.count))
    }

    /// Calls `body` with the elements' memory (this slice of it), writable.
    public func withUnsafeMutableBufferPointer<Result>(
        _ body: (UnsafeMutableBufferPointer<Element>) throws -> Result
    ) rethrows -> Result {
        try body(UnsafeMutableBufferPointer(start: elements + bounds.lowerBound, count: bounds.count))
    }

    // MARK: Codable

    private enum CodingKeys: String, CodingKey { case region, start, end }

    /// Encodes a handle (the memory's descriptor and this slice's bounds), never the elements.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(region, forKey: .region)
        try container.encode(bounds.lowerBound, forKey: .start)
        try container.encode(bounds.upperBound, forKey: .end)
    }

    /// Decodes a handle received from another process.
    /// - Throws: `DecodingError` when the memory holds elements of another size, or the
    ///   bounds do not fit it.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let region = try container.decode(SharedRegion.self, forKey: .region)
        let start = try container.decode(Int.self, forKey: .start)
        let end = try container.decode(Int.self, forKey: .end)
        func refuse(_ why: String) -> DecodingError {
            DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: why))
        }
        guard region.size >= Self.elementsOffset else { throw refuse("the shared memory received is too small") }
        let header = region.base.load(as: Header.self)
        guard header.magic == Self.magic, header.stride == MemoryLayout<Element>.stride else {
            throw refuse(
                "the shared memory received is not a SharedArray of \(Element.self) "
                    + "(elements of \(header.stride) bytes, not \(MemoryLayout<Element>.stride))")
        }
        guard 0 <= start, start <= end, end <= header.count,
            Self.elementsOffset + header.count * MemoryLayout<Element>.stride <= region.size
        else { throw refuse("the bounds \(start)..<\(end) do not fit the \(header.count) elements received") }
        self.init(region: region, bounds: start..<end)
    }
}
