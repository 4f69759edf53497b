import SystemPackage

extension CodingUserInfoKey {
    /// Where a handle (a connection end, later a queue or a lock) being encoded puts its
    /// descriptor, to travel beside the message as SCM_RIGHTS.
    static let descriptorOutbox = CodingUserInfoKey(rawValue: "swift-multiprocessing.descriptor-outbox")!
    /// Where a handle being decoded finds the descriptors that came with the message.
    static let descriptorInbox = CodingUserInfoKey(rawValue: "swift-multiprocessing.descriptor-inbox")!

    /// Set to `true` by an encoder whose messages leave this machine (the MPI transport,
    /// MultiprocessingMPI). A handle that travels by descriptor already refuses an encoder
    /// with no descriptor outbox; one that travels by name (``SharedMemory``) checks this key.
    @_spi(MPI) public static let leavesMachine = CodingUserInfoKey(rawValue: "swift-multiprocessing.leaves-machine")!
}

/// A handle that moves with the message that carries it: the sender's copy is closed once
/// the message is sent (a connection end), so only the receiver holds it.
protocol MovingHandle: AnyObject {
    func close()
}

/// Collects the descriptors of the handles inside a value while it is encoded.
///
/// A handle encodes only an index into this list; the descriptors themselves go out with
/// the message. Handles that *move* (a connection end: the receiving process takes it) are
/// listed so the sender can close its own copy once the message is on its way, which is
/// what makes end-of-stream work when the peer dies.
final class DescriptorOutbox {
    private(set) var descriptors: [FileDescriptor] = []
    private(set) var moved: [any MovingHandle] = []

    /// Adds a descriptor and returns its index in the message.
    func add(_ descriptor: FileDescriptor, moving stream: (any MovingHandle)? = nil) throws -> Int {
        guard descriptors.count < 253 else {
            throw WireError.unencodable("a message can carry at most 253 handles", codingPath: "")
        }
        descriptors.append(descriptor)
        if let stream { moved.append(stream) }
        return descriptors.count - 1
    }

    /// Closes the sender's copies of the handles that moved.
    func closeMoved() {
        for stream in moved { stream.close() }
    }

    /// Empties the outbox for the next message, returning the streams that moved with the
    /// last one (to close once it is sent).
    func reset() -> [any MovingHandle] {
        if descriptors.isEmpty && moved.isEmpty { return [] }
        let streams = moved
        descriptors.removeAll(keepingCapacity: true)
        moved.removeAll(keepingCapacity: true)
        return streams
    }
}

/// Hands the descriptors that came with a message to the handles decoded from it.
final class DescriptorInbox {
    private var descriptors: [FileDescriptor?]

    init(_ descriptors: [FileDescriptor]) { self.descriptors = descriptors }

    /// Takes the descriptor at `index`; each can be taken once.
    func take(_ index: Int) throws -> FileDescriptor {
        guard descriptors.indices.contains(index), let descriptor = descriptors[index] else {
            throw WireError.invalidData("the message has no descriptor number \(index) for this handle", codingPath: "")
        }
        descriptors[index] = nil
        return descriptor
    }

    /// Closes what no handle took (a malformed message, or a decode that failed halfway),
    /// so a bad message never leaks descriptors.
    func closeUnclaimed() {
        for case let descriptor? in descriptors { descriptor.closeIgnoringErrors() }
        descriptors = []
    }
}
