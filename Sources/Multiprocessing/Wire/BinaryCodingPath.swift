// Coding paths for the binary codec, tracked without allocating on the success path.
//
// `Encoder.codingPath` is an array of existential keys. Building `codingPath + [key]` for
// every nested value (as a naive implementation does) costs an allocation per value, and
// the path is almost never read: only user code that asks for it and error messages need
// it. So the encoder/decoder keeps ONE stack of components that is pushed before a nested
// value is coded and popped after, and each container remembers where its own path is:
// the first `depth` components of that stack plus, rarely, a few `extra` components of
// its own (nested containers and super encoders, whose path is not on the stack).

#if _endian(big)
    #error("the binary wire format is little-endian and this library only supports little-endian targets")
#endif

/// One step of a coding path: a key in a keyed container, or a position in an unkeyed
/// container (or a dictionary's entry number). Storing the index as an `Int` instead of
/// a `CodingKey` keeps pushes for array elements free of existential boxing.
enum _BinaryPathComponent {
    case key(any CodingKey)
    case index(Int)

    var codingKey: any CodingKey {
        switch self {
        case .key(let key): key
        case .index(let index): _BinaryCodingKey(index: index)
        }
    }
}

/// Where a container's (or super encoder's) coding path lives: the first `depth`
/// components of the coder's path stack, followed by `extra`.
///
/// While the value that created a container is being coded, the stack's first `depth`
/// components cannot change (nested values push and pop above them), so the prefix is a
/// faithful, free record of the path. `extra` is empty except for nested containers and
/// super encoders/decoders, which are rare enough to pay for a small allocation. It is
/// boxed in an optional reference rather than stored as an array so that copying a spot
/// (the standard library's container boxes copy the container for every call) retains
/// nothing in the common case.
struct _BinaryPathSpot {
    var depth: Int
    private var extraComponents: _BinaryPathExtra?

    init(depth: Int) {
        self.depth = depth
        self.extraComponents = nil
    }

    private init(depth: Int, extra: [_BinaryPathComponent]) {
        self.depth = depth
        self.extraComponents = _BinaryPathExtra(extra)
    }

    var extra: [_BinaryPathComponent] { extraComponents?.components ?? [] }

    /// The spot of a nested container or super coder one component below this one.
    func appending(_ component: _BinaryPathComponent) -> _BinaryPathSpot {
        _BinaryPathSpot(depth: depth, extra: extra + [component])
    }
}

/// The components of a path spot beyond the stack prefix.
final class _BinaryPathExtra {
    let components: [_BinaryPathComponent]
    init(_ components: [_BinaryPathComponent]) { self.components = components }
}

/// The coding key this codec invents: array positions (`"Index 3"`, like Foundation's
/// coders) and the `"super"` key of `superEncoder()`/`superDecoder()`.
struct _BinaryCodingKey: CodingKey {
    var stringValue: String
    var intValue: Int?

    init(stringValue: String) {
        self.stringValue = stringValue
        self.intValue = nil
    }

    init(intValue: Int) {
        self.stringValue = "\(intValue)"
        self.intValue = intValue
    }

    init(index: Int) {
        self.stringValue = "Index \(index)"
        self.intValue = index
    }

    /// The key Codable's documentation prescribes for `superEncoder()`/`superDecoder()`.
    static let `super` = _BinaryCodingKey(stringValue: "super")
}

/// The state shared by the encoder and decoder implementations for path tracking.
protocol _BinaryPathTracking: AnyObject {
    var path: [_BinaryPathComponent] { get set }
}

extension _BinaryPathTracking {
    /// The spot of a container created by the coder itself, at the current path.
    var currentSpot: _BinaryPathSpot { _BinaryPathSpot(depth: path.count) }

    /// Runs `body` with the path stack set to `spot` followed by `last`, then restores it.
    ///
    /// In the normal case the stack already ends at `spot.depth` (the container's value is
    /// the one being coded), so this is a push and a pop. A container used out of order
    /// (kept past the value that created it) gets a temporary copy of its own path
    /// instead; the stack is restored either way.
    @inline(__always)
    func withPath<R>(
        _ spot: _BinaryPathSpot, _ last: _BinaryPathComponent?, _ body: () throws -> R
    ) rethrows -> R {
        if path.count == spot.depth {
            let extra = spot.extra
            if extra.isEmpty {
                guard let last else { return try body() }
                path.append(last)
                defer { path.removeLast(Swift.min(1, path.count)) }
                return try body()
            }
            let pushed = extra.count + (last == nil ? 0 : 1)
            path.append(contentsOf: extra)
            if let last { path.append(last) }
            defer { path.removeLast(Swift.min(pushed, path.count)) }
            return try body()
        }
        let saved = path
        path = components(spot, last)
        defer { path = saved }
        return try body()
    }

    /// The components of `spot` followed by `last`.
    func components(_ spot: _BinaryPathSpot, _ last: _BinaryPathComponent?) -> [_BinaryPathComponent] {
        var result = Array(path.prefix(Swift.max(0, spot.depth)))
        result.append(contentsOf: spot.extra)
        if let last { result.append(last) }
        return result
    }

    /// The public `codingPath` of a container or coder at `spot`.
    func codingKeys(_ spot: _BinaryPathSpot, _ last: _BinaryPathComponent? = nil) -> [any CodingKey] {
        components(spot, last).map(\.codingKey)
    }

    /// The path of `spot` followed by `last`, rendered for an error message (`items[3].x`).
    /// Only called when an error is thrown.
    func pathString(_ spot: _BinaryPathSpot, _ last: _BinaryPathComponent? = nil) -> String {
        _renderBinaryPath(components(spot, last))
    }

    /// The current path, rendered for an error message.
    var currentPathString: String { _renderBinaryPath(path) }
}

/// Renders a coding path the way a Swift expression reads: `items[3].x`.
func _renderBinaryPath(_ components: [_BinaryPathComponent]) -> String {
    var text = ""
    for component in components {
        switch component {
        case .key(let key):
            if !text.isEmpty { text += "." }
            text += key.stringValue
        case .index(let index):
            text += "[\(index)]"
        }
    }
    return text
}
