/// The work of a pool worker, in its own process: run the initializer, then answer tasks
/// for any ``ProcessFunction`` until the pool closes the channel.
struct ServePool: ProcessTarget {
    let tasks: Connection<PoolMessage>
    /// The offset, in the current task, of the input being run (shared with the pool, which
    /// reads it when the worker dies); the input count once the task is done.
    let running: SharedValue<Int>
    let initializer: EncodedTarget?

    func run() async throws {
        // A failing initializer does not end the worker (a replacement would fail the
        // same way, over and over): the worker stays and answers each input with why.
        var broken: String?
        do {
            try await initializer?.run()
        } catch {
            broken =
                "the initializer \(initializer?.readableTypeName ?? "") threw \(ErrorReport(error).typeName): \(error)"
        }
        // Each type name is resolved once: `_typeByName` walks the metadata sections.
        var functions: [String: any ProcessFunction.Type] = [:]
        while true {
            let message: PoolMessage
            do {
                message = try await tasks.receive()
            } catch ConnectionError.endOfStream {
                return  // the pool is done with this worker
            }
            guard case .task(let id, let typeName, let function, let inputs, let eachInput) = message else { continue }
            if let broken {
                try await refuse(id: id, count: inputs.count, eachInput: eachInput, reason: broken)
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
                try await refuse(id: id, count: inputs.count, eachInput: eachInput, reason: reason)
                continue
            }
            try await serve(type, function: function, inputs: inputs, task: id, eachInput: eachInput)
        }
    }

    /// Answers every input of a task that cannot run with `reason`.
    private func refuse(id: UInt64, count: Int, eachInput: Bool, reason: String) async throws {
        running.store(count)
        if eachInput {
            for offset in 0..<count {
                try await tasks.send(.result(id: id, offset: offset, outcome: .couldNotStart(reason: reason)))
            }
        } else {
            try await tasks.send(
                .results(id: id, outcomes: Array(repeating: .couldNotStart(reason: reason), count: count)))
        }
    }

    /// Decodes the function once for the task, then calls it with each input, recording
    /// which one runs, and answers each at once (`eachInput`) or all together.
    private func serve<Function: ProcessFunction>(
        _ type: Function.Type, function payload: [UInt8], inputs: [[UInt8]], task id: UInt64, eachInput: Bool
    ) async throws {
        let function: Function
        do {
            function = try BinaryDecoder().decode(Function.self, from: payload)
        } catch {
            let reason = "\(String(reflecting: Function.self)) could not be decoded: \(error)"
            try await refuse(id: id, count: inputs.count, eachInput: eachInput, reason: reason)
            return
        }
        var outcomes: [ChildOutcome] = []
        if !eachInput { outcomes.reserveCapacity(inputs.count) }
        for (offset, input) in inputs.enumerated() {
            running.store(offset)
            let outcome: ChildOutcome
            do {
                let argument = try BinaryDecoder().decode(Function.Input.self, from: input)
                outcome = .succeeded(output: try BinaryEncoder().encode(try await function(argument)))
            } catch {
                outcome = .threw(ErrorReport(error))
            }
            if eachInput {
                try await tasks.send(.result(id: id, offset: offset, outcome: outcome))
            } else {
                outcomes.append(outcome)
            }
        }
        // Past the last input: a worker that dies from here on was running none of them.
        running.store(inputs.count)
        if !eachInput { try await tasks.send(.results(id: id, outcomes: outcomes)) }
    }
}
