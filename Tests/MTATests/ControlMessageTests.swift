import Spool
import Testing

@testable import MTA

@Suite struct ControlMessageTests {
    @Test func roundTrip() throws {
        let id = try #require(QueueID("HOLLUQD0VU81QY"))
        for message in [ControlMessage.flushAll, .flush(id), .wake(id)] {
            #expect(ControlMessage(message.text) == message)
        }
        #expect(ControlMessage("flush\n") == .flushAll)
    }

    @Test(arguments: ["", "flush  ", "flush ../x", "wake", "wake HOLLUQD0VU81QY extra", "FLUSH", "hold HOLLUQD0VU81QY"])
    func refuses(text: String) {
        #expect(ControlMessage(text) == nil)
    }
}
