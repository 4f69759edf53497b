import Multiprocessing

// Representative message types: every shape the binary decoder handles differently
// (keyed, unkeyed and single-value containers; the Optional, Dictionary and numeric-array
// fast paths; synthesized enum Codable; a recursive indirect enum that the depth limit
// guards; a class that decodes its superclass through `superDecoder()`; a hand-written
// `init(from:)` that tries one type and falls back to another).

/// A struct with nested arrays, dictionaries, optionals, strings and an enum with payloads.
public struct Order: Codable, Equatable, Sendable {
    public var id: Int
    public var customer: String
    public var lines: [Line]
    public var tags: [String: [Int]]
    public var note: String?
    public var status: Status
    public var matrix: [[Int8]]
    public var paid: Bool
    public var reference: UInt64?
    public var doubleOptional: Int??
    public var wide: Int128

    public init(
        id: Int, customer: String, lines: [Line], tags: [String: [Int]], note: String?, status: Status,
        matrix: [[Int8]], paid: Bool, reference: UInt64?, doubleOptional: Int??, wide: Int128
    ) {
        self.id = id
        self.customer = customer
        self.lines = lines
        self.tags = tags
        self.note = note
        self.status = status
        self.matrix = matrix
        self.paid = paid
        self.reference = reference
        self.doubleOptional = doubleOptional
        self.wide = wide
    }
}

/// An element of `Order.lines`: a nested struct with a nested optional struct.
public struct Line: Codable, Equatable, Sendable {
    public var sku: String
    public var quantity: UInt32
    public var cents: Int64
    public var gift: Gift?

    public init(sku: String, quantity: UInt32, cents: Int64, gift: Gift?) {
        self.sku = sku
        self.quantity = quantity
        self.cents = cents
        self.gift = gift
    }
}

/// A struct with one field, and a struct with none (written as an empty container).
public struct Gift: Codable, Equatable, Sendable {
    public var message: String
    public var wrapping: Wrapping

    public init(message: String, wrapping: Wrapping) {
        self.message = message
        self.wrapping = wrapping
    }
}

/// A struct without stored properties.
public struct Wrapping: Codable, Equatable, Sendable {
    public init() {}
}

/// An enum with payloads: synthesized Codable, one key per case.
public enum Status: Codable, Equatable, Sendable {
    case pending
    case shipped(tracking: String, parcels: [UInt16])
    case cancelled(reason: String?, refund: Int32)
    case unlabelled(Int8, UInt8)
}

/// A recursive indirect enum: nesting is limited by the decoder's depth check.
public indirect enum Expression: Codable, Equatable, Sendable {
    case number(Int)
    case variable(String?)
    case negate(Expression)
    case add(Expression, Expression)
    case call(name: String, arguments: [Expression])
}

/// A base class whose subclass decodes it through `superDecoder()`.
public class Shape: Codable {
    public let name: String

    public init(name: String) { self.name = name }
}

/// A subclass: its own key, then the superclass's data under `"super"`.
public final class Circle: Shape {
    public let radius: UInt32

    private enum CodingKeys: String, CodingKey { case radius }

    public init(name: String, radius: UInt32) {
        self.radius = radius
        super.init(name: name)
    }

    public required init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        radius = try container.decode(UInt32.self, forKey: .radius)
        try super.init(from: container.superDecoder())
    }

    public override func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(radius, forKey: .radius)
        try super.encode(to: container.superEncoder())
    }

    /// Field-wise equality (classes have no synthesized `==`).
    public func same(as other: Circle) -> Bool { name == other.name && radius == other.radius }
}

/// A hand-written `init(from:)` that tries an `Int`, then falls back to a `String`, then
/// to an unkeyed list: decoding errors must leave the position where it was.
public enum Lenient: Codable, Equatable, Sendable {
    case number(Int)
    case text(String)
    case list([Lenient])

    public init(from decoder: any Decoder) throws {
        if let number = try? decoder.singleValueContainer().decode(Int.self) {
            self = .number(number)
        } else if let text = try? decoder.singleValueContainer().decode(String.self) {
            self = .text(text)
        } else {
            var container = try decoder.unkeyedContainer()
            var items: [Lenient] = []
            while !container.isAtEnd { items.append(try container.decode(Lenient.self)) }
            self = .list(items)
        }
    }

    public func encode(to encoder: any Encoder) throws {
        switch self {
        case .number(let number):
            var container = encoder.singleValueContainer()
            try container.encode(number)
        case .text(let text):
            var container = encoder.singleValueContainer()
            try container.encode(text)
        case .list(let items):
            var container = encoder.unkeyedContainer()
            for item in items { try container.encode(item) }
        }
    }
}

/// Every fixed-width primitive, in a keyed container, and optional ones in an unkeyed one.
public struct Scalars: Codable, Equatable, Sendable {
    public var int8: Int8
    public var int16: Int16
    public var int32: Int32
    public var int64: Int64
    public var uint: UInt
    public var uint128: UInt128
    public var flag: Bool
    public var optionals: [Int16?]
    public var bytes: [UInt8]

    public init(
        int8: Int8, int16: Int16, int32: Int32, int64: Int64, uint: UInt, uint128: UInt128, flag: Bool,
        optionals: [Int16?], bytes: [UInt8]
    ) {
        self.int8 = int8
        self.int16 = int16
        self.int32 = int32
        self.int64 = int64
        self.uint = uint
        self.uint128 = uint128
        self.flag = flag
        self.optionals = optionals
        self.bytes = bytes
    }
}
