// Memory shared between processes: a counter several workers add to, and an array
// several workers sum, each its own slice. Python's equivalent:
//
//     from multiprocessing import Process, Value, Array
//
//     def add(counter, times):
//         for _ in range(times):
//             with counter.get_lock():
//                 counter.value += 1
//
//     def partial_sum(array, lo, hi, results, k):
//         results[k] = sum(array[lo:hi])
//
//     if __name__ == "__main__":
//         counter = Value("q", 0)
//         workers = [Process(target=add, args=(counter, 10_000)) for _ in range(4)]
//         for w in workers: w.start()
//         for w in workers: w.join()
//         print(counter.value)                      # 40000
//
//         array = Array("d", range(1_000_000), lock=False)
//         results = Array("d", 4, lock=False)
//         ...                                        # 4 processes, one quarter each
//         print(sum(results))                       # 499999500000.0

import Multiprocessing

/// Adds 1 to the counter `times` times: lock-free, as the hardware allows for an `Int`.
struct Add: ProcessTarget {
    let counter: SharedValue<Int>
    var times: Int
    func run() {
        for _ in 0..<times { counter.add(1) }
    }
}

/// Sums a slice of an array; the slice travels as a handle, the numbers stay in place.
struct Sum: ProcessFunction {
    func callAsFunction(_ part: SharedArray<Double>) -> Double {
        part.withUnsafeBufferPointer { $0.reduce(0, +) }
    }
}

let counter = try SharedValue(0)
let adders = (0..<4).map { _ in ChildProcess(Add(counter: counter, times: 10_000), startMethod: .forkserver) }
for adder in adders { try adder.start() }
for adder in adders { try adder.join() }
print("counter after 4 processes × 10,000 increments: \(counter.load())")

/// Sums `numbers` in `parts` processes at once, one slice each.
func sum(of numbers: SharedArray<Double>, in parts: Int) async throws -> Double {
    let size = numbers.count / parts
    return try await withThrowingTaskGroup(of: Double.self) { group in
        for k in 0..<parts {
            let part = numbers[(k * size)..<((k + 1) * size)]
            group.addTask { try await ChildProcess.run(Sum(), with: part, startMethod: .forkserver) }
        }
        return try await group.reduce(0, +)
    }
}

let numbers = try SharedArray((0..<1_000_000).map(Double.init))
print("sum of 0..<1,000,000 by 4 processes: \(try await sum(of: numbers, in: 4))")
