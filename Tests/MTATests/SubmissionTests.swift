import Testing

@testable import MTA

@Suite struct SubmissionTests {
    private func compose(_ input: String, _ arguments: [String], maxSize: Int = 1 << 20) throws -> Submission {
        try Submission.compose(
            input: Array(input.utf8), options: try SendArguments.parse(arguments), hostname: "mx.lab.example",
            login: "alice", queueID: "QID00000000001", date: "Sun, 29 Nov 2026 01:33:35 +0000", maxSize: maxSize)
    }

    private func text(_ submission: Submission) -> String { String(decoding: submission.message, as: UTF8.self) }

    @Test func recipientsFromToCcBccAndBccRemoved() throws {
        let input = """
            From: a@r.example
            To: Bob <bob@lab.example>,
             carol@lab.example
            Cc: team: dave@lab.example;
            Bcc: secret@lab.example
            Subject: hi
            Message-ID: <1@r.example>
            Date: Sun, 29 Nov 2026 01:00:00 +0000

            body
            """
        let submission = try compose(input, ["-t", "-f", "a@r.example"])
        #expect(
            submission.recipients == ["bob@lab.example", "carol@lab.example", "dave@lab.example", "secret@lab.example"])
        #expect(submission.sender == "a@r.example")
        let stored = text(submission)
        #expect(!stored.contains("Bcc"))
        #expect(!stored.contains("secret"))
        let expected =
            "Received: from local user alice\r\n\tby mx.lab.example (dualmta) with local id QID00000000001;\r\n"
            + "\tSun, 29 Nov 2026 01:33:35 +0000\r\nFrom: a@r.example\r\nTo: Bob <bob@lab.example>,\r\n"
            + " carol@lab.example\r\nCc: team: dave@lab.example;\r\nSubject: hi\r\nMessage-ID: <1@r.example>\r\n"
            + "Date: Sun, 29 Nov 2026 01:00:00 +0000\r\n\r\nbody\r\n"
        #expect(stored == expected)
    }

    @Test func commandLineRecipientsAddToHeaderOnesWithoutDuplicates() throws {
        let submission = try compose("To: b@lab.example\n\nx\n", ["-t", "B@lab.example", "c@lab.example"])
        #expect(submission.recipients == ["B@lab.example", "c@lab.example"])
    }

    @Test func addsDateMessageIDAndFromWhenMissing() throws {
        let stored = text(try compose("Subject: s\n\nx\n", ["bob@lab.example"]))
        #expect(stored.contains("\r\nFrom: <alice@mx.lab.example>\r\n"))
        #expect(stored.contains("\r\nDate: Sun, 29 Nov 2026 01:33:35 +0000\r\n"))
        #expect(stored.contains("\r\nMessage-ID: <QID00000000001@mx.lab.example>\r\n\r\nx\r\n"))
    }

    @Test func defaultAndNullSender() throws {
        #expect(try compose("x\n", ["b@lab.example"]).sender == "alice@mx.lab.example")
        #expect(try compose("x\n", ["-f", "<>", "b@lab.example"]).sender == "")
    }

    @Test func unqualifiedRecipientGetsTheHostname() throws {
        #expect(try compose("x\n", ["root"]).recipients == ["root@mx.lab.example"])
    }

    @Test func bodyWithoutHeaderGetsSeparator() throws {
        let stored = text(try compose("just text\n", ["b@lab.example"]))
        #expect(stored.hasSuffix(">\r\n\r\njust text\r\n"))
    }

    @Test func errors() {
        #expect(throws: SubmissionError.noRecipients) { try compose("x\n", []) }
        #expect(throws: SubmissionError.noRecipients) { try compose("To: undisclosed-recipients:;\n\nx\n", ["-t"]) }
        #expect(throws: SubmissionError.badAddress("a@@b")) { try compose("x\n", ["a@@b"]) }
        #expect(throws: SubmissionError.badSender("x y@z")) { try compose("x\n", ["-f", "x y@z", "b@lab.example"]) }
        #expect(throws: SubmissionError.bareCR(line: 1)) { try compose("a\rb\n", ["b@lab.example"]) }
        #expect(throws: SubmissionError.tooLarge(limit: 100)) {
            try compose(String(repeating: "x", count: 200) + "\n", ["b@lab.example"], maxSize: 100)
        }
    }

    @Test func exitStatuses() {
        #expect(SubmissionError.noRecipients.exitStatus == 64)
        #expect(SubmissionError.bareCR(line: 1).exitStatus == 65)
        #expect(SubmissionError.badAddress("x").exitStatus == 65)
        #expect(SubmissionError.spool(.insufficientStorage).exitStatus == 75)
        #expect(SubmissionError.config("x").exitStatus == 78)
    }

    @Test func eightBitAndUTF8() throws {
        let plain = try compose("x\n", ["b@lab.example"])
        #expect(!plain.eightBit && !plain.smtpUTF8)
        let utf8 = try compose("Subject: é\n\nx\n", ["bé@lab.example"])
        #expect(utf8.eightBit && utf8.smtpUTF8)
    }
}
