import Foundation
import Testing

@testable import Spool

@Suite struct QueueIDTests {
    @Test(arguments: ["0M8ZK3Q1F2A7XQ", "00000000000000", "ZZZZZZZZZZZZZZ"])
    func acceptsIDs(_ text: String) {
        #expect(QueueID(text)?.rawValue == text)
    }

    @Test(arguments: [
        "../x", "", "0M8ZK3Q1F2A7X", "0M8ZK3Q1F2A7XQQ", "0m8zk3q1f2a7xq", "0M8ZK3Q1F2A7X/", "0M8ZK3Q1F2A7X.",
        "../../../etc/pw", "0M8ZK3Q1F2A7XÉ", "0M8ZK3Q1F2A7X\n", " M8ZK3Q1F2A7XQ",
    ])
    func rejectsOtherText(_ text: String) {
        #expect(QueueID(text) == nil)
    }

    @Test func timePartSortsAndRoundTrips() {
        let times: [UInt64] = [0, 1, 35, 36, 1_795_891_140_000_000, 1_795_891_140_000_001, QueueID.maxTime]
        let ids = times.map { QueueID(microseconds: $0, suffix: QueueID.suffixSpace - 1) }
        #expect(ids.map(\.microseconds) == times)
        for (earlier, later) in zip(ids, ids.dropFirst()) { #expect(earlier < later) }
        // A larger suffix never outranks a later time.
        #expect(QueueID(microseconds: 5, suffix: QueueID.suffixSpace - 1) < QueueID(microseconds: 6, suffix: 0))
        #expect(QueueID(microseconds: 1_795_891_140_000_000, suffix: 0).rawValue.count == 14)
    }

    @Test func generatorIncreasesWhenTheClockStandsStillOrStepsBack() {
        let clock = Clock()
        let generator = QueueIDGenerator(clock: { clock.now })
        var previous = generator.next()
        for step in 0..<1000 {
            if step == 500 { clock.now = 1 }  // clock stepped back
            let id = generator.next()
            #expect(previous < id)
            previous = id
        }
    }

    @Test func codableRoundTripAndRejection() throws {
        let id = try #require(QueueID("0M8ZK3Q1F2A7XQ"))
        let data = try JSONEncoder().encode([id])
        #expect(String(decoding: data, as: UTF8.self) == "[\"0M8ZK3Q1F2A7XQ\"]")
        #expect(try JSONDecoder().decode([QueueID].self, from: data) == [id])
        #expect(throws: DecodingError.self) {
            try JSONDecoder().decode([QueueID].self, from: Data("[\"../x\"]".utf8))
        }
    }
}

/// A settable clock for the generator test. Confinement: only the test's own thread touches `now`.
private final class Clock: @unchecked Sendable {
    var now: UInt64 = 1_795_891_140_000_000
}
