// workers-64: a pool of 64 workers on a 2-core machine, doing real work, losing a worker to a
// crash and another to a timeout, and closing cleanly.

import Glibc
import Multiprocessing

/// CPU work that can also crash or hang on one chosen input.
struct Chore: ProcessFunction {
    /// How many rounds of `mix` each input takes.
    var rounds: Int
    /// The input on which the worker crashes (a real SIGSEGV).
    var crashAt: Int?
    /// The input on which the worker hangs until it is killed.
    var hangAt: Int?

    func callAsFunction(_ input: Int) -> Mixed {
        if input == crashAt {
            // Straight to the default action: the Swift runtime's backtracer would spend
            // seconds describing a crash that is on purpose.
            signal(SIGSEGV, SIG_DFL)
            raise(SIGSEGV)
        }
        if input == hangAt {
            while true { sleep(1000) }
        }
        return Mixed(input: input, rounds: rounds)
    }
}

/// 64 fork-server workers; in turn: a map over every worker (chunks of 1), then at once a map
/// whose middle item crashes its worker, a map whose middle item hangs past a 5 s timeout,
/// and one `submit` per worker; then a last map on the replaced workers. Every result is
/// checked, and exactly the crashed and the hung item fail, each with the right reason.
let workers64 = Scenario(
    name: "workers-64",
    summary: "64 workers on 2 cores: maps, a worker crash and a task timeout in the middle, clean close",
    fullDeadline: .seconds(240)
) { size in
    let workers = size.pick(64, tiny: 8)
    let rounds = 20_000
    let chore = Chore(rounds: rounds)
    // A generous limit: an ordinary item takes well under a millisecond of CPU, but 64 workers
    // share 2 cores with other programs.
    let timeout = Duration.seconds(5)
    var checked = 0

    try await withProcessPool(workers: workers, startMethod: .forkserver) { pool in
        func checkMap(_ inputs: Range<Int>, _ form: String) async throws {
            let outputs = try await pool.map(chore, Array(inputs), chunkSize: 1)
            for (input, output) in zip(inputs, outputs) where output != Mixed(input: input, rounds: rounds) {
                throw StressFailure("\(form): input \(input) gave \(output)")
            }
            guard outputs.count == inputs.count else {
                throw StressFailure("\(form): \(outputs.count) outputs for \(inputs.count) inputs")
            }
        }

        /// The results of a call in which exactly the item at `bad` must fail, as `expected` says.
        func checkOneFailure(
            _ results: [Result<Mixed, ProcessPoolError>], bad: Int, form: String,
            expected: (ProcessPoolError.Reason) -> Bool
        ) throws {
            for (index, result) in results.enumerated() {
                switch (result, index == bad) {
                case (.success(let output), false):
                    guard output == Mixed(input: index, rounds: rounds) else {
                        throw StressFailure("\(form): item \(index) gave \(output)")
                    }
                case (.failure(let error), true):
                    guard expected(error.reason), error.index == bad else {
                        throw StressFailure("\(form): item \(index) failed for the wrong reason: \(error)")
                    }
                case (.success, true): throw StressFailure("\(form): item \(index) should have failed")
                case (.failure(let error), false): throw StressFailure("\(form): \(error)")
                }
            }
        }

        let wide = 0..<(workers * 20)
        try await checkMap(wide, "map over every worker")
        checked += wide.count
        StressProgress.add(to: "first map done")

        let count = workers * 10
        let middle = count / 2
        async let crashed = pool.results(Chore(rounds: rounds, crashAt: middle), Array(0..<count), chunkSize: 1)
        async let hung = pool.results(
            Chore(rounds: rounds, hangAt: middle), Array(0..<count), chunkSize: 1, timeout: timeout)
        async let submitted = withThrowingTaskGroup(of: Mixed.self) { group in
            for input in 0..<workers { group.addTask { try await pool.submit(chore, input).value } }
            var once = ExactlyOnce(0..<workers)
            for try await output in group { try once.record(output, rounds: rounds, in: "submit") }
            try once.checkComplete("submit")
        }
        try checkOneFailure(await crashed, bad: middle, form: "map with a crash") {
            if case .workerEnded(.signaled(.segmentationFault)) = $0 { return true }
            return false
        }
        try checkOneFailure(await hung, bad: middle, form: "map with a timeout") {
            if case .timedOut(timeout) = $0 { return true }
            return false
        }
        try await submitted
        checked += 2 * count + workers
        StressProgress.add(to: "crash, timeout and submits done")

        try await checkMap(0..<(workers * 20), "map after the crash and the timeout")
        checked += workers * 20
    }
    return "\(workers) workers, \(checked) results checked, 1 crash and 1 timeout reported right"
}
