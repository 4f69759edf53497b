// A pool of worker processes: the outputs of a map in input order, and a map in which one
// input crashes its worker.
//
// The Python original:
//
//     from multiprocessing import Pool
//
//     def square(x):
//         return x * x
//
//     if __name__ == "__main__":
//         with Pool(3) as pool:
//             print(pool.map(square, [1, 2, 3, 4, 5]))
//
// In Python, an input that kills its worker (os.kill(os.getpid(), 9)) makes `pool.map`
// hang forever; `concurrent.futures.ProcessPoolExecutor` raises BrokenProcessPool and is
// dead for good. Here only that input fails, with an error naming it and how its worker
// ended; the pool starts a new worker and finishes the rest.
//
// Run: swift run pool

import Glibc
import Multiprocessing

struct Square: ProcessFunction {
    func callAsFunction(_ x: Int) -> Int { x * x }
}

/// Halves its input (rounding down); input 13 kills its own worker (a stand-in for a crash in C code).
struct FragileHalf: ProcessFunction {
    func callAsFunction(_ x: Int) -> Int {
        if x == 13 { kill(getpid(), SIGKILL) }
        return x / 2
    }
}

try await withProcessPool(workers: 3) { pool in
    print(try await pool.map(Square(), [1, 2, 3, 4, 5]))

    let results = await pool.results(FragileHalf(), Array(10..<20))
    for (offset, result) in results.enumerated() {
        switch result {
        case .success(let half): print("input \(10 + offset) -> \(half)")
        case .failure(let error): print("input \(10 + offset) failed: \(error)")
        }
    }

    // `map` throws the failure instead: the error names the item's index.
    do {
        _ = try await pool.map(FragileHalf(), [12, 13, 14])
    } catch let error as ProcessPoolError {
        print("map threw: \(error)")
    }

    // The pool replaced the dead workers and still serves.
    print(try await pool.map(Square(), Array(6...10)))
}
