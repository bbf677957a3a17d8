import NetAddress
import SMTPProtocol
import Testing

/// The session's side of fault rules: given a decision for a stage, it answers and keeps its state as its own
/// policy would. The rules themselves are the Faults module's; here a fixed decision per stage stands in.
@Suite struct ServerSessionFaultTests {
    private static func harness(
        _ stage: SessionFaultStage, _ fault: SessionFault, when recipient: String? = nil, greet: Bool = true
    ) -> Harness {
        let configuration = Lab.configuration { configuration in
            configuration.faults = { point in
                guard point.stage == stage else { return nil }
                if let recipient, point.recipients.last != recipient { return nil }
                return fault
            }
        }
        return Harness(configuration: configuration, greet: greet)
    }

    private static let tempfail = SessionFault.reply(Reply(451, EnhancedStatus(4, 7, 1), "try later"))

    @Test func connectReplyClosesInsteadOfGreeting() {
        let harness = Self.harness(.connect, .reply(Reply(421, EnhancedStatus(4, 7, 0), "slow down")))
        #expect(harness.codes == ["421 4.7.0"])
        #expect(harness.closed)
    }

    @Test func refusedRecipientIsNotInTheTransaction() {
        var harness = Self.harness(.rcpt, Self.tempfail, when: "a@lab.example")
        harness.writes(["EHLO c.example\r\n", "MAIL FROM:<s@x.example>\r\n", "RCPT TO:<a@lab.example>\r\n", "DATA\r\n"])
        #expect(harness.codes == ["220", "250", "250 2.1.0", "451 4.7.1", "503 5.5.1"])
        harness.writes(["RCPT TO:<b@lab.example>\r\n", "DATA\r\n", "hi\r\n.\r\n", "QUIT\r\n"])
        harness.settleCommits()
        #expect(harness.committed.map { $0.recipients.map(\.path.description) } == [["b@lab.example"]])
    }

    @Test func fourTwentyOneAtMailCloses() {
        var harness = Self.harness(.mail, .reply(Reply(421, EnhancedStatus(4, 3, 2), "going down")))
        harness.writes(["EHLO c.example\r\n", "MAIL FROM:<s@x.example>\r\n"])
        #expect(harness.codes == ["220", "250", "421 4.3.2"])
        #expect(harness.closed)
    }

    @Test func refusedEhloLeavesNoHeloName() {
        var harness = Self.harness(.ehlo, .reply(Reply(554, EnhancedStatus(5, 7, 1), "go away")))
        harness.writes(["EHLO c.example\r\n", "MAIL FROM:<s@x.example>\r\n"])
        #expect(harness.codes == ["220", "554 5.7.1", "503 5.5.1"])
    }

    @Test func dropClosesWithoutReply() {
        var harness = Self.harness(.data, .drop)
        harness.writes(["EHLO c.example\r\n", "MAIL FROM:<s@x.example>\r\n", "RCPT TO:<a@lab.example>\r\n", "DATA\r\n"])
        #expect(harness.codes == ["220", "250", "250 2.1.0", "250 2.1.5"])
        #expect(harness.closed)
        #expect(!harness.actions.contains(.reset))
    }

    @Test func resetAsksForRSTThenCloses() {
        var harness = Self.harness(.ehlo, .reset)
        harness.write("EHLO c.example\r\n")
        #expect(Array(harness.actions.suffix(2)) == [.reset, .close])
    }

    @Test func delayPausesBeforeTheReplyThenGoesOn() {
        var harness = Self.harness(.rcpt, .delay(milliseconds: 1500))
        harness.writes(["EHLO c.example\r\n", "MAIL FROM:<s@x.example>\r\n", "RCPT TO:<a@lab.example>\r\n"])
        let pause = harness.actions.firstIndex(of: .pause(milliseconds: 1500))
        #expect(pause != nil)
        #expect(harness.codes == ["220", "250", "250 2.1.0", "250 2.1.5"])
        // The RCPT's 250 comes after the pause.
        let sendsAfter = harness.actions[(pause ?? 0)...].contains { if case .send = $0 { true } else { false } }
        #expect(sendsAfter)
    }

    @Test func discardAnswers250AndKeepsNothing() {
        var harness = Self.harness(.dataEnd, .discard)
        harness.writes([
            "EHLO c.example\r\n", "MAIL FROM:<s@x.example>\r\n", "RCPT TO:<a@lab.example>\r\n", "DATA\r\n",
            "hi\r\n.\r\n",
        ])
        harness.settleCommits()
        #expect(harness.codes == ["220", "250", "250 2.1.0", "250 2.1.5", "354", "250 2.0.0"])
        #expect(harness.commits == 0)
        #expect(harness.aborts == 1)
        // The session goes on: a second transaction is accepted normally.
        harness.writes(["MAIL FROM:<s@x.example>\r\n"])
        #expect(harness.codes.last == "250 2.1.0")
    }

    @Test func replyAtDataEndAbortsTheMessage() {
        var harness = Self.harness(.dataEnd, .reply(Reply(554, EnhancedStatus(5, 6, 0), "content refused")))
        harness.writes([
            "EHLO c.example\r\n", "MAIL FROM:<s@x.example>\r\n", "RCPT TO:<a@lab.example>\r\n", "DATA\r\n",
            "hi\r\n.\r\n",
        ])
        harness.settleCommits()
        #expect(harness.codes.last == "554 5.6.0")
        #expect(harness.commits == 0)
        #expect(harness.aborts == 1)
    }

    @Test func theHookSeesSenderAndRecipients() {
        let seen = SeenPoints()
        let configuration = Lab.configuration { configuration in
            configuration.faults = { point in
                seen.append(point)
                return nil
            }
        }
        var harness = Harness(configuration: configuration)
        harness.writes([
            "EHLO c.example\r\n", "MAIL FROM:<>\r\n", "RCPT TO:<a@lab.example>\r\n", "DATA\r\n", "x\r\n.\r\n",
        ])
        harness.settleCommits()
        #expect(
            seen.points == [
                SessionFaultPoint(stage: .connect), SessionFaultPoint(stage: .ehlo),
                SessionFaultPoint(stage: .mail, sender: ""),
                SessionFaultPoint(stage: .rcpt, sender: "", recipients: ["a@lab.example"]),
                SessionFaultPoint(stage: .data, sender: "", recipients: ["a@lab.example"]),
                SessionFaultPoint(stage: .dataEnd, sender: "", recipients: ["a@lab.example"]),
            ])
    }
}

/// Collects what the hook was asked (the hook is @Sendable; the test is single-threaded).
private final class SeenPoints: @unchecked Sendable {
    var points: [SessionFaultPoint] = []
    func append(_ point: SessionFaultPoint) { points.append(point) }
}
