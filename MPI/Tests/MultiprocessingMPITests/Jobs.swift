import Glibc
import Multiprocessing
import MultiprocessingMPI

/// A value with a bit of everything the binary wire carries.
struct Greeting: Codable, Sendable, Equatable {
    var text: String
    var numbers: [Int]
    var ratio: Double?
}

/// Sends back each message it receives, as bytes, until rank 0 goes quiet.
struct EchoBytes: RankJob {
    var rounds: Int
    func run(channel: RankChannel) async throws {
        for _ in 0..<rounds {
            let bytes = try await channel.receiveBytes()
            try await channel.sendBytes(bytes)
        }
    }
}

/// Sends back each array of doubles, from the array it received (no copy on either side).
struct EchoDoubles: RankJob {
    var rounds: Int
    func run(channel: RankChannel) async throws {
        for _ in 0..<rounds {
            let values = try await channel.receiveElements(of: Double.self)
            try await channel.sendElements(values)
        }
    }
}

/// Says where it runs: its rank, as a typed value.
struct WhoAreYou: RankJob {
    func run(channel: RankChannel) async throws {
        let greeting = try await channel.receive(Greeting.self)
        let world = try await MPIWorld.start()
        try await channel.send(
            Greeting(
                text: greeting.text + " from \(world.rank)", numbers: greeting.numbers.reversed(), ratio: greeting.ratio
            ))
    }
}

/// Ends at once without a word.
struct Silent: RankJob {
    func run(channel: RankChannel) async throws {}
}

/// Waits for one message, then ends.
struct WaitsOnce: RankJob {
    func run(channel: RankChannel) async throws {
        _ = try await channel.receiveBytes()
    }
}

/// Throws.
struct Thrower: RankJob {
    struct Failure: Error, CustomStringConvertible {
        var description: String { "the job threw on purpose" }
    }
    func run(channel: RankChannel) async throws { throw Failure() }
}

/// Kills its own rank with SIGKILL once rank 0 has heard from it.
struct KillOwnRank: RankJob {
    func run(channel: RankChannel) async throws {
        try await channel.send("about to die")
        kill(getpid(), SIGKILL)
    }
}

/// Squares a number in a child process (the root library's ProcessFunction).
struct Square: ProcessFunction {
    func callAsFunction(_ x: Int) -> Int { x * x }
}

/// Runs work in local processes of its worker rank (a child process and a one-worker
/// pool), as the pool's backend will, and sends the results back.
struct LocalProcesses: RankJob {
    func run(channel: RankChannel) async throws {
        let input = try await channel.receive(Int.self)
        let child = try await ChildProcess.run(Square(), with: input)
        let pool = try await ProcessPool(workers: 1)
        let pooled = try await pool.map(Square(), [input, input + 1])
        pool.close()
        await pool.join()
        try await channel.send([child] + pooled + [Int(getpid())])
    }
}
