/// When to try a deferred message again: `retry_schedule` gives the waits after the 1st, 2nd, ... failed run;
/// the last value repeats. Pure: the clock is an argument.
public struct RetrySchedule: Sendable, Equatable {
    public var intervals: [Duration]

    public init(_ intervals: [Duration]) {
        self.intervals = intervals.isEmpty ? [.seconds(60)] : intervals
    }

    /// The wait after `failedRuns` unsuccessful delivery runs (1 = the first failure).
    public func delay(afterFailedRuns failedRuns: Int) -> Duration {
        intervals[min(max(failedRuns, 1), intervals.count) - 1]
    }

    /// The next attempt time in unix seconds.
    public func nextAttempt(afterFailedRuns failedRuns: Int, now: Int64) -> Int64 {
        now + delay(afterFailedRuns: failedRuns).components.seconds
            + (delay(afterFailedRuns: failedRuns).components.attoseconds > 0 ? 1 : 0)
    }
}
