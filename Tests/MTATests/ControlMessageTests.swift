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
        let faults: [ControlMessage] = [
            .fault(.list), .fault(.clear), .fault(.delete("F3")), .fault(.add("inbound rcpt reply 451 4.7.1 later")),
        ]
        for message in faults { #expect(ControlMessage(message.text) == message) }
    }

    @Test(arguments: [
        "", "flush  ", "flush ../x", "wake", "wake HOLLUQD0VU81QY extra", "FLUSH", "hold HOLLUQD0VU81QY",
        "fault", "fault add", "fault delete", "fault delete F1 F2", "fault list all", "fault clear now",
    ])
    func refuses(text: String) {
        #expect(ControlMessage(text) == nil)
    }
}
