import Multiprocessing

/// One type the binary-decoder target decodes every input as, with the values its seeds
/// are encoded from.
public struct DecodingCase: Sendable {
    public let name: String
    /// Decodes the bytes as this case's type and checks the outcome; traps on a violation.
    public let check: @Sendable (UnsafeRawBufferPointer) -> Void
    /// Valid encodings, for the seed corpus.
    public let seeds: @Sendable () throws -> [[UInt8]]
}

/// Decodes `bytes` as a `T`. A rejection must be a thrown `WireError` (or the
/// `DecodingError` a synthesized enum conformance throws for a case it does not know);
/// an accepted value must encode again and read back as the same value (`same`; nil for
/// types whose encoding is ambiguous by design, like `Lenient`).
func decodeAndCheck<T: Codable>(_ type: T.Type, _ bytes: UnsafeRawBufferPointer, same: ((T, T) -> Bool)?) {
    let value: T
    do {
        value = try BinaryDecoder().decode(T.self, from: bytes)
    } catch is WireError {
        return
    } catch is DecodingError {
        return
    } catch {
        fatalError("decoding \(T.self) threw \(error), which is neither a WireError nor a DecodingError")
    }
    guard let same else { return }
    do {
        let encoded = try BinaryEncoder().encode(value)
        let again = try BinaryDecoder().decode(T.self, from: encoded)
        guard same(value, again) else {
            fatalError("\(T.self) decoded from fuzzed bytes did not survive a round trip: \(value) became \(again)")
        }
    } catch {
        fatalError("\(T.self) decoded from fuzzed bytes failed to round-trip: \(error)")
    }
}

private func encodings<T: Encodable>(_ values: [T]) throws -> [[UInt8]] {
    try values.map { try BinaryEncoder().encode($0) }
}

/// Doubles compare by bit pattern: a NaN must come back as the same NaN.
private func sameBits(_ a: [Double], _ b: [Double]) -> Bool {
    a.map(\.bitPattern) == b.map(\.bitPattern)
}

/// Every type the binary-decoder target tries, in a fixed order.
public let decodingCases: [DecodingCase] = [
    DecodingCase(
        name: "Order", check: { decodeAndCheck(Order.self, $0, same: ==) },
        seeds: { try encodings(sampleOrders()) }),
    DecodingCase(
        name: "Doubles", check: { decodeAndCheck([Double].self, $0, same: sameBits) },
        seeds: { try encodings([[], [0, -0.0, 1.5, .infinity, .nan, .leastNonzeroMagnitude]]) }),
    DecodingCase(
        name: "DictionaryOfArrays", check: { decodeAndCheck([String: [Int]].self, $0, same: ==) },
        seeds: { try encodings([[:], ["a": [], "bb": [1, -2, .max], "ü": [0]]]) }),
    DecodingCase(
        name: "IntKeys", check: { decodeAndCheck([Int: Lenient?].self, $0, same: nil) },
        seeds: { try encodings([[:], [1: .number(2), -3: nil, 4: .list([.text("")])]] as [[Int: Lenient?]]) }),
    DecodingCase(
        name: "Expression", check: { decodeAndCheck(Expression.self, $0, same: ==) },
        seeds: { try encodings(sampleExpressions()) }),
    DecodingCase(
        name: "Circle", check: { decodeAndCheck(Circle.self, $0, same: { $0.same(as: $1) }) },
        seeds: { try encodings([Circle(name: "unit", radius: 1), Circle(name: "", radius: .max)]) }),
    DecodingCase(
        name: "Lenient", check: { decodeAndCheck(Lenient.self, $0, same: nil) },
        seeds: { try encodings([Lenient.number(7), .text("seven"), .list([.number(1), .text("x"), .list([])])]) }),
    DecodingCase(
        name: "Scalars", check: { decodeAndCheck(Scalars.self, $0, same: ==) },
        seeds: {
            try encodings([
                Scalars(
                    int8: -1, int16: 300, int32: -70000, int64: .min, uint: .max, uint128: .max, flag: true,
                    optionals: [nil, 5, nil], bytes: [0, 1, 255])
            ])
        }),
    DecodingCase(
        name: "OptionalStrings", check: { decodeAndCheck([String?].self, $0, same: ==) },
        seeds: { try encodings([[nil, "", "héllo", String(repeating: "x", count: 130)]]) }),
    DecodingCase(
        name: "NestedOptional", check: { decodeAndCheck(Int???.self, $0, same: ==) },
        seeds: { try encodings([Int???.none, .some(.none), .some(.some(.none)), .some(.some(.some(42)))]) }),
]

// Functions, not stored globals: values kept alive until exit would be reported by
// LeakSanitizer (indirect enum boxes are referenced through tagged pointers it cannot follow).
private func sampleOrders() -> [Order] {
    [
        Order(
            id: 1, customer: "Ada", lines: [], tags: [:], note: nil, status: .pending, matrix: [], paid: false,
            reference: nil, doubleOptional: nil, wide: 0),
        Order(
            id: -42, customer: "Grace Hopper",
            lines: [
                Line(sku: "A-1", quantity: 3, cents: 1999, gift: nil),
                Line(sku: "B-22", quantity: 1, cents: -5, gift: Gift(message: "for you", wrapping: Wrapping())),
            ],
            tags: ["rush": [1], "fragile": [2, 3]], note: "ring twice",
            status: .shipped(tracking: "Z123", parcels: [1, 2, 65535]), matrix: [[1, -2], [], [127]], paid: true,
            reference: 0xDEAD_BEEF, doubleOptional: .some(nil), wide: .min),
        Order(
            id: .max, customer: "日本", lines: [Line(sku: "", quantity: 0, cents: 0, gift: nil)], tags: ["": []],
            note: "", status: .cancelled(reason: nil, refund: -1), matrix: [[]], paid: true, reference: 0,
            doubleOptional: .some(.some(7)), wide: .max),
        Order(
            id: 0, customer: "x", lines: [], tags: [:], note: nil, status: .unlabelled(-128, 255), matrix: [],
            paid: false, reference: nil, doubleOptional: nil, wide: 1),
    ]
}

private func sampleExpressions() -> [Expression] {
    [
        .number(0),
        .variable(nil),
        .add(.number(1), .negate(.variable("x"))),
        .call(name: "max", arguments: [.number(-1), .call(name: "f", arguments: []), .add(.number(2), .number(3))]),
        (0..<100).reduce(Expression.number(1)) { inner, _ in .negate(inner) },
        // A chain close to the codec's nesting limit of 512 values.
        (0..<500).reduce(Expression.number(1)) { inner, _ in .negate(inner) },
    ]
}
