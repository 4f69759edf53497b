// Errors across the process boundary: worker 2 throws, the others finish, and the parent
// learns which worker failed, how, and with what error.
//
// The Python original:
//
//     import multiprocessing
//
//     def worker(number):
//         if number == 2:
//             raise ValueError(f"Worker {number} failed")
//         print(f"Worker {number} completed successfully")
//
//     if __name__ == "__main__":
//         processes = [multiprocessing.Process(target=worker, args=(i,)) for i in range(4)]
//         for p in processes:
//             p.start()
//         for p in processes:
//             p.join()
//             if p.exitcode != 0:
//                 print(f"{p.name} failed with exit code {p.exitcode}")
//
// Python prints the child's traceback on stderr and gives the parent only `exitcode == 1`.
// Here the parent gets the error itself: its type, its message, the process and its pid,
// and, because `WorkerError` is Codable, the error value (`underlying`) to match on.
//
// Run: swift run error-handling

import Multiprocessing

/// An error type known to both sides: it comes back to the parent as itself.
struct WorkerError: Error, Codable, CustomStringConvertible {
    var number: Int
    var description: String { "Worker \(number) failed" }
}

struct Worker: ProcessTarget {
    var number: Int

    func run() throws {
        if number == 2 {
            throw WorkerError(number: number)
        }
        print("Worker \(number) completed successfully")
    }
}

let processes = (0..<4).map { ChildProcess(Worker(number: $0), name: "worker-\($0)") }
for process in processes {
    try process.start()
}
for process in processes {
    do {
        try process.join()
    } catch let error as ChildProcessError {
        print("\(process.name) failed with exit code \(process.exitCode ?? 0): \(error)")
        if let original = error.remoteError?.underlying as? WorkerError {
            print("  the original error came back as a WorkerError for worker \(original.number)")
        }
    }
}
