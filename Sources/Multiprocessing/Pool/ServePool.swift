import Logging

/// The work of a pool worker, in its own process: run the initializer, then answer tasks
/// for any ``ProcessFunction`` until the pool closes the channel.
struct ServePool: ProcessTarget {
    let tasks: Connection<PoolMessage>
    /// Shared with the pool: the task and the offset in it of the input being run (which
    /// the pool reads when the worker dies; see ``PoolWorker/Running``; the offset is the
    /// input count once the task is done), and the claim on a task sent ahead.
    let words: WorkerWords
    let initializer: EncodedTarget?
    /// pool-extras hook: SIGINT ignored, logs forwarded, memory watched.
    var extras = PoolWorkerExtras()

    func run() async throws {
        extras.install()  // pool-extras hook
        // A failing initializer does not end the worker (a replacement would fail the
        // same way, over and over): the worker stays and answers each input with why.
        var broken: String?
        do {
            try await initializer?.run()
        } catch {
            broken =
                "the initializer \(initializer?.readableTypeName ?? "") threw \(ErrorReport(error).typeName): \(error)"
        }
        // Fault matrix: a worker (a replacement too) that dies set up, before its first task.
        FaultInjection.step("pool.worker.initialized")
        // Each type name is resolved once: `_typeByName` walks the metadata sections.
        var functions: [String: any ProcessFunction.Type] = [:]
        // The next task often comes within microseconds (the pool sends ahead, or answers
        // its caller and sends the next): looked for a while before sleeping.
        var spin = SpinPolicy()
        // The last function decoded, by its bytes: a call sends the same function with
        // every chunk, and decoding it again cost as much as a small chunk's work.
        var lastFunction: (payload: [UInt8], value: any ProcessFunction)?
        // Tasks received and not yet run (a batch brings several), and the answers held to
        // go back together: one write for the whole batch instead of one per task. The
        // pool has sent what it wants answered soon in one batch, so answers are held only
        // until the tasks received are done.
        var received: [PoolMessage] = []
        var next = 0
        var answers: [PoolMessage] = []
        while true {
            if next == received.count {
                try await flush(&answers)
                received.removeAll(keepingCapacity: true)
                next = 0
                _ = tasks.lookForMessage(&spin)
                do {
                    let message = try await tasks.receive()
                    if case .batch(let messages) = message {
                        received = messages
                    } else {
                        received.append(message)
                    }
                } catch ConnectionError.endOfStream {
                    return  // the pool is done with this worker
                }
                // Fault matrix: tasks taken off the channel, none marked running yet.
                FaultInjection.step("pool.worker.received")
                continue
            }
            let message = received[next]
            next += 1
            guard case .task(let id, let typeName, let function, let inputs, let count, let eachInput) = message else {
                continue
            }
            guard words.claim(id) else {
                // Sent ahead, and taken back by an idle driver before this worker came to
                // it: another worker runs it. Said at once, so the driver stops waiting.
                answers.append(.skipped(id: id))
                continue
            }
            if eachInput {
                // Answered input by input as each ends (its clock is the pool's timeout):
                // nothing may wait behind it.
                try await flush(&answers)
            }
            if let broken {
                try await refuse(id: id, count: count, eachInput: eachInput, reason: broken, answers: &answers)
                continue
            }
            let type: (any ProcessFunction.Type)?
            if let known = functions[typeName] {
                type = known
            } else {
                type = _typeByName(typeName) as? any ProcessFunction.Type
                functions[typeName] = type
            }
            guard let type else {
                let reason = "the function type (mangled name \(typeName)) is not a ProcessFunction in this program"
                try await refuse(id: id, count: count, eachInput: eachInput, reason: reason, answers: &answers)
                continue
            }
            try await serve(
                type, function: function, inputs: inputs, count: count, task: id, eachInput: eachInput,
                last: &lastFunction, answers: &answers)
        }
    }

    /// Sends the answers held, in one message however many.
    private func flush(_ answers: inout [PoolMessage]) async throws {
        switch answers.count {
        case 0: return
        case 1: try await tasks.send(answers[0])
        default: try await tasks.send(.batch(answers))
        }
        // Fault matrix: answered, before the next task is taken.
        FaultInjection.step("pool.worker.replied")
        answers.removeAll(keepingCapacity: true)
    }

    /// Answers every input of a task that cannot run with `reason`.
    private func refuse(
        id: UInt64, count: Int, eachInput: Bool, reason: String, answers: inout [PoolMessage]
    ) async throws {
        words.setRunning(PoolWorker.Running(task: id, offset: count).word)
        if eachInput {
            for offset in 0..<count {
                try await tasks.send(.result(id: id, offset: offset, outcome: .couldNotStart(reason: reason)))
            }
        } else {
            answers.append(.results(id: id, outcomes: Array(repeating: .couldNotStart(reason: reason), count: count)))
        }
    }

    /// Decodes the function and the inputs once for the task, then calls the function with
    /// each input, recording which one runs, and answers each at once (`eachInput`) or all
    /// together.
    private func serve<Function: ProcessFunction>(
        _ type: Function.Type, function payload: [UInt8], inputs encodedInputs: [UInt8], count: Int,
        task id: UInt64, eachInput: Bool, last: inout (payload: [UInt8], value: any ProcessFunction)?,
        answers: inout [PoolMessage]
    ) async throws {
        let function: Function
        let inputs: [Function.Input]
        do {
            // The same bytes and the same type: the same value (decoding is deterministic).
            if let last, last.payload == payload, let same = last.value as? Function {
                function = same
            } else {
                function = try BinaryDecoder().decode(Function.self, from: payload)
                last = (payload, function)
            }
        } catch {
            let reason = "\(String(reflecting: Function.self)) could not be decoded: \(error)"
            try await refuse(id: id, count: count, eachInput: eachInput, reason: reason, answers: &answers)
            return
        }
        do {
            inputs = try BinaryDecoder().decode([Function.Input].self, from: encodedInputs)
            guard inputs.count == count else { throw ProcessPoolError(reason: .couldNotRun("\(inputs.count) inputs")) }
        } catch {
            let reason = "the inputs of \(String(reflecting: Function.self)) could not be decoded: \(error)"
            try await refuse(id: id, count: count, eachInput: eachInput, reason: reason, answers: &answers)
            return
        }
        var outputs: [Function.Output] = []
        var failures: [PoolItemFailure] = []
        if !eachInput { outputs.reserveCapacity(count) }
        let task = PoolWorker.Running(task: id, offset: 0).word
        if !eachInput {
            // One call for the chunk, specialised where the function type is declared.
            let words = words
            // Fault matrix: between two inputs (the one before done, its output not yet
            // answered) and with an input marked running, before it is called.
            outputs = await function._callEach(
                inputs,
                starting: {
                    if $0 > 0 { FaultInjection.step("pool.worker.afterItem") }
                    words.setRunning(task | $0)
                    FaultInjection.step("pool.worker.beforeItem")
                }
            ) { offset, error in
                failures.append(PoolItemFailure(offset: offset, outcome: .threw(ErrorReport(error))))
            }
        }
        for offset in inputs.indices where eachInput {
            let input = inputs[offset]
            words.setRunning(task | offset)
            FaultInjection.step("pool.worker.beforeItem")
            let output: Function.Output
            do {
                output = try await function(input)
                FaultInjection.step("pool.worker.afterItem")
            } catch {
                let outcome = ChildOutcome.threw(ErrorReport(error))
                if eachInput {
                    try await tasks.send(.result(id: id, offset: offset, outcome: outcome))
                } else {
                    failures.append(PoolItemFailure(offset: offset, outcome: outcome))
                }
                continue
            }
            if eachInput {
                try await tasks.send(.result(id: id, offset: offset, outcome: Self.encode(output)))
            } else {
                outputs.append(output)
            }
        }
        // The last input done, not yet marked so: the worker dies "running" it.
        if !eachInput && count > 0 { FaultInjection.step("pool.worker.afterItem") }
        // Past the last input: a worker that dies from here on was running none of them.
        words.setRunning(task | count)
        FaultInjection.step("pool.worker.taskDone")
        if eachInput { return }
        let encoded: [UInt8]
        do {
            encoded = try BinaryEncoder().encode(outputs)
        } catch {
            // Some output cannot be encoded: each is answered on its own, so only those fail.
            var failed: [Int: ChildOutcome] = [:]
            for failure in failures { failed[failure.offset] = failure.outcome }
            var succeeded = outputs.makeIterator()
            var outcomes: [ChildOutcome] = []
            outcomes.reserveCapacity(count)
            for offset in 0..<count {
                if let outcome = failed[offset] {
                    outcomes.append(outcome)
                } else if let output = succeeded.next() {
                    outcomes.append(Self.encode(output))
                }
            }
            answers.append(.results(id: id, outcomes: outcomes))
            return
        }
        answers.append(.outputs(id: id, outputs: encoded, failures: failures))
    }

    /// One output, encoded on its own.
    private static func encode<Output: Encodable>(_ output: Output) -> ChildOutcome {
        do {
            return .succeeded(output: try BinaryEncoder().encode(output))
        } catch {
            return .threw(ErrorReport(error))
        }
    }
}

extension ServePool: ForkServerPrepared {
    /// Checked against a real decode by `ForkServerPreparedTests`.
    static var typesDecoded: [any Decodable.Type] {
        [
            ServePool.self, Connection<PoolMessage>.self, WorkerWords.self, SharedValue<WorkerWords.Layout>.self,
            SharedRegion.self,
            EncodedTarget?.self, EncodedTarget.self, PoolWorkerExtras.self, Queue<WorkerLogRecord>?.self,
            Queue<WorkerLogRecord>.self, Logger.Level.self, Int?.self, SharedArray<Int>?.self, SharedArray<Int>.self,
            PoolMessage.self, [UInt8].self,
        ] + MessageStream.handleTypes
    }
}
