import Foundation
import Glibc
import SMTPProtocol
import Testing

@testable import Spool

/// The message journal: append and read back, a torn last line, the per-message bound, pruning by age and size.
@Suite struct MessageHistoryTests {
    static let id = QueueID("0M8ZK3Q1F2A7XQ")!
    static let other = QueueID("0M8ZK3Q1F2A7XR")!

    static func directory() -> String {
        let path = NSTemporaryDirectory() + "history-\(UUID().uuidString)"
        _ = mkdir(path, 0o700)
        return path
    }

    @Test func eventsRoundTripInOrder() {
        let history = MessageHistory(stateDirectory: Self.directory())
        #expect(history.events(Self.id) == nil && !history.exists(Self.id))
        let first = HistoryEvent(time: 1_800_000_000, event: "received", fields: [.init("from", "a@b.example")])
        let second = HistoryEvent(
            time: 1_800_000_007, event: "attempt",
            fields: [.init("addr", "2001:db8::1"), .init("reply", "550 5.1.1 \"no\" \\ such")])
        history.append(Self.id, [first])
        history.append(Self.id, [second])
        #expect(history.events(Self.id) == [first, second])
        #expect(history.exists(Self.id))
    }

    @Test func aTornLastLineIsIgnored() throws {
        let history = MessageHistory(stateDirectory: Self.directory())
        let event = HistoryEvent(time: 1_800_000_000, event: "received")
        history.append(Self.id, [event])
        let handle = try #require(FileHandle(forWritingAtPath: history.path(Self.id)))
        handle.seekToEndOfFile()
        handle.write(Data("{\"event\":\"attempt\",\"ti".utf8))  // a crash in the middle of a write
        handle.closeFile()
        #expect(history.events(Self.id) == [event])
    }

    @Test func aJournalIsBoundedButTheFinalEventsStillGetIn() {
        var history = MessageHistory(stateDirectory: Self.directory())
        history.maxBytes = 300
        for index in 0..<20 {
            history.append(Self.id, [HistoryEvent(time: 1_800_000_000 + Int64(index), event: "attempt")])
        }
        history.append(Self.id, [HistoryEvent(time: 1_800_000_100, event: "removed")])
        let events = history.events(Self.id) ?? []
        #expect(events.count < 21 && events.last?.event == "removed")
    }

    @Test func pruneByAgeKeepsQueuedMessagesThenBySize() throws {
        let history = MessageHistory(stateDirectory: Self.directory())
        history.append(Self.id, [HistoryEvent(time: 1, event: "received")])
        history.append(Self.other, [HistoryEvent(time: 1, event: "received")])
        let now = Int64(Date().timeIntervalSince1970)
        // Young: nothing goes.
        #expect(history.prune(now: now, retention: 3600, maxTotalBytes: 1 << 20, isQueued: { _ in false }) == 0)
        // Old, but one is still queued: only the other goes.
        let pruned = history.prune(
            now: now + 7200, retention: 3600, maxTotalBytes: 1 << 20, isQueued: { $0 == Self.id })
        #expect(pruned == 1)
        #expect(history.exists(Self.id) && !history.exists(Self.other))
        // Young but over the size bound: goes once no longer queued.
        #expect(history.prune(now: now, retention: 3600, maxTotalBytes: 0, isQueued: { _ in false }) == 1)
        #expect(!history.exists(Self.id))
    }

    @Test(arguments: [("2026-12-06T16:07:40Z", 1_796_573_260 as Int64), ("1970-01-01T00:00:00Z", 0)])
    func isoTimesParseBack(text: String, seconds: Int64) {
        #expect(HistoryEvent.unixSeconds(iso8601: text) == seconds)
        #expect(MailDate.iso8601(seconds) == text)
    }
}
