// Rounds and the medians reported from them.
//
// Where the processes land (which CPU, next to what) moves a figure by ±20% or more, from one
// run to the next and within a run: bytes-throughput measured 0.66x and 0.85x of the floor in
// two runs of one day. So each round measures Swift, then the floor, then Python, back to back,
// and takes that round's ratios; the figure to judge by is the median of the per-round ratios,
// which one odd round cannot move, rather than a ratio of figures taken minutes apart.

/// One round of one workload.
struct Round {
    var swift: Double
    var floor: Double?
    var python: Double?

    var swiftOverFloor: Double? { ratio(swift, floor) }
    var swiftOverPython: Double? { ratio(swift, python) }
}

/// A workload's rounds, and the medians the table and the JSON report.
struct WorkloadResult {
    var workload: Workload
    var rounds: [Round] = []

    var swift: Double? { median(rounds.map(\.swift)) }
    var floor: Double? { median(rounds.compactMap(\.floor)) }
    var python: Double? { median(rounds.compactMap(\.python)) }
    var swiftOverFloor: Double? { median(rounds.compactMap(\.swiftOverFloor)) }
    var swiftOverPython: Double? { median(rounds.compactMap(\.swiftOverPython)) }
}

/// The median, or nil when there is nothing to take it of (a counterpart that never answered).
func median(_ values: [Double]) -> Double? {
    guard !values.isEmpty else { return nil }
    let sorted = values.sorted()
    let middle = sorted.count / 2
    return sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
}

func ratio(_ swift: Double, _ other: Double?) -> Double? {
    guard let other, other > 0 else { return nil }
    return swift / other
}
