/// What the parent sends a new child on its bootstrap socket: the work and its name.
///
/// The work's own bytes are nested (`payload`) so the child can report a type it cannot
/// find before trying to decode anything.
struct StartMessage: Codable {
    enum Work: Codable {
        /// A ``ProcessTarget``: run it.
        case target
        /// A ``ProcessFunction``: call it with this encoded input and send back the output.
        case function(input: [UInt8])
    }
    var processName: String
    /// `_mangledTypeName` of the target or function type.
    var typeName: String
    /// A readable name of the type, for errors (`String(reflecting:)`).
    var readableTypeName: String
    var payload: [UInt8]
    var work: Work
}

/// What a child sends back before it exits.
enum ChildOutcome: Codable, Sendable {
    /// The work finished; `output` is the encoded output of a function (empty for a target).
    case succeeded(output: [UInt8])
    /// The work threw.
    case threw(ErrorReport)
    /// The child could not run the work at all (type not found, payload not decodable).
    case couldNotStart(reason: String)
}

/// A thrown error as it crosses the process boundary.
struct ErrorReport: Codable, Sendable {
    var typeName: String
    var description: String
    /// For a Codable error: its mangled type name and its encoded value, so the parent can
    /// rebuild the error itself.
    var mangledTypeName: String?
    var value: [UInt8]?

    /// The largest description or value sent back: the report must fit in the socket's
    /// buffer, so a child never blocks on its way out.
    static let limit = 32 * 1024

    init(_ error: any Error) {
        typeName = String(reflecting: type(of: error))
        var text = String(describing: error)
        if text.utf8.count > Self.limit { text = String(decoding: text.utf8.prefix(Self.limit), as: UTF8.self) + "…" }
        description = text
        if let encodable = error as? any Encodable, let name = _mangledTypeName(type(of: error)),
            let bytes = try? BinaryEncoder().encode(encodable), bytes.count <= Self.limit
        {
            mangledTypeName = name
            value = bytes
        }
    }

    /// The original error, when its type exists here and is a Decodable `Error`.
    ///
    /// The type name comes from the child, which may have crashed halfway or be hostile:
    /// only a type that is both `Error` and `Decodable` is ever decoded, so no other
    /// type's `init(from:)` runs in this process because a child named it.
    func rebuild() -> (any Error)? {
        guard let name = mangledTypeName, let value,
            let type = _typeByName(name) as? any (Error & Decodable).Type
        else {
            return nil
        }
        return try? BinaryDecoder().decode(type, from: value)
    }
}
