import Delivery
import Testing

@Suite struct RetryScheduleTests {
    let schedule = RetrySchedule([.seconds(60), .seconds(300), .seconds(900)])

    @Test(arguments: [(1, 60), (2, 300), (3, 900), (4, 900), (50, 900), (0, 60)])
    func waitsFollowTheListAndTheLastRepeats(runs: Int, seconds: Int64) {
        #expect(schedule.nextAttempt(afterFailedRuns: runs, now: 1_000) == 1_000 + seconds)
    }

    @Test func anEmptyScheduleStillRetries() {
        #expect(RetrySchedule([]).delay(afterFailedRuns: 3) == .seconds(60))
    }

    @Test func subSecondWaitsRoundUp() {
        #expect(RetrySchedule([.milliseconds(500)]).nextAttempt(afterFailedRuns: 1, now: 10) == 11)
    }
}
