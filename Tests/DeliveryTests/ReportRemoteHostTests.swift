import Foundation
import Testing

@testable import Delivery

/// The human-readable part names the remote host once when the host is an address literal (a static route or
/// `[addr]` domain), and as "name [address]" for an MX name.
@Suite struct ReportRemoteHostTests {
    static func text(remoteMTA: String, remoteAddress: String) -> String {
        let recipient = RecipientReport(
            finalRecipient: "bob@site-c.example", action: .failed, status: "5.1.1", remoteMTA: remoteMTA,
            remoteAddress: remoteAddress, diagnostic: .smtp("550 5.1.1 no such user"), explanation: "no such user",
            lastAttempt: Date(timeIntervalSince1970: 1_715_680_800))
        let original = OriginalMessage(
            queueID: "Q1A2B3C4D5", sender: "alice@site-a.example", arrival: Date(timeIntervalSince1970: 1_715_680_682),
            receivedFromMTA: "client.site-a.example", envelopeID: nil,
            bytes: Array("Subject: x\r\n\r\nbody\r\n".utf8))
        let bytes = DeliveryReport.compose(
            reportingMTA: "mx.site-b.example", original: original, recipients: [recipient], returnContent: .headers,
            now: Date(timeIntervalSince1970: 1_715_680_801), messageIDSeed: "R1")
        return String(decoding: bytes, as: UTF8.self)
    }

    @Test(
        arguments: [
            ("[127.0.0.1]", "[127.0.0.1]", "Remote host: [127.0.0.1]\r\n"),
            ("mx.site-c.example", "[192.0.2.25]", "Remote host: mx.site-c.example [192.0.2.25]\r\n"),
        ])
    func remoteHostLine(name: String, address: String, expected: String) {
        #expect(Self.text(remoteMTA: name, remoteAddress: address).contains(expected))
    }
}
