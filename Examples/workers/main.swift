// Three workers that each sleep 2 seconds, started together: the whole run takes about
// 2 seconds, not 6, because each worker is its own process.
//
// The Python original:
//
//     import multiprocessing, time
//
//     def worker(number):
//         print(f"Worker {number} starting")
//         time.sleep(2)
//         print(f"Worker {number} done")
//
//     if __name__ == "__main__":
//         start = time.time()
//         processes = [multiprocessing.Process(target=worker, args=(i,)) for i in range(3)]
//         for p in processes:
//             p.start()
//         for p in processes:
//             p.join()
//         print(f"All workers finished in {time.time() - start:.2f} seconds")
//
// Run: swift run workers

import Glibc
import Multiprocessing

/// The work: a value whose stored properties are its arguments. Nothing to register, and
/// no `if __name__ == "__main__"` guard: the children never run this file's top-level code.
struct Worker: ProcessTarget {
    var number: Int

    func run() async throws {
        print("Worker \(number) starting (pid \(CurrentProcess.id))")
        try await Task.sleep(for: .seconds(2))
        print("Worker \(number) done")
    }
}

let clock = ContinuousClock()
let start = clock.now
let processes = (0..<3).map { ChildProcess(Worker(number: $0), name: "worker-\($0)") }
for process in processes {
    try process.start()
}
for process in processes {
    try process.join()
}
let elapsed = start.duration(to: clock.now)
let centiseconds = Int(elapsed / .milliseconds(10))
let fraction = centiseconds % 100 < 10 ? "0\(centiseconds % 100)" : "\(centiseconds % 100)"
print("All workers finished in \(centiseconds / 100).\(fraction) seconds")
