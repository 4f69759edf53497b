// A long map with a progress bar: completed/total, rate and time left, redrawn on one line.
//
// The Python original (with the tqdm package):
//
//     from multiprocessing import Pool
//     from tqdm import tqdm
//
//     with Pool() as pool:
//         results = list(tqdm(pool.imap(work, range(400)), total=400))
//
// Here the pool reports its progress itself: a `progress:` closure (as below), or a
// `PoolProgressReporter` whose `updates` are an AsyncSequence. Updates are rate-limited
// (at most one per 100 ms, plus the final one), so a million-item map costs no more.
//
// When standard output is not a terminal (a CI log), a few plain lines are printed instead
// of a bar redrawn in place.
//
// Run: swift run progress

import Glibc
import Multiprocessing
import Synchronization

/// About 10 ms of CPU work: sums a little arithmetic, so the compiler cannot skip it.
struct Work: ProcessFunction {
    func callAsFunction(_ seed: Int) -> Int {
        var x = UInt64(truncatingIfNeeded: seed) &+ 1
        var total: UInt64 = 0
        let start = ContinuousClock.now
        while ContinuousClock.now - start < .milliseconds(10) {
            for _ in 0..<1000 {
                x = x &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                total &+= x >> 33
            }
        }
        return Int(truncatingIfNeeded: total % 1000)
    }
}

/// `[#########.....................]  120/400  41.2 items/s  about 6.8 s left`
func bar(_ progress: PoolProgress) -> String {
    let width = 30
    let filled = min(width, Int((progress.fractionCompleted ?? 0) * Double(width)))
    let cells = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
    let count = "\(progress.completed)/\(progress.total.map(String.init) ?? "?")"
    var line = "[\(cells)]  \(count)  \(oneDecimal(progress.rate)) items/s"
    if progress.isFinished {
        line += "  done in \(oneDecimal(seconds(progress.elapsed))) s"
    } else if let left = progress.estimatedTimeRemaining {
        line += "  about \(oneDecimal(seconds(left))) s left"
    }
    return line
}

func seconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
}

func oneDecimal(_ x: Double) -> String {
    let tenths = Int((x * 10).rounded())
    return "\(tenths / 10).\(tenths % 10)"
}

let isTerminal = isatty(STDOUT_FILENO) == 1
let count = 400
print("Mapping \(count) items of ~10 ms CPU work each over \(CurrentProcess.cpuCount) workers")
let outputs = try await withProcessPool { pool in
    // On a terminal: redraw at every update. Otherwise: a line for about every quarter.
    let nextQuarter = Mutex(1)
    return try await pool.map(Work(), Array(0..<count), chunkSize: 4) { progress in
        if isTerminal {
            print("\r\u{1B}[K" + bar(progress), terminator: progress.isFinished ? "\n" : "")
            fflush(nil)  // every stream: `stdout` itself is a global Swift 6 will not read from here
        } else if progress.isFinished
            || nextQuarter.withLock({ quarter in
                guard let fraction = progress.fractionCompleted, fraction >= Double(quarter) / 4 else { return false }
                quarter = Int(fraction * 4) + 1
                return true
            })
        {
            print(progress)
        }
    }
}
print("\(outputs.count) outputs")
