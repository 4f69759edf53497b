/// The work of a pool worker, in its own process: run the initializer, then answer tasks
/// for any ``ProcessFunction`` until the pool closes the channel.
struct ServePool: ProcessTarget {
    let tasks: Connection<PoolMessage>
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
            guard case .task(let id, let typeName, let function, let inputs) = message else { continue }
            if let broken {
                for offset in inputs.indices {
                    try await tasks.send(.result(id: id, offset: offset, outcome: .couldNotStart(reason: broken)))
                }
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
                for offset in inputs.indices {
                    try await tasks.send(.result(id: id, offset: offset, outcome: .couldNotStart(reason: reason)))
                }
                continue
            }
            try await serve(type, function: function, inputs: inputs, task: id)
        }
    }

    /// Decodes the function once for the task, then calls it with each input and answers
    /// each at once.
    private func serve<Function: ProcessFunction>(
        _ type: Function.Type, function payload: [UInt8], inputs: [[UInt8]], task id: UInt64
    ) async throws {
        let function: Function
        do {
            function = try BinaryDecoder().decode(Function.self, from: payload)
        } catch {
            let reason = "\(String(reflecting: Function.self)) could not be decoded: \(error)"
            for offset in inputs.indices {
                try await tasks.send(.result(id: id, offset: offset, outcome: .couldNotStart(reason: reason)))
            }
            return
        }
        for (offset, input) in inputs.enumerated() {
            let outcome: ChildOutcome
            do {
                let argument = try BinaryDecoder().decode(Function.Input.self, from: input)
                outcome = .succeeded(output: try BinaryEncoder().encode(try await function(argument)))
            } catch {
                outcome = .threw(ErrorReport(error))
            }
            try await tasks.send(.result(id: id, offset: offset, outcome: outcome))
        }
    }
}
