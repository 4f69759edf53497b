// The other two sides of a workload: the Python script and the floor binary. Each prints one
// JSON object line on stdout for one invocation, `{"name": ..., "value": ..., ...}`.

/// One round of a counterpart: runs it and reads the `value` from the line it prints; nil,
/// after one line on stderr, if it failed.
func counterpart(_ arguments: [String]) -> Double? {
    let command = arguments.joined(separator: " ")
    guard let result = runProgram(arguments) else {
        printError("could not start: \(command)")
        return nil
    }
    guard result.succeeded else {
        printError("counterpart failed (\(result.statusDescription)): \(command)")
        return nil
    }
    let output = result.standardOutput
    guard let label = output.firstRange(of: "\"value\":"),
        let value = Double(output[label.upperBound...].drop { $0 == " " }.prefix { "0123456789.eE+-".contains($0) })
    else {
        printError("counterpart printed no value: \(command)")
        return nil
    }
    return value
}
