import NetAddress
import SMTPProtocol
import Testing

@Suite struct ReceivedHeaderTests {
    let date = "Tue, 14 May 2024 10:00:00 +0000"

    @Test func singleRecipientIPv6Peer() {  // H02
        let header = ReceivedHeader.make(
            heloName: "mx1.site-a.example", clientAddress: IPAddress("2001:db8:a::25")!, hostname: "mx.site-b.example",
            protocolName: "ESMTPS", queueID: "7Q3K9F2A",
            recipients: [.mailbox(Mailbox(parsing: "bob@site-b.example", allowUTF8: false)!)], date: date)
        #expect(
            header == """
                Received: from mx1.site-a.example ([IPv6:2001:db8:a::25])\r
                \tby mx.site-b.example (dualmta) with ESMTPS id 7Q3K9F2A\r
                \tfor <bob@site-b.example>; Tue, 14 May 2024 10:00:00 +0000\r

                """)
    }

    @Test func mappedPeerIsWrittenAsIPv4() {
        let header = ReceivedHeader.make(
            heloName: "[192.0.2.25]", clientAddress: IPAddress("::ffff:192.0.2.25")!, hostname: "mx.lab.example",
            protocolName: "ESMTP", queueID: "Q1", recipients: [.postmaster], date: date)
        #expect(header.hasPrefix("Received: from [192.0.2.25] ([192.0.2.25])\r\n"))
        #expect(header.contains("\tfor <Postmaster>; "))
    }

    @Test func severalRecipientsOmitFor() {
        let recipients: [ForwardPath] = [
            .mailbox(Mailbox(parsing: "a@lab.example", allowUTF8: false)!),
            .mailbox(Mailbox(parsing: "\"john smith\"@lab.example", allowUTF8: false)!),
        ]
        let header = ReceivedHeader.make(
            heloName: "t.example", clientAddress: IPAddress("192.0.2.1")!, hostname: "mx.lab.example",
            protocolName: "SMTP", queueID: "Q2", recipients: recipients, date: date)
        #expect(
            header
                == "Received: from t.example ([192.0.2.1])\r\n\tby mx.lab.example (dualmta) with SMTP id Q2;\r\n"
                + "\t\(date)\r\n"
        )
        #expect(!header.contains("for "))
    }

    @Test func quotedLocalPartSurvives() {  // A05
        let header = ReceivedHeader.make(
            heloName: "t.example", clientAddress: IPAddress("192.0.2.1")!, hostname: "mx.lab.example",
            protocolName: "ESMTP", queueID: "Q3",
            recipients: [.mailbox(Mailbox(parsing: "\"john smith\"@lab.example", allowUTF8: false)!)], date: date)
        #expect(header.contains("for <\"john smith\"@lab.example>;"))
    }
}
