/// Work that rank 0 starts on a worker rank: a Codable value whose stored properties are its
/// arguments, run there with a ``RankChannel`` back to rank 0.
///
/// As with the root library's `ProcessTarget`, the worker rank finds the type by its mangled
/// name (every rank runs the same program): nothing to register.
///
/// ```swift
/// struct Echo: RankJob {
///     func run(channel: RankChannel) async throws {
///         while let values = try await channel.receiveElements(of: Double.self, timeout: .seconds(30)) {
///             try await channel.sendElements(values)
///         }
///     }
/// }
/// let world = try await MPIWorld.start()
/// let channel = try await world.start(Echo(), on: 1)
/// try await channel.sendElements([1.0, 2.0])
/// let back = try await channel.receiveElements(of: Double.self)
/// ```
///
/// When `run` returns or throws, rank 0 learns it: a receive on the channel that finds no
/// more messages throws ``MPIError/jobEnded(rank:)`` or ``MPIError/jobFailed(rank:description:)``.
public protocol RankJob: Codable, Sendable {
    /// The work, on the worker rank; `channel` leads to rank 0.
    func run(channel: RankChannel) async throws
}
