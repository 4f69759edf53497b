// Typed messages through a pipe: the parent sends lines to a worker started from the fork
// server, the worker answers each with its length, and the end of the conversation is the
// parent closing its end.
//
// The Python original:
//
//     from multiprocessing import Pipe, get_context
//
//     def measure(conn):
//         while True:
//             try:
//                 line = conn.recv()
//             except EOFError:
//                 break
//             conn.send((line, len(line)))
//
//     if __name__ == "__main__":
//         ctx = get_context("forkserver")
//         parent_end, child_end = Pipe()
//         p = ctx.Process(target=measure, args=(child_end,))
//         p.start()
//         child_end.close()
//         for line in ["hello", "multiprocessing", "in Swift"]:
//             parent_end.send(line)
//             print(parent_end.recv())
//         parent_end.close()
//         p.join()
//
// Run: swift run pipes

import Multiprocessing

/// The answer: a Codable struct, checked on both sides (Python would send a tuple).
struct Measurement: Codable {
    var line: String
    var length: Int
}

struct Measure: ProcessTarget {
    /// Travels to the child with the target; this process's copy is closed at start.
    let connection: Connection<Measurement>

    func run() async throws {
        // `messages` ends when the other side closes its end.
        for try await request in connection.messages {
            try await connection.send(Measurement(line: request.line, length: request.line.count))
        }
    }
}

let (parentEnd, childEnd) = try Connection<Measurement>.pair()
let worker = ChildProcess(Measure(connection: childEnd), name: "measurer", startMethod: .forkserver)
try worker.start()
for line in ["hello", "multiprocessing", "in Swift"] {
    try parentEnd.send(Measurement(line: line, length: 0))
    let answer = try parentEnd.receive()
    print("\(answer.line): \(answer.length) characters")
}
parentEnd.close()
try worker.join()
print("\(worker.name) \(worker.termination!)")
