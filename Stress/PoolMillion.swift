// pool-1m: a million tasks through one process pool, in every form a caller has, at once.

import Multiprocessing

/// A million inputs through process pools, split over the ways of calling one, all running
/// at the same time: `map` with the automatic chunk size (60%) and an unordered stream
/// (`mapUnordered`, 35%) on a pool of 4 spawned workers, and `apply` and `submit` from 8 tasks
/// (5%) on a pool of 2 fork-server workers each replaced after 100 tasks (`maxTasksPerWorker`:
/// 500 worker replacements at full size). Every result is checked: its value, and that each
/// input is answered exactly once.
let poolMillion = Scenario(
    name: "pool-1m",
    summary:
        "1,000,000 tasks: map and mapUnordered on one pool, apply and submit from 8 tasks on a churning one, at once",
    fullDeadline: .seconds(300)
) { size in
    let total = size.pick(1_000_000, tiny: 10_000)
    let mapped = 0..<(total * 60 / 100)
    let streamed = mapped.upperBound..<(mapped.upperBound + total * 35 / 100)
    let called = streamed.upperBound..<total
    let callers = 8

    // The calls go to a pool of their own whose workers are replaced every 100 tasks: a
    // worker started and ended every few milliseconds all along.
    let churning = try await ProcessPool(workers: 2, startMethod: .forkserver, maxTasksPerWorker: 100)
    defer { churning.terminate() }
    try await withProcessPool(workers: 4) { pool in
        async let map: Void = {
            let outputs = try await pool.map(MixFunction(), Array(mapped))
            guard outputs.count == mapped.count else {
                throw StressFailure("map: \(outputs.count) outputs for \(mapped.count) inputs")
            }
            StressProgress.add(outputs.count, to: "map outputs")
            for (input, output) in zip(mapped, outputs) where output != Mixed(input: input) {
                throw StressFailure("map: output \(input - mapped.lowerBound) is \(output), not that of input \(input)")
            }
        }()
        async let stream: Void = {
            var once = ExactlyOnce(streamed)
            for try await output in pool.mapUnordered(MixFunction(), streamed, chunkSize: 256) {
                try once.record(output, in: "mapUnordered")
                StressProgress.add(to: "mapUnordered outputs")
            }
            try once.checkComplete("mapUnordered")
        }()
        async let calls: Void = {
            let answers = try await withThrowingTaskGroup(of: [Mixed].self) { group in
                for caller in 0..<callers {
                    let inputs = Array(stride(from: called.lowerBound + caller, to: called.upperBound, by: callers))
                    group.addTask {
                        // Half the callers wait for each call in turn (`apply`); the other
                        // half keep 32 calls in flight (`submit`, then each task's value).
                        if caller.isMultiple(of: 2) {
                            var answers: [Mixed] = []
                            for input in inputs {
                                answers.append(try await churning.apply(MixFunction(), input))
                                StressProgress.add(to: "apply \(caller)")
                            }
                            return answers
                        }
                        var answers: [Mixed] = []
                        for batch in stride(from: 0, to: inputs.count, by: 32) {
                            let tasks = inputs[batch..<min(batch + 32, inputs.count)].map {
                                churning.submit(MixFunction(), $0)
                            }
                            for task in tasks {
                                answers.append(try await task.value)
                                StressProgress.add(to: "submit \(caller)")
                            }
                        }
                        return answers
                    }
                }
                var all: [Mixed] = []
                for try await answers in group { all += answers }
                return all
            }
            var once = ExactlyOnce(called)
            for answer in answers { try once.record(answer, in: "apply/submit") }
            try once.checkComplete("apply/submit")
        }()
        try await map
        try await stream
        try await calls
    }
    await churning.join()
    return "\(mapped.count) map + \(streamed.count) mapUnordered + \(called.count) apply/submit results checked"
}
