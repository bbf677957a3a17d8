import NetAddress
import Testing

@testable import SMTPProtocol

/// `sender_return_check`: the session asks the driver at MAIL FROM and holds all later input until it answers.
@Suite struct SenderCheckTests {
    static func harness() -> Harness {
        Harness(configuration: Lab.configuration { $0.checkSenderReturnPath = true }, client: Lab.ownV4, mayRelay: true)
    }

    /// Answers the pending check, like the driver does after its DNS lookup.
    static func answer(_ harness: inout Harness, _ result: SenderCheckResult) -> String? {
        guard harness.session.awaitingSenderCheck,
            case .checkSender(let domain)? = harness.actions.last(where: {
                if case .checkSender = $0 { true } else { false }
            })
        else { return nil }
        harness.actions += harness.session.senderChecked(result)
        return domain
    }

    @Test(arguments: Chunking.all)
    func pipelinedCommandsWaitForTheAnswer(chunking: Chunking) {
        var harness = Self.harness()
        harness.write("EHLO client.example\r\n", chunking)
        harness.write("MAIL FROM:<alice@v6only.test>\r\nRCPT TO:<bob@lab.example>\r\nDATA\r\n", chunking)
        // Nothing answered beyond EHLO: MAIL, RCPT and DATA wait for the check.
        #expect(harness.codes == ["220", "250"])
        #expect(Self.answer(&harness, .accept) == "v6only.test")
        #expect(harness.codes == ["220", "250", "250 2.1.0", "250 2.1.5", "354"])
    }

    @Test func rejectionEndsTheTransactionAndLaterCommandsAreAnsweredInOrder() {
        var harness = Self.harness()
        harness.write("EHLO client.example\r\n")
        harness.write("MAIL FROM:<alice@v6only.test>\r\nRCPT TO:<bob@lab.example>\r\n")
        let refusal = Reply(550, EnhancedStatus(5, 1, 8), "Sender address rejected: no route back")
        #expect(Self.answer(&harness, .reject(refusal)) == "v6only.test")
        #expect(harness.codes == ["220", "250", "550 5.1.8", "503 5.5.1"])
        #expect(harness.logs.contains { $0.contains("sender rejected") })
    }

    @Test func aWarningTravelsWithTheTransaction() {
        var harness = Self.harness()
        harness.writes([
            "EHLO client.example\r\n", "MAIL FROM:<alice@v6only.test>\r\n",
        ])
        _ = Self.answer(&harness, .acceptWithWarning("bounces cannot reach v6only.test"))
        harness.writes(["RCPT TO:<bob@lab.example>\r\n", "DATA\r\n", "Subject: x\r\n\r\nbody\r\n.\r\n"])
        #expect(harness.committed.first?.returnPathWarning == "bounces cannot reach v6only.test")
    }

    @Test func theNullSenderAndLiteralsAreNeverChecked() {
        var harness = Self.harness()
        harness.writes(["EHLO client.example\r\n", "MAIL FROM:<>\r\n"])
        #expect(!harness.session.awaitingSenderCheck)
        #expect(harness.codes.last == "250 2.1.0")
        harness.writes(["RSET\r\n", "MAIL FROM:<a@[192.0.2.9]>\r\n"])
        #expect(!harness.session.awaitingSenderCheck)
    }

    @Test func offByDefault() {
        var harness = Harness(client: Lab.ownV4, mayRelay: true)
        harness.writes(["EHLO client.example\r\n", "MAIL FROM:<alice@v6only.test>\r\n"])
        #expect(harness.codes.last == "250 2.1.0")
    }
}
