import Testing

@testable import Multiprocessing

// MARK: - Fixtures

private struct Point: Codable, Equatable {
    var x: Int
    var y: Double
    var label: String
}

private struct Polygon: Codable, Equatable {
    var name: String
    var vertices: [Point]
    var centre: Point
    var tags: Set<String>
}

private struct WithOptionals: Codable, Equatable {
    var required: Int
    var maybeNumber: Int?
    var maybeText: String?
    var maybePoint: Point?
    var doubleOptional: Int??
    var last: Bool
}

private enum Direction: Codable, Equatable, CaseIterable {
    case north, east, south, west
}

private enum Shape: Codable, Equatable {
    case circle(radius: Double)
    case rectangle(width: Double, height: Double)
    case polygon([Point])
    case labelled(String, Int)
    case empty
}

private enum Planet: String, Codable, CaseIterable {
    case mercury, venus, earth = "blue marble"
}

private enum Priority: Int, Codable, CaseIterable {
    case low = -1, normal = 0, high = 100
}

private struct OneByte: Codable, Equatable {
    var x: Int8
}

private struct NameOnly: Codable, Equatable {
    var name: Int8
}

private struct Everything: Codable, Equatable {
    var bool: Bool
    var int: Int
    var int8: Int8
    var int16: Int16
    var int32: Int32
    var int64: Int64
    var uint: UInt
    var uint8: UInt8
    var uint16: UInt16
    var uint32: UInt32
    var uint64: UInt64
    var float: Float
    var double: Double
    var string: String
    var int128: Int128
    var uint128: UInt128
}

/// No stored properties: the synthesized `encode(to:)` opens an empty keyed container,
/// the synthesized `init(from:)` reads nothing.
private struct Nothing: Codable, Equatable {}

private struct HoldsNothing: Codable, Equatable {
    var before: Int8
    var nothing: Nothing
    var maybe: Nothing?
    var list: [Nothing]
    var after: Int8
}

/// Hand-written Codable that writes and reads nothing at all.
private struct Silent: Codable, Equatable {
    init() {}
    init(from decoder: any Decoder) throws {}
    func encode(to encoder: any Encoder) throws {}
}

private class EmptyBase: Codable {
    init() {}
}

/// A subclass whose superclass has nothing to store.
private final class OverEmptyBase: EmptyBase {
    var value: Int8

    enum CodingKeys: String, CodingKey { case value }

    init(value: Int8) {
        self.value = value
        super.init()
    }

    required init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        value = try container.decode(Int8.self, forKey: .value)
        try super.init(from: container.superDecoder())
    }

    override func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(value, forKey: .value)
        try super.encode(to: container.superEncoder())
    }
}

/// Like `OverEmptyBase`, but the superclass's entry comes first.
private final class SuperFirst: EmptyBase {
    var value: Int8

    enum CodingKeys: String, CodingKey { case value }

    init(value: Int8) {
        self.value = value
        super.init()
    }

    required init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let superDecoder = try container.superDecoder()
        value = try container.decode(Int8.self, forKey: .value)
        try super.init(from: superDecoder)
    }

    override func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try super.encode(to: container.superEncoder())
        try container.encode(value, forKey: .value)
    }
}

/// Recursive, so hostile input could try to nest it without bound.
private indirect enum Tree: Codable, Equatable {
    case leaf(Int)
    case node([Tree])
}

private final class Node: Codable {
    var value: Int
    var next: Node?
    init(value: Int, next: Node?) {
        self.value = value
        self.next = next
    }
}

private class Animal: Codable {
    var name: String
    var legs: Int
    init(name: String, legs: Int) {
        self.name = name
        self.legs = legs
    }
}

/// Stores its superclass's data through `superEncoder()`, under the key "super".
private final class Dog: Animal {
    var breed: String
    var goodBoy: Bool?

    enum CodingKeys: String, CodingKey { case breed, goodBoy }

    init(name: String, breed: String, goodBoy: Bool?) {
        self.breed = breed
        self.goodBoy = goodBoy
        super.init(name: name, legs: 4)
    }

    required init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        breed = try container.decode(String.self, forKey: .breed)
        goodBoy = try container.decodeIfPresent(Bool.self, forKey: .goodBoy)
        try super.init(from: container.superDecoder())
    }

    override func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(breed, forKey: .breed)
        try container.encodeIfPresent(goodBoy, forKey: .goodBoy)
        try super.encode(to: container.superEncoder())
    }
}

/// Shares its encoder with the superclass instead (the other common pattern).
private final class Cat: Animal {
    var lives: Int

    enum CodingKeys: String, CodingKey { case lives }

    init(name: String, lives: Int) {
        self.lives = lives
        super.init(name: name, legs: 4)
    }

    required init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        lives = try container.decode(Int.self, forKey: .lives)
        try super.init(from: decoder)
    }

    override func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(lives, forKey: .lives)
        try super.encode(to: encoder)
    }
}

/// Hand-written Codable using every kind of nested container.
private struct Sheet: Codable, Equatable {
    var title: String
    var rows: [[Int]]
    var size: (width: Int, height: Int)
    var notes: [(line: Int, text: String?)]

    enum CodingKeys: String, CodingKey { case title, rows, size, notes }
    enum SizeKeys: String, CodingKey { case width, height }
    enum NoteKeys: String, CodingKey { case line, text }

    init(title: String, rows: [[Int]], size: (Int, Int), notes: [(Int, String?)]) {
        self.title = title
        self.rows = rows
        self.size = size
        self.notes = notes.map { (line: $0.0, text: $0.1) }
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(title, forKey: .title)
        var rowsContainer = container.nestedUnkeyedContainer(forKey: .rows)
        for row in rows {
            var rowContainer = rowsContainer.nestedUnkeyedContainer()
            for cell in row { try rowContainer.encode(cell) }
        }
        var sizeContainer = container.nestedContainer(keyedBy: SizeKeys.self, forKey: .size)
        try sizeContainer.encode(size.width, forKey: .width)
        try sizeContainer.encode(size.height, forKey: .height)
        var notesContainer = container.nestedUnkeyedContainer(forKey: .notes)
        for note in notes {
            var noteContainer = notesContainer.nestedContainer(keyedBy: NoteKeys.self)
            try noteContainer.encode(note.line, forKey: .line)
            try noteContainer.encodeIfPresent(note.text, forKey: .text)
        }
    }

    init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        title = try container.decode(String.self, forKey: .title)
        var rowsContainer = try container.nestedUnkeyedContainer(forKey: .rows)
        rows = []
        while !rowsContainer.isAtEnd {
            var rowContainer = try rowsContainer.nestedUnkeyedContainer()
            var row: [Int] = []
            while !rowContainer.isAtEnd { row.append(try rowContainer.decode(Int.self)) }
            rows.append(row)
        }
        let sizeContainer = try container.nestedContainer(keyedBy: SizeKeys.self, forKey: .size)
        size = (try sizeContainer.decode(Int.self, forKey: .width), try sizeContainer.decode(Int.self, forKey: .height))
        var notesContainer = try container.nestedUnkeyedContainer(forKey: .notes)
        notes = []
        while !notesContainer.isAtEnd {
            let noteContainer = try notesContainer.nestedContainer(keyedBy: NoteKeys.self)
            notes.append(
                (
                    try noteContainer.decode(Int.self, forKey: .line),
                    try noteContainer.decodeIfPresent(String.self, forKey: .text)
                ))
        }
    }

    static func == (lhs: Sheet, rhs: Sheet) -> Bool {
        lhs.title == rhs.title && lhs.rows == rhs.rows && lhs.size == rhs.size
            && lhs.notes.map(\.line) == rhs.notes.map(\.line) && lhs.notes.map(\.text) == rhs.notes.map(\.text)
    }
}

/// Writes explicit nils into unkeyed and single value containers.
private struct Sparse: Codable, Equatable {
    var values: [Int?]

    func encode(to encoder: any Encoder) throws {
        var container = encoder.unkeyedContainer()
        for value in values {
            if let value { try container.encode(Optional(value)) } else { try container.encodeNil() }
        }
    }

    init(values: [Int?]) { self.values = values }

    init(from decoder: any Decoder) throws {
        var container = try decoder.unkeyedContainer()
        values = []
        while !container.isAtEnd {
            if try container.decodeNil() {
                values.append(nil)
            } else {
                values.append(try container.decodeIfPresent(Int.self))
            }
        }
    }
}

private struct CustomFailure: Error, Equatable {
    var code: Int
}

/// Throws its own error while encoding or decoding.
private struct Grumpy: Codable {
    func encode(to encoder: any Encoder) throws { throw CustomFailure(code: 7) }
    init() {}
    init(from decoder: any Decoder) throws { throw CustomFailure(code: 8) }
}

/// Reads the userInfo it was given.
private struct UserInfoProbe: Codable {
    static let key = CodingUserInfoKey(rawValue: "binary-codec-test.probe")!

    func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(encoder.userInfo[Self.key] as? String ?? "missing")
    }

    var seen: String
    init() { seen = "" }

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let written = try container.decode(String.self)
        seen = written + "/" + (decoder.userInfo[Self.key] as? String ?? "missing")
    }
}

/// Keeps the Decoder it was given, which the decoder must make harmless afterwards.
private final class DecoderThief {
    var decoder: (any Decoder)?
}

private struct StealsDecoder: Decodable {
    static let key = CodingUserInfoKey(rawValue: "binary-codec-test.thief")!
    init(from decoder: any Decoder) throws {
        (decoder.userInfo[Self.key] as? DecoderThief)?.decoder = decoder
        _ = try decoder.singleValueContainer().decode(Int.self)
    }
}

/// Reads every entry through `allKeys`, which this format cannot list.
private struct AllKeysReader: Decodable {
    struct AnyKey: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }
    var values: [String: Int] = [:]
    init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: AnyKey.self)
        for key in container.allKeys { values[key.stringValue] = try container.decode(Int.self, forKey: key) }
    }
}

/// Reproducible pseudo-random bytes (SplitMix64).
private struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

private func roundTrip<T: Codable>(_ value: T) throws -> T {
    try BinaryDecoder().decode(T.self, from: BinaryEncoder().encode(value))
}

private func encoded<T: Encodable>(_ value: T) throws -> [UInt8] {
    try BinaryEncoder().encode(value)
}

/// The error thrown when decoding `bytes` as `T`, which must be a ``WireError``.
private func wireError<T: Decodable>(decoding type: T.Type, from bytes: [UInt8]) -> WireError? {
    #expect(throws: WireError.self) { try BinaryDecoder().decode(type, from: bytes) }
}

/// Whether decoding `bytes` as `T` throws. Synthesized enum conformances throw their own
/// `DecodingError` when they find no case key, so some malformed inputs end that way.
private func decodingFails<T: Decodable>(_ type: T.Type, from bytes: [UInt8]) -> Bool {
    (try? BinaryDecoder().decode(type, from: bytes)) == nil
}

/// Decodes attacker-controlled bytes as a few shapes; any outcome but a crash is fine.
private func decodeAnything(_ bytes: [UInt8]) {
    let decoder = BinaryDecoder()
    _ = try? decoder.decode(Polygon.self, from: bytes)
    _ = try? decoder.decode(WithOptionals.self, from: bytes)
    _ = try? decoder.decode(Shape.self, from: bytes)
    _ = try? decoder.decode(Tree.self, from: bytes)
    _ = try? decoder.decode([String: [Int?]].self, from: bytes)
    _ = try? decoder.decode([Double].self, from: bytes)
    _ = try? decoder.decode([String].self, from: bytes)
    _ = try? decoder.decode(Int??.self, from: bytes)
    _ = try? decoder.decode(Sheet.self, from: bytes)
    _ = try? decoder.decode(Dog.self, from: bytes)
    _ = try? decoder.decode(Everything.self, from: bytes)
}

private let samplePolygon = Polygon(
    name: "triangle ▲",
    vertices: [Point(x: 0, y: 0, label: "a"), Point(x: 4, y: 0, label: "b"), Point(x: -2, y: 3.5, label: "")],
    centre: Point(x: 1, y: 1.1666, label: "centre"),
    tags: ["geometry", "🙂"])

private let sampleOptionals = WithOptionals(
    required: 1, maybeNumber: 0, maybeText: nil, maybePoint: Point(x: 1, y: 2, label: "p"),
    doubleOptional: .some(nil), last: true)

private let sampleEverything = Everything(
    bool: true, int: -5, int8: .min, int16: .max, int32: -1, int64: .min, uint: .max, uint8: 255, uint16: 0,
    uint32: 0xDEAD_BEEF, uint64: .max, float: -.infinity, double: .pi, string: "ünïcödé",
    int128: .min, uint128: .max)

// MARK: - Tests

@Suite("Binary codec")
struct BinaryCodecTests {
    // MARK: Pinned format

    @Test("Int32(1) is encoded as its four little-endian bytes")
    func pinnedInt32() throws {
        #expect(try encoded(Int32(1)) == [1, 0, 0, 0])
        #expect(try encoded(Int(-2)) == [0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF])
        #expect(try encoded(true) == [1])
        #expect(try encoded(1.0 as Double) == [0, 0, 0, 0, 0, 0, 0xF0, 0x3F])
    }

    @Test("A struct is an entry count, then each key as a string followed by its value")
    func pinnedStruct() throws {
        #expect(try encoded(OneByte(x: 1)) == [1, 0, 0, 0, /* key */ 1, UInt8(ascii: "x"), /* value */ 1])
    }

    @Test("A string is a LEB128 UTF-8 length followed by the UTF-8 bytes")
    func pinnedString() throws {
        #expect(try encoded("hé") == [3, 0x68, 0xC3, 0xA9])
        #expect(try encoded("") == [0])
        let long = String(repeating: "a", count: 300)
        #expect(try encoded(long).prefix(2) == [0xAC, 0x02])
        #expect(try encoded(long).count == 302)
    }

    @Test("Optionals carry a tag byte; arrays and dictionaries a UInt32 count")
    func pinnedContainers() throws {
        #expect(try encoded(Int8?.some(5)) == [1, 5])
        #expect(try encoded(Int8?.none) == [0])
        #expect(try encoded(Int8??.some(.none)) == [1, 0])
        #expect(try encoded([UInt16(1), 2]) == [2, 0, 0, 0, 1, 0, 2, 0])
        #expect(try encoded(["a": Int8(1)]) == [1, 0, 0, 0, 1, UInt8(ascii: "a"), 1])
        #expect(try encoded([Int8?.some(3), nil]) == [2, 0, 0, 0, 1, 3, 0])
        // A synthesized enum: one entry (the case), holding a keyed container of the values.
        #expect(try encoded(Direction.east) == [1, 0, 0, 0, 4] + Array("east".utf8) + [0, 0, 0, 0])
    }

    @Test("A nil struct field is absent rather than encoded")
    func nilFieldIsAbsent() throws {
        struct Pair: Codable, Equatable {
            var a: Int8?
            var b: Int8
        }
        #expect(try encoded(Pair(a: nil, b: 2)) == [1, 0, 0, 0, 1, UInt8(ascii: "b"), 2])
        #expect(try roundTrip(Pair(a: nil, b: 2)) == Pair(a: nil, b: 2))
        #expect(try roundTrip(Pair(a: 0, b: 2)) == Pair(a: 0, b: 2))
    }

    @Test("The fast path for [Int32] produces the same bytes as element-by-element encoding")
    func fastPathMatchesSlowPath() throws {
        let values: [Int32] = [1, -1, .max, .min, 0]
        #expect(try encoded(values) == encoded(ContiguousArray(values)))
        #expect(
            try BinaryDecoder().decode(ContiguousArray<Int32>.self, from: encoded(values)) == ContiguousArray(values))
    }

    // MARK: Primitive round trips

    @Test("Every fixed-width integer type round-trips its minimum, maximum, zero and -1/1")
    func integerExtremes() throws {
        func check<T: FixedWidthInteger & Codable>(_: T.Type) throws {
            for value in [T.min, T.max, 0, 1, T.isSigned ? -1 : 2, T.max / 3] {
                #expect(try roundTrip(value) == value)
                #expect(try encoded(value).count == MemoryLayout<T>.size)
            }
        }
        try check(Int.self)
        try check(Int8.self)
        try check(Int16.self)
        try check(Int32.self)
        try check(Int64.self)
        try check(Int128.self)
        try check(UInt.self)
        try check(UInt8.self)
        try check(UInt16.self)
        try check(UInt32.self)
        try check(UInt64.self)
        try check(UInt128.self)
    }

    @Test(
        "Doubles round-trip bit for bit",
        arguments: [
            0.0, -0.0, 1.0, -1.5, .pi, .infinity, -.infinity, .nan, -.nan, .signalingNaN,
            Double(bitPattern: 0x7FF8_0000_DEAD_BEEF), .leastNonzeroMagnitude, .greatestFiniteMagnitude, .ulpOfOne,
        ])
    func doubleBits(_ value: Double) throws {
        #expect(try roundTrip(value).bitPattern == value.bitPattern)
        #expect(try roundTrip([value])[0].bitPattern == value.bitPattern)
        #expect(try roundTrip(Point(x: 0, y: value, label: "")).y.bitPattern == value.bitPattern)
    }

    @Test(
        "Floats round-trip bit for bit",
        arguments: [
            Float(0), -0.0, 1.5, .infinity, -.infinity, .nan, Float(bitPattern: 0x7FC0_1234), .leastNormalMagnitude,
        ])
    func floatBits(_ value: Float) throws {
        #expect(try roundTrip(value).bitPattern == value.bitPattern)
        #expect(try roundTrip([value])[0].bitPattern == value.bitPattern)
    }

    @Test("Bools round-trip", arguments: [true, false])
    func bools(_ value: Bool) throws {
        #expect(try roundTrip(value) == value)
        #expect(try roundTrip([value, !value]) == [value, !value])
    }

    @Test(
        "Strings round-trip, including empty, non-ASCII and long ones",
        arguments: [
            "", "a", "hello, world", "héllo wörld", "日本語のテキスト", "👨‍👩‍👧‍👦🏳️‍🌈", "e\u{301}", "\0nul\0",
            String(repeating: "long ", count: 10_000),
        ])
    func strings(_ value: String) throws {
        #expect(try roundTrip(value) == value)
        #expect(try roundTrip([value, value]) == [value, value])
        #expect(try roundTrip(Point(x: 1, y: 2, label: value)).label == value)
    }

    @Test("A struct with every primitive field round-trips")
    func everyPrimitiveField() throws {
        #expect(try roundTrip(sampleEverything) == sampleEverything)
    }

    // MARK: Structures

    @Test("Empty arrays, dictionaries and sets round-trip")
    func emptyCollections() throws {
        #expect(try roundTrip([Int]()) == [])
        #expect(try roundTrip([String]()) == [])
        #expect(try roundTrip([Point]()) == [])
        #expect(try roundTrip([Bool]()) == [])
        #expect(try roundTrip([String: Int]()) == [:])
        #expect(try roundTrip(Set<Int>()) == [])
        #expect(try encoded([Double]()) == [0, 0, 0, 0])
    }

    @Test("Nested structs round-trip")
    func nestedStructs() throws {
        #expect(try roundTrip(samplePolygon) == samplePolygon)
        #expect(try roundTrip([samplePolygon, samplePolygon]) == [samplePolygon, samplePolygon])
        #expect(try roundTrip(["p": samplePolygon]) == ["p": samplePolygon])
    }

    @Test("Enums without associated values round-trip")
    func simpleEnums() throws {
        for direction in Direction.allCases { #expect(try roundTrip(direction) == direction) }
        #expect(try roundTrip(Direction.allCases) == Direction.allCases)
    }

    @Test(
        "Enums with associated values round-trip",
        arguments: [
            Shape.circle(radius: 2.5), .rectangle(width: 1, height: -2), .polygon([Point(x: 1, y: 2, label: "v")]),
            .polygon([]), .labelled("tag", -9), .empty,
        ])
    fileprivate func enumsWithValues(_ shape: Shape) throws {
        #expect(try roundTrip(shape) == shape)
        #expect(try roundTrip([shape, .empty, shape]) == [shape, .empty, shape])
    }

    @Test("Raw-value enums round-trip as their raw values")
    func rawValueEnums() throws {
        for planet in Planet.allCases { #expect(try roundTrip(planet) == planet) }
        for priority in Priority.allCases { #expect(try roundTrip(priority) == priority) }
        #expect(try encoded(Planet.earth) == encoded("blue marble"))
        #expect(try encoded(Priority.high) == encoded(100))
    }

    @Test("A type without stored properties round-trips wherever it appears")
    func emptyTypes() throws {
        #expect(try encoded(Nothing()) == [0, 0, 0, 0])
        #expect(try roundTrip(Nothing()) == Nothing())
        #expect(try roundTrip([Nothing(), Nothing()]) == [Nothing(), Nothing()])
        #expect(try roundTrip(Nothing?.some(Nothing())) == Nothing())
        let holder = HoldsNothing(before: 1, nothing: Nothing(), maybe: Nothing(), list: [Nothing()], after: 2)
        #expect(try roundTrip(holder) == holder)
        #expect(try roundTrip([holder, holder]) == [holder, holder])
        let subclass = try roundTrip([OverEmptyBase(value: 7), OverEmptyBase(value: 8)])
        #expect(subclass.map(\.value) == [7, 8])
        #expect(try roundTrip([SuperFirst(value: 5), SuperFirst(value: 6)]).map(\.value) == [5, 6])
        // A value that writes nothing still takes four bytes (an empty container), so that
        // element counts stay checkable against the input's size.
        #expect(try encoded(Silent()) == [0, 0, 0, 0])
        #expect(try roundTrip([Silent(), Silent()]) == [Silent(), Silent()])
        #expect(try roundTrip(["s": Silent()]) == ["s": Silent()])
    }

    @Test("A recursive type round-trips")
    func recursiveType() throws {
        let tree = Tree.node([.leaf(1), .node([.leaf(2), .node([])]), .leaf(-3)])
        #expect(try roundTrip(tree) == tree)
    }

    @Test("Sets and tuple-like standard types round-trip")
    func otherStandardTypes() throws {
        let set: Set<String> = ["a", "b", "ç"]
        #expect(try roundTrip(set) == set)
        #expect(try roundTrip(3..<7) == 3..<7)
        #expect(try roundTrip(ContiguousArray([1.5, 2.5])) == [1.5, 2.5])
        #expect(try roundTrip([[1, 2], [], [3]]) == [[1, 2], [], [3]])
    }

    // MARK: Optionals

    @Test(
        "Nested optionals keep every level", arguments: [Int??.none, .some(.none), .some(.some(0)), .some(.some(-7))])
    func nestedOptionals(_ value: Int??) throws {
        #expect(try roundTrip(value) == value)
        #expect(try roundTrip([value]) == [value])
    }

    @Test("Optionals round-trip in arrays, dictionaries and struct fields")
    func optionalsEverywhere() throws {
        let array: [Int?] = [nil, 0, 1, nil, -1]
        #expect(try roundTrip(array) == array)
        let strings: [String?] = [nil, "", "x"]
        #expect(try roundTrip(strings) == strings)
        let dictionary: [String: Int?] = ["none": nil, "zero": 0, "one": 1]
        #expect(try roundTrip(dictionary) == dictionary)
        #expect(try roundTrip(sampleOptionals) == sampleOptionals)
        let allNil = WithOptionals(
            required: 0, maybeNumber: nil, maybeText: nil, maybePoint: nil, doubleOptional: nil, last: false)
        #expect(try roundTrip(allNil) == allNil)
        let allSet = WithOptionals(
            required: 0, maybeNumber: 5, maybeText: "t", maybePoint: Point(x: 0, y: 0, label: ""),
            doubleOptional: .some(.some(3)), last: false)
        #expect(try roundTrip(allSet) == allSet)
        #expect(try roundTrip(Point?.some(Point(x: 1, y: 1, label: "o"))) == Point(x: 1, y: 1, label: "o"))
        #expect(try roundTrip(Point?.none) == nil)
    }

    @Test("Explicit encodeNil in unkeyed containers reads back through decodeNil")
    func explicitNils() throws {
        let sparse = Sparse(values: [1, nil, 0, nil, nil, 42])
        #expect(try roundTrip(sparse) == sparse)
    }

    // MARK: Dictionaries

    @Test("Dictionaries with String and Int keys round-trip")
    func dictionaries() throws {
        let byName: [String: Double] = ["pi": .pi, "e": 2.718, "": 0]
        #expect(try roundTrip(byName) == byName)
        let byNumber: [Int: String] = [1: "one", -2: "minus two", .max: "max"]
        #expect(try roundTrip(byNumber) == byNumber)
        let nested: [String: [Int: [Point]]] = ["a": [1: [Point(x: 1, y: 2, label: "q")]], "b": [:]]
        #expect(try roundTrip(nested) == nested)
        let enumKeys: [Planet: Int] = [.earth: 3, .venus: 2]
        #expect(try roundTrip(enumKeys) == enumKeys)
    }

    @Test("Int-keyed dictionaries are pairs of fixed-width keys and values")
    func dictionaryPairs() throws {
        #expect(try encoded([Int8(3): Int8(4)]) == [1, 0, 0, 0, 3, 4])
    }

    // MARK: Classes and hand-written Codable

    @Test("A subclass stores its superclass through superEncoder and reads it back")
    func superEncoder() throws {
        let dog = Dog(name: "Rex", breed: "collie", goodBoy: true)
        let back = try roundTrip(dog)
        #expect(back.name == "Rex")
        #expect(back.legs == 4)
        #expect(back.breed == "collie")
        #expect(back.goodBoy == true)
        let unsure = try roundTrip(Dog(name: "", breed: "?", goodBoy: nil))
        #expect(unsure.goodBoy == nil)
        #expect(unsure.breed == "?")

        let bytes = try encoded(dog)
        let superKey = Array("super".utf8)
        #expect(bytes.indices.contains { bytes[$0...].starts(with: [5] + superKey) })
    }

    @Test("A subclass that shares its encoder with the superclass round-trips")
    func sharedEncoder() throws {
        let cat = try roundTrip(Cat(name: "Tom", lives: 9))
        #expect(cat.name == "Tom")
        #expect(cat.lives == 9)
        #expect(cat.legs == 4)
    }

    @Test("A hand-written Codable using nested keyed and unkeyed containers round-trips")
    func nestedContainers() throws {
        let sheet = Sheet(
            title: "budget", rows: [[1, 2, 3], [], [-4]], size: (3, 3), notes: [(1, "first"), (7, nil)])
        #expect(try roundTrip(sheet) == sheet)
        #expect(try roundTrip([sheet, sheet]) == [sheet, sheet])
    }

    @Test("userInfo reaches the Encoder and Decoder a value sees")
    func userInfo() throws {
        let encoder = BinaryEncoder(userInfo: [UserInfoProbe.key: "encoding"])
        let decoder = BinaryDecoder(userInfo: [UserInfoProbe.key: "decoding"])
        let bytes = try encoder.encode([UserInfoProbe()])
        #expect(try decoder.decode([UserInfoProbe].self, from: bytes).map(\.seen) == ["encoding/decoding"])
    }

    @Test("encode(_:appendingTo:) appends, and leaves the bytes alone when encoding fails")
    func appending() throws {
        var bytes: [UInt8] = [0xAA, 0xBB]
        try BinaryEncoder().encode(Int16(1), appendingTo: &bytes)
        #expect(bytes == [0xAA, 0xBB, 1, 0])
        try BinaryEncoder().encode([UInt16(2), 3], appendingTo: &bytes)
        #expect(bytes == [0xAA, 0xBB, 1, 0, 2, 0, 0, 0, 2, 0, 3, 0])
        bytes.removeLast(8)
        #expect(throws: CustomFailure.self) { try BinaryEncoder().encode([Grumpy()], appendingTo: &bytes) }
        #expect(bytes == [0xAA, 0xBB, 1, 0])
    }

    @Test("The raw-buffer decode reads the same values as the array decode")
    func rawBufferDecode() throws {
        let bytes = try encoded(samplePolygon)
        let decoded = try bytes.withUnsafeBytes { try BinaryDecoder().decode(Polygon.self, from: $0) }
        #expect(decoded == samplePolygon)
        #expect(throws: WireError.self) {
            try BinaryDecoder().decode(Int.self, from: UnsafeRawBufferPointer(start: nil, count: 0))
        }
    }

    // MARK: Trivial arrays

    @Test("Every fixed-width number array round-trips through the memcpy fast path")
    func trivialArrays() throws {
        var generator = SeededGenerator(state: 1)
        func check<T: FixedWidthInteger & Codable>(_: T.Type) throws {
            let values = (0..<257).map { _ in T.random(in: .min ... .max, using: &generator) } + [.min, .max, 0]
            let bytes = try encoded(values)
            #expect(bytes.count == 4 + values.count * MemoryLayout<T>.size)
            #expect(try BinaryDecoder().decode([T].self, from: bytes) == values)
        }
        try check(UInt8.self)
        try check(Int8.self)
        try check(UInt16.self)
        try check(Int16.self)
        try check(UInt32.self)
        try check(Int32.self)
        try check(UInt64.self)
        try check(Int64.self)
        try check(UInt.self)
        try check(Int.self)
        let floats: [Float] = [0, -0.0, .nan, .infinity, .leastNonzeroMagnitude, 3.25]
        #expect(try roundTrip(floats).map(\.bitPattern) == floats.map(\.bitPattern))
        let doubles: [Double] = [0, -0.0, .nan, -.infinity, .leastNonzeroMagnitude, 1.0 / 3]
        #expect(try roundTrip(doubles).map(\.bitPattern) == doubles.map(\.bitPattern))
    }

    @Test("A million Doubles round-trip intact (throughput is printed, not asserted)")
    func millionDoubles() throws {
        let values = (0..<1_000_000).map { Double($0) * 0.25 - 1000 }
        let encoder = BinaryEncoder()
        let decoder = BinaryDecoder()
        var decoded: [Double] = []
        let clock = ContinuousClock()
        var best = Duration.seconds(1_000)
        for _ in 0..<5 {
            let elapsed = try clock.measure {
                decoded = try decoder.decode([Double].self, from: encoder.encode(values))
            }
            best = min(best, elapsed)
        }
        #expect(decoded == values)
        #expect(try encoded(values).count == 4 + 8 * values.count)
        let seconds = Double(best.components.seconds) + Double(best.components.attoseconds) / 1e18
        print("BinaryCodec: 1,000,000 Doubles encode+decode in \(seconds * 1000) ms (\(8e6 / seconds / 1e9) GB/s)")
    }

    // MARK: Errors

    @Test("Every truncated prefix of an encoding fails to decode")
    func truncatedPrefixes() throws {
        func check<T: Codable>(_ value: T) throws {
            let bytes = try encoded(value)
            for length in 0..<bytes.count {
                #expect(
                    decodingFails(T.self, from: Array(bytes.prefix(length))),
                    "\(length) of \(bytes.count) bytes decoded")
            }
        }
        try check(samplePolygon)
        try check(sampleOptionals)
        try check(sampleEverything)
        try check(Shape.rectangle(width: 1, height: 2))
        try check(Sheet(title: "t", rows: [[1], [2, 3]], size: (1, 2), notes: [(3, "n"), (4, nil)]))
        try check(["k": [1.5, 2.5]])
        try check(Int??.some(.some(5)))
        try check(Dog(name: "a", breed: "b", goodBoy: false))
    }

    @Test("A truncated value names what was needed and where")
    func truncatedMessage() throws {
        let bytes = try encoded([samplePolygon])
        let error = wireError(decoding: [Polygon].self, from: Array(bytes.dropLast(3)))
        guard case .truncated(let needed, let available, let path) = error else {
            Issue.record("expected truncated, got \(String(describing: error))")
            return
        }
        #expect(needed > available)
        #expect(path.hasPrefix("[0]."))
        #expect(error?.description.hasPrefix("truncated message: needed ") == true)
    }

    @Test("Random garbage never crashes the decoder")
    func randomGarbage() {
        var generator = SeededGenerator(state: 0x5EED)
        for _ in 0..<3_000 {
            let count = Int.random(in: 0...96, using: &generator)
            let bytes = (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) }
            decodeAnything(bytes)
            // Small counts and lengths reach deeper than uniform noise does.
            decodeAnything(bytes.map { $0 & 0x07 })
        }
    }

    @Test("Corrupting valid encodings never crashes the decoder")
    func mutatedEncodings() throws {
        var generator = SeededGenerator(state: 42)
        let seeds: [[UInt8]] = [
            try encoded(samplePolygon), try encoded(sampleOptionals), try encoded(sampleEverything),
            try encoded(Tree.node([.leaf(1), .node([.leaf(2)])])), try encoded(["a": [1, nil, 3] as [Int?]]),
            try encoded(Sheet(title: "t", rows: [[1]], size: (1, 1), notes: [(1, nil)])),
            try encoded(Dog(name: "d", breed: "b", goodBoy: true)),
        ]
        for _ in 0..<3_000 {
            var bytes = seeds.randomElement(using: &generator)!
            for _ in 0..<Int.random(in: 1...4, using: &generator) {
                let index = Int.random(in: 0..<bytes.count, using: &generator)
                switch Int.random(in: 0..<4, using: &generator) {
                case 0: bytes[index] = UInt8.random(in: 0...255, using: &generator)
                case 1: bytes[index] ^= 1 << UInt8.random(in: 0..<8, using: &generator)
                case 2: bytes.remove(at: index)
                default: bytes.insert(UInt8.random(in: 0...3, using: &generator), at: index)
                }
                if bytes.isEmpty { break }
            }
            decodeAnything(bytes)
        }
    }

    @Test(
        "A huge declared count is refused before anything is allocated",
        arguments: [
            [0xFF, 0xFF, 0xFF, 0xFF] as [UInt8], [0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3],
        ])
    func hugeCounts(_ bytes: [UInt8]) {
        for error in [
            wireError(decoding: [Double].self, from: bytes),
            wireError(decoding: [UInt8].self, from: bytes),
            wireError(decoding: [String].self, from: bytes),
            wireError(decoding: [Point].self, from: bytes),
            wireError(decoding: [String: Int].self, from: bytes),
            wireError(decoding: Point.self, from: bytes),
            wireError(decoding: Set<Int>.self, from: bytes),
        ] {
            guard case .truncated(let needed, let available, _) = error else {
                Issue.record("expected truncated, got \(String(describing: error))")
                continue
            }
            #expect(needed >= 0xFFFF_FFFF)
            #expect(available == bytes.count - 4)
        }
        // A string claiming 2^63 bytes, and a varint longer than 64 bits.
        #expect(wireError(decoding: String.self, from: [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F]) != nil)
        let overlong = wireError(decoding: String.self, from: [UInt8](repeating: 0xFF, count: 11) + [1])
        guard case .invalidData = overlong else {
            Issue.record("expected invalidData, got \(String(describing: overlong))")
            return
        }
    }

    @Test("Decoding with the wrong key names both keys and the path")
    func keyMismatch() throws {
        let bytes = try encoded([OneByte(x: 1)])
        let error = wireError(decoding: [NameOnly].self, from: bytes)
        guard case .typeMismatch(let expected, let found, let path) = error else {
            Issue.record("expected typeMismatch, got \(String(describing: error))")
            return
        }
        #expect(expected == "key \"name\"")
        #expect(found == "key \"x\"")
        #expect(path == "[0].name")
        #expect(error?.description == "type mismatch at [0].name: expected key \"name\", found key \"x\"")
    }

    @Test("Decoding leftover bytes as a shorter type reports the trailing bytes")
    func trailingBytes() throws {
        let error = wireError(decoding: Int32.self, from: try encoded(Int64(1)))
        guard case .trailingBytes(let count, let type) = error else {
            Issue.record("expected trailingBytes, got \(String(describing: error))")
            return
        }
        #expect(count == 4)
        #expect(type == "Int32")
        #expect(wireError(decoding: String.self, from: [1, 65, 66]) != nil)
    }

    @Test("Decoding a different type fails instead of producing a value")
    func wrongTypes() throws {
        #expect(wireError(decoding: Point.self, from: try encoded(samplePolygon)) != nil)
        #expect(wireError(decoding: [Point].self, from: try encoded(samplePolygon.vertices.map(\.label))) != nil)
        // The enum conformances themselves reject a case name they do not know.
        #expect(decodingFails(Shape.self, from: try encoded(Direction.west)))
        #expect(decodingFails(Direction.self, from: try encoded(Shape.empty)))
        #expect(wireError(decoding: Polygon.self, from: try encoded(Point(x: 1, y: 1, label: "l"))) != nil)
    }

    @Test("Entries a type does not read are reported, not silently skipped")
    func unreadEntries() throws {
        struct Small: Codable { var x: Int8 }
        struct Large: Codable { var x: Int8; var y: Int8 }
        let error = wireError(decoding: [Small].self, from: try encoded([Large(x: 1, y: 2)]))
        guard case .invalidData(let reason, let path) = error else {
            Issue.record("expected invalidData, got \(String(describing: error))")
            return
        }
        #expect(reason.contains("1 encoded entry unread"))
        #expect(path == "[0]")
        // Reading a keyed container through allKeys sees one entry only, and says so.
        #expect(wireError(decoding: AllKeysReader.self, from: try encoded(["a": 1, "b": 2])) != nil)
        #expect(try BinaryDecoder().decode(AllKeysReader.self, from: encoded(["a": 1])).values == ["a": 1])
    }

    @Test("Invalid UTF-8 in a string is refused")
    func invalidUTF8() {
        for bytes: [UInt8] in [[1, 0xFF], [2, 0xC3, 0x28], [3, 0xED, 0xA0, 0x80], [1, 0x80]] {
            let error = wireError(decoding: String.self, from: bytes)
            guard case .invalidData(let reason, _) = error else {
                Issue.record("expected invalidData, got \(String(describing: error))")
                continue
            }
            #expect(reason.contains("UTF-8"))
        }
    }

    @Test("A Bool byte other than 0 or 1 is refused")
    func invalidBool() {
        let error = wireError(decoding: Bool.self, from: [2])
        guard case .invalidData(let reason, _) = error else {
            Issue.record("expected invalidData, got \(String(describing: error))")
            return
        }
        #expect(reason.contains("found 2"))
        #expect(wireError(decoding: [Bool].self, from: [1, 0, 0, 0, 0xFF]) != nil)
    }

    @Test("An optional tag other than 0 or 1 is refused")
    func invalidOptionalTag() {
        let error = wireError(decoding: Int8?.self, from: [2, 5])
        guard case .invalidData = error else {
            Issue.record("expected invalidData, got \(String(describing: error))")
            return
        }
    }

    @Test("Errors thrown by a type's own Codable code propagate unchanged")
    func customErrorsPropagate() throws {
        let encodeError = #expect(throws: CustomFailure.self) { try encoded(["a": [Grumpy()]]) }
        #expect(encodeError == CustomFailure(code: 7))
        let decodeError = #expect(throws: CustomFailure.self) {
            try BinaryDecoder().decode([Grumpy].self, from: [1, 0, 0, 0, 0])
        }
        #expect(decodeError == CustomFailure(code: 8))
    }

    @Test("Nesting deeper than the limit is refused on both sides instead of overflowing the stack")
    func nestingLimit() throws {
        var list: Node? = nil
        for value in 0..<200 { list = Node(value: value, next: list) }
        let shallow = try roundTrip(list!)
        #expect(shallow.value == 199)

        var tooDeep = Tree.leaf(0)
        for _ in 0..<600 { tooDeep = .node([tooDeep]) }
        #expect(throws: WireError.self) { try encoded(tooDeep) }

        // Hand-built hostile input: 10,000 levels of `.node([...])`.
        let level: [UInt8] = [1, 0, 0, 0, 4] + Array("node".utf8) + [1, 0, 0, 0, 2] + Array("_0".utf8) + [1, 0, 0, 0]
        let hostile = Array([[UInt8]](repeating: level, count: 10_000).joined())
        let error = wireError(decoding: Tree.self, from: hostile)
        guard case .invalidData(let reason, _) = error else {
            Issue.record("expected invalidData, got \(String(describing: error))")
            return
        }
        #expect(reason.contains("nest"))
    }

    @Test("A Decoder kept after decoding returns cannot reach the input any more")
    func keptDecoder() throws {
        let thief = DecoderThief()
        let decoder = BinaryDecoder(userInfo: [StealsDecoder.key: thief])
        _ = try decoder.decode(StealsDecoder.self, from: encoded(5))
        let kept = try #require(thief.decoder)
        defer { thief.decoder = nil }  // the kept decoder's userInfo holds the thief: break the cycle
        #expect(throws: WireError.self) { try kept.singleValueContainer().decode(Int.self) }
    }

    @Test("Every error has a readable one-sentence description")
    func descriptions() {
        #expect(
            WireError.truncated(needed: 8, available: 2, codingPath: "items[3].x").description
                == "truncated message: needed 8 bytes at items[3].x, only 2 left")
        #expect(WireError.truncated(needed: 1, available: 0, codingPath: "").description.contains("the top level"))
        #expect(WireError.badMagic(found: 0xBEEF).description.contains("0xBEEF"))
        #expect(WireError.badMagic(found: 0x1).description.contains("0x0001"))
        #expect(WireError.unsupportedVersion(9).description.contains("9"))
        #expect(WireError.oversized(size: 10, limit: 5).description.contains("10"))
        #expect(WireError.invalidData("bad", codingPath: "a.b").description == "invalid data at a.b: bad")
        #expect(WireError.trailingBytes(count: 3, type: "Int").description.hasPrefix("3 bytes left unread"))
        #expect(WireError.unencodable("no", codingPath: "z").description.contains("at z: no"))
    }
}
