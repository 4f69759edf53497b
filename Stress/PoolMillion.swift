// pool-1m: a million tasks through one process pool, in every form a caller has, at once.

import Multiprocessing

/// A million inputs through one `ProcessPool` of 4 workers, split over the ways of calling
/// it, all running at the same time: `map` with the automatic chunk size (60%), an unordered
/// stream (`mapUnordered`, 35%), and `apply` and `submit` from 8 tasks (5%). Every result is
/// checked: its value, and that each input is answered exactly once.
let poolMillion = Scenario(
    name: "pool-1m",
    summary: "1,000,000 tasks through one pool (map, mapUnordered, apply and submit from 8 tasks, at once)",
    fullDeadline: .seconds(300)
) { size in
    let total = size.pick(1_000_000, tiny: 10_000)
    let mapped = 0..<(total * 60 / 100)
    let streamed = mapped.upperBound..<(mapped.upperBound + total * 35 / 100)
    let called = streamed.upperBound..<total
    let callers = 8

    try await withProcessPool(workers: 4) { pool in
        async let map: Void = {
            let outputs = try await pool.map(MixFunction(), Array(mapped))
            guard outputs.count == mapped.count else {
                throw StressFailure("map: \(outputs.count) outputs for \(mapped.count) inputs")
            }
            for (input, output) in zip(mapped, outputs) where output != Mixed(input: input) {
                throw StressFailure("map: output \(input - mapped.lowerBound) is \(output), not that of input \(input)")
            }
        }()
        async let stream: Void = {
            var once = ExactlyOnce(streamed)
            for try await output in pool.mapUnordered(MixFunction(), streamed, chunkSize: 256) {
                try once.record(output, in: "mapUnordered")
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
                            for input in inputs { answers.append(try await pool.apply(MixFunction(), input)) }
                            return answers
                        }
                        var answers: [Mixed] = []
                        for batch in stride(from: 0, to: inputs.count, by: 32) {
                            let tasks = inputs[batch..<min(batch + 32, inputs.count)].map {
                                pool.submit(MixFunction(), $0)
                            }
                            for task in tasks { answers.append(try await task.value) }
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
    return "\(mapped.count) map + \(streamed.count) mapUnordered + \(called.count) apply/submit results checked"
}
