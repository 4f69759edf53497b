// A queue between processes: a child puts the squares of 1...5, the parent gets them in
// order. Python's equivalent:
//
//     from multiprocessing import Process, Queue
//
//     def squares(q):
//         for n in range(1, 6):
//             q.put(n * n)
//
//     if __name__ == "__main__":
//         q = Queue()
//         p = Process(target=squares, args=(q,))
//         p.start()
//         for _ in range(5):
//             print(q.get())                        # 1 4 9 16 25
//         p.join()
//
// Here the items are in shared memory as soon as `put` returns (no feeder thread), so the
// parent could even join the child before getting them; with Python that join can hang.

import Multiprocessing

/// Puts the squares of 1...5 on the queue it was given.
struct Squares: ProcessTarget {
    let queue: Queue<Int>
    func run() throws {
        for n in 1...5 { try queue.put(n * n) }
    }
}

let queue = try Queue<Int>()
let child = ChildProcess(Squares(queue: queue))
try child.start()
for _ in 1...5 { print(try queue.get()) }
try child.join()

// A JoinableQueue: workers mark each job done, and `join` waits for all of them.
struct Worker: ProcessTarget {
    let jobs: JoinableQueue<String>
    func run() throws {
        while let job = try jobs.get(timeout: .milliseconds(200)) {
            print("processed \(job)")
            try jobs.taskDone()
        }
    }
}

let jobs = try JoinableQueue<String>()
for name in ["apples", "pears", "plums"] { try jobs.put(name) }
let workers = (0..<2).map { _ in ChildProcess(Worker(jobs: jobs), startMethod: .forkserver) }
for worker in workers { try worker.start() }
jobs.join()
print("all 3 jobs done")
for worker in workers { try worker.join() }
