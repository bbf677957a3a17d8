import SMTPProtocol
import Spool
import Testing

@testable import MTA

@Suite struct QueueEditTests {
    private func envelope(held: Bool = false, nextAttempt: Int64 = 5_000) -> Envelope {
        Envelope(
            id: QueueID("HOLLUQD0VU81QY")!, sender: "a@r.example", arrival: 1_000, client: "local",
            heloName: "localhost", protocolName: "LOCAL", nextAttempt: nextAttempt, held: held,
            recipients: [
                RecipientRecord(address: "a@x.example", state: .delivered),
                RecipientRecord(address: "b@x.example", state: .pending, lastReply: "451 later"),
            ])
    }

    @Test func bounceFailsEveryPendingRecipient() {
        var edited = envelope(held: true)
        #expect(QueueEdit.bounce(&edited, now: 2_000) == 1)
        #expect(edited.recipients[0].state == .delivered)
        #expect(edited.recipients[1].state == .failed)
        #expect(edited.recipients[1].lastStatus == EnhancedStatus(5, 0, 0))
        #expect(edited.recipients[1].lastReply == "bounced by the administrator")
        #expect(edited.recipients[1].updated == 2_000)
        #expect(!edited.held && edited.nextAttempt == 2_000 && edited.isFinished)
        #expect(QueueEdit.bounce(&edited, now: 3_000) == 0)
    }

    @Test func flushMakesDueNowUnlessHeldOrDue() {
        var due = envelope()
        #expect(QueueEdit.flush(&due, now: 2_000))
        #expect(due.nextAttempt == 2_000)
        #expect(!QueueEdit.flush(&due, now: 2_000))
        var held = envelope(held: true)
        #expect(!QueueEdit.flush(&held, now: 2_000))
        #expect(held.nextAttempt == 5_000)
    }
}
