/// How far a ``ProcessPool`` call has got: items done, failed, the rate and the time left
/// (what Python users get from `tqdm` around `imap`).
///
/// ```swift
/// let squares = try await pool.map(Square(), inputs) { progress in
///     print(progress)   // 120/400 items, 41.2 items/s, about 6.8 s left
/// }
/// ```
public struct PoolProgress: Sendable, Hashable, CustomStringConvertible {
    /// Items finished, successfully or not.
    public var completed: Int
    /// Of the ``completed`` items, those that failed.
    public var failed: Int
    /// Items in the call; `nil` for a stream whose inputs are not a `Collection`.
    public var total: Int?
    /// Time since the call began.
    public var elapsed: Duration
    /// Whether this is the call's last update: it ended (finished, failed or was cancelled).
    public var isFinished: Bool

    /// A progress report.
    public init(completed: Int, failed: Int, total: Int?, elapsed: Duration, isFinished: Bool) {
        self.completed = completed
        self.failed = failed
        self.total = total
        self.elapsed = elapsed
        self.isFinished = isFinished
    }

    /// Items finished per second since the call began (0 before the first).
    public var rate: Double {
        let seconds = elapsed.secondsValue
        return seconds > 0 ? Double(completed) / seconds : 0
    }

    /// The time left at the ``rate`` so far; `nil` when the total is unknown or no item is done.
    public var estimatedTimeRemaining: Duration? {
        guard let total, completed > 0, rate > 0 else { return nil }
        return .seconds(Double(max(0, total - completed)) / rate)
    }

    /// ``completed`` over ``total``, from 0 to 1; `nil` when the total is unknown.
    public var fractionCompleted: Double? {
        guard let total else { return nil }
        return total == 0 ? 1 : Double(completed) / Double(total)
    }

    /// A line for a log: `120/400 items (3 failed), 41.2 items/s, about 6.8 s left`.
    public var description: String {
        var text = "\(completed)/\(total.map(String.init) ?? "?") items"
        if failed > 0 { text += " (\(failed) failed)" }
        text += ", \(Self.oneDecimal(rate)) items/s"
        if isFinished {
            text += ", done in \(Self.oneDecimal(elapsed.secondsValue)) s"
        } else if let left = estimatedTimeRemaining {
            text += ", about \(Self.oneDecimal(left.secondsValue)) s left"
        }
        return text
    }

    /// `x` with one decimal, without Foundation's formatters.
    static func oneDecimal(_ x: Double) -> String {
        guard x.isFinite else { return "?" }
        let tenths = Int((x * 10).rounded())
        return "\(tenths / 10).\(abs(tenths % 10))"
    }
}

extension Duration {
    /// The duration in seconds, as a `Double`.
    var secondsValue: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}
