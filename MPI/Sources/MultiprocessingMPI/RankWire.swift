@_spi(MPI) import Multiprocessing

/// Values between ranks, on the library's binary wire, with no descriptor channel: a handle
/// that only means something on one machine refuses to be encoded (those passed by
/// descriptor find no descriptor outbox; `SharedMemory`, passed by name, sees
/// `leavesMachine`), and the refusal is told as ``MPIError/notSendableToAnotherRank(type:codingPath:reason:)``.
enum RankWire {
    /// What the root library's handles say when encoded with no descriptor channel
    /// (Connection.swift, SharedRegion.swift, Queue.swift): the sign that the value holds one.
    private static let oneMachineMarker = "can only be encoded by swift-multiprocessing"

    static func encode<Value: Encodable>(_ value: Value) throws -> [UInt8] {
        do {
            return try BinaryEncoder(userInfo: [.leavesMachine: true]).encode(value)
        } catch EncodingError.invalidValue(_, let context) where context.debugDescription.contains(oneMachineMarker) {
            throw MPIError.notSendableToAnotherRank(
                type: String(reflecting: Value.self), codingPath: render(context.codingPath),
                reason: context.debugDescription)
        }
    }

    static func decode<Value: Decodable>(_ type: Value.Type, from bytes: [UInt8]) throws -> Value {
        try BinaryDecoder().decode(type, from: bytes)
    }

    /// `items[3].connection`, as the root library writes coding paths.
    private static func render(_ path: [any CodingKey]) -> String {
        var text = ""
        for key in path {
            if let index = key.intValue {
                text += "[\(index)]"
            } else {
                text += text.isEmpty ? key.stringValue : ".\(key.stringValue)"
            }
        }
        return text
    }
}
