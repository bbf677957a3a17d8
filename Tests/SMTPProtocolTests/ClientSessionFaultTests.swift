import Testing

@testable import SMTPProtocol

/// The client session takes an injected reply as the peer's, and an injected drop as a lost connection at that
/// stage: the results are the ones a real peer would have caused.
@Suite struct ClientSessionFaultTests {
    private static func transaction(
        _ stage: ClientFaultStage, _ fault: ClientFault, recipient: String? = nil,
        recipients: [String] = ["bob@mx.example"]
    ) -> Transaction1 {
        var transaction = Transaction1()
        transaction.recipients = recipients
        transaction.faultHook = { asked, forRecipient in
            guard asked == stage, recipient == nil || forRecipient == recipient else { return nil }
            return fault
        }
        return transaction
    }

    @Test(arguments: Chunking.all)
    func injectedRcptRefusalFailsThatRecipientOnly(_ feeding: Chunking) {
        let refusal = Reply(550, EnhancedStatus(5, 1, 1), "no such user")
        let run = drive(
            Self.transaction(
                .rcpt, .reply(refusal), recipient: "gone@mx.example", recipients: ["gone@mx.example", "bob@mx.example"]),
            PeerScript(), feeding)
        #expect(run.outcomes == [.permanent(refusal), .delivered(Reply(250, EnhancedStatus(2, 0, 0), "queued as X"))])
        #expect(run.result?.kind == .completed)
    }

    @Test func injectedBannerRefusalFailsTheHost() {
        let refusal = Reply(421, EnhancedStatus(4, 7, 0), "busy")
        let run = drive(Self.transaction(.banner, .reply(refusal)), PeerScript(), .whole)
        #expect(run.result?.kind == .hostFailed(.greeting(refusal)))
        #expect(!run.lines.contains { $0.hasPrefix("MAIL") })
    }

    @Test func injectedTempfailAtDataEndDefers() {
        let tempfail = Reply(451, EnhancedStatus(4, 3, 0), "try again")
        let run = drive(Self.transaction(.dataEnd, .reply(tempfail)), PeerScript(), .whole)
        #expect(run.outcomes == [.temporary(tempfail)])
        #expect(run.result?.possibleDuplicate == false)
    }

    @Test func dropAfterTheDotIsAPossibleDuplicate() {
        let run = drive(Self.transaction(.dataEnd, .drop), PeerScript(), .whole)
        #expect(run.result?.kind == .hostFailed(.connectionLost(.dataDone)))
        #expect(run.result?.possibleDuplicate == true)
        #expect(run.closed)
    }

    @Test func dropAtMailLosesTheConnectionBeforeAnyRecipient() {
        let run = drive(Self.transaction(.mail, .drop), PeerScript(), .whole)
        #expect(run.result?.kind == .hostFailed(.connectionLost(.mail)))
        #expect(!run.bodySent)
    }
}
