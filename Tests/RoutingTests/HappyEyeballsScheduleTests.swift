import NetAddress
import Routing
import Testing

@Suite struct HappyEyeballsScheduleTests {
    static func attempt(_ host: String, _ preference: UInt16, _ address: String, note: String? = nil) throws
        -> PlannedAttempt
    {
        PlannedAttempt(
            mxHost: host, preference: preference,
            endpoint: Endpoint(address: try #require(IPAddress(address)), port: 25),
            note: note)
    }

    /// The paper's Test 1 shape: mx10 has three AAAA and two A, mx20 one of each.
    static func paperPlan() throws -> [PlannedAttempt] {
        [
            try attempt("mx10.test", 10, "2001:db8::10"), try attempt("mx10.test", 10, "2001:db8::11"),
            try attempt("mx10.test", 10, "2001:db8::12"), try attempt("mx10.test", 10, "192.0.2.10"),
            try attempt("mx10.test", 10, "192.0.2.11"), try attempt("mx20.test", 20, "2001:db8::20"),
            try attempt("mx20.test", 20, "192.0.2.20"),
        ]
    }

    @Test("levels split at every preference change, keeping plan order")
    func levels() throws {
        let levels = HappyEyeballsSchedule.levels(try Self.paperPlan())
        #expect(levels.map { $0.map(\.preference) } == [[10, 10, 10, 10, 10], [20, 20]])
        #expect(HappyEyeballsSchedule.levels([]).isEmpty)
    }

    @Test("interleave alternates families from the first attempt's family, each family in plan order")
    func interleave() throws {
        let level = HappyEyeballsSchedule.levels(try Self.paperPlan())[0]
        #expect(
            HappyEyeballsSchedule.interleave(level).map(\.address.description) == [
                "2001:db8::10", "192.0.2.10", "2001:db8::11", "192.0.2.11", "2001:db8::12",
            ])
    }

    @Test("a cached IPv4 transport moved to the front starts first, then IPv6")
    func cachedFirst() throws {
        let level = [
            try Self.attempt("mx.test", 10, "192.0.2.50", note: "cached transport moved to front"),
            try Self.attempt("mx.test", 10, "2001:db8:50::25"), try Self.attempt("mx.test", 10, "2001:db8:50::26"),
        ]
        #expect(
            HappyEyeballsSchedule.interleave(level).map(\.address.description) == [
                "192.0.2.50", "2001:db8:50::25", "2001:db8:50::26",
            ])
    }

    @Test("single-family levels keep their order", arguments: [["192.0.2.1", "192.0.2.2"], ["2001:db8::1"]])
    func singleFamily(addresses: [String]) throws {
        let level = try addresses.map { try Self.attempt("mx.test", 0, $0) }
        #expect(HappyEyeballsSchedule.interleave(level) == level)
    }

    @Test("offsets grow by the attempt delay within a level and restart at every level; ranks count levels")
    func offsets() throws {
        let schedule = HappyEyeballsSchedule(attempts: try Self.paperPlan(), delay: .milliseconds(250))
        #expect(schedule.levels.map(\.rank) == [1, 2])
        #expect(schedule.levels.map(\.preference) == [10, 20])
        #expect(schedule.levels[0].slots.map(\.startsAfter) == (0..<5).map { .milliseconds(250 * $0) })
        #expect(schedule.levels[1].slots.map(\.startsAfter) == [.zero, .milliseconds(250)])
        #expect(schedule.levels.flatMap(\.slots).count == 7)
    }

    @Test("text shows the staggered schedule per level")
    func text() throws {
        let plan = [
            try Self.attempt("mx10.test", 10, "2001:db8::10"), try Self.attempt("mx10.test", 10, "192.0.2.10"),
            try Self.attempt("mx20.test", 20, "192.0.2.20"),
        ]
        let schedule = HappyEyeballsSchedule(attempts: plan, delay: .milliseconds(300))
        #expect(
            schedule.text == """
                happy-eyeballs schedule (connection_attempt_delay 300ms; a failed attempt starts the next one at \
                once; the first connection wins, the others are closed):
                  pref 10:
                    +0ms     mx10.test ipv6 [2001:db8::10]:25
                    +300ms   mx10.test ipv4 192.0.2.10:25
                  pref 20, only after every pref 10 attempt failed:
                    +0ms     mx20.test ipv4 192.0.2.20:25

                """)
    }
}
