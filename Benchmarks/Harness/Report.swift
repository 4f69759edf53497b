// What a run reports: the markdown table on stdout, the JSON file, the lines on stderr.

import Glibc

/// The markdown table: the medians of each column, and the medians of the per-round ratios
/// (the figures to judge by; see Rounds.swift).
func printTable(_ results: [WorkloadResult]) {
    print("| workload | unit | Swift | Python | floor | Swift/Python | Swift/floor | target |")
    print("|---|---|---|---|---|---|---|---|")
    for result in results {
        let cells = [
            result.workload.name, result.workload.unit, format(result.swift), format(result.python),
            format(result.floor), format(result.swiftOverPython, suffix: "x"),
            format(result.swiftOverFloor, suffix: "x"), result.workload.target,
        ]
        print("| " + cells.joined(separator: " | ") + " |")
    }
}

/// Two decimals below 100, whole numbers above: the noise is larger than either drops.
func format(_ value: Double?, suffix: String = "") -> String {
    guard let value, value.isFinite else { return "—" }
    if value >= 100 { return String(Int(value.rounded())) + suffix }
    let hundredths = Int((value * 100).rounded())
    let fraction = hundredths % 100
    return "\(hundredths / 100).\(fraction < 10 ? "0" : "")\(fraction)" + suffix
}

/// The JSON file: one object per workload with the medians, the ratio medians and every round.
/// Written next to `path` and renamed over it, so a reader never sees half a file.
func writeJSON(_ results: [WorkloadResult], size: Size, floor: String?, to path: String) -> Bool {
    func number(_ value: Double?) -> String {
        guard let value, value.isFinite else { return "null" }
        return "\(value)"
    }
    func string(_ value: String?) -> String {
        guard let value else { return "null" }
        let escaped = value.replacing("\\", with: "\\\\").replacing("\"", with: "\\\"")
        return "\"\(escaped)\""
    }
    let objects = results.map { result in
        let rounds = result.rounds.map { round in
            "{\"swift\": \(number(round.swift)), \"floor\": \(number(round.floor)), "
                + "\"python\": \(number(round.python)), \"swiftOverFloor\": \(number(round.swiftOverFloor)), "
                + "\"swiftOverPython\": \(number(round.swiftOverPython))}"
        }
        return "  {\"name\": \(string(result.workload.name)), \"unit\": \(string(result.workload.unit)), "
            + "\"size\": \(string(size.rawValue)), \"swift\": \(number(result.swift)), "
            + "\"python\": \(number(result.python)), \"floor\": \(number(result.floor)), "
            + "\"swiftOverPython\": \(number(result.swiftOverPython)), "
            + "\"swiftOverFloor\": \(number(result.swiftOverFloor)), "
            + "\"higherIsBetter\": \(result.workload.higherIsBetter), \"target\": \(string(result.workload.target)), "
            + "\"floorBinary\": \(string(result.workload.floor == nil ? nil : floor)),\n"
            + "   \"rounds\": [\n    " + rounds.joined(separator: ",\n    ") + "]}"
    }
    let json = "[\n" + objects.joined(separator: ",\n") + "\n]\n"

    let partial = path + ".tmp"
    guard let file = fopen(partial, "w") else { return false }
    let written = fputs(json, file) >= 0
    guard fclose(file) == 0, written else { return false }
    return rename(partial, path) == 0
}

/// One line on stderr: progress and problems, kept apart from the table on stdout.
func printError(_ line: String) {
    var text = line + "\n"
    text.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}
