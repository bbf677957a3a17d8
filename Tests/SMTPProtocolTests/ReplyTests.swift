import SMTPProtocol
import Testing

@Suite struct ReplyTests {
    @Test func singleLineWithStatus() {
        let reply = Reply(250, EnhancedStatus(2, 1, 0), "Ok")
        #expect(reply.encoded == Array("250 2.1.0 Ok\r\n".utf8))
    }

    @Test func multilineRepeatsStatusOnEveryLine() {
        let reply = Reply(550, EnhancedStatus(5, 1, 1), "first", "second", "third")
        #expect(
            String(decoding: reply.encoded, as: UTF8.self)
                == "550-5.1.1 first\r\n550-5.1.1 second\r\n550 5.1.1 third\r\n")
    }

    @Test func withoutStatus() {
        #expect(Reply(220, nil, "mx ESMTP dualmta").encoded == Array("220 mx ESMTP dualmta\r\n".utf8))
        #expect(Reply(250, nil, lines: ["a", "b"]).encoded == Array("250-a\r\n250 b\r\n".utf8))
    }

    @Test func emptyTextStillOneLine() {
        #expect(Reply(250, nil).encoded == Array("250 \r\n".utf8))
    }

    @Test func failureClassification() {
        #expect(Reply(452, EnhancedStatus(4, 5, 3), "x").isFailure)
        #expect(!Reply(354, nil, "x").isFailure)
    }

    @Test(arguments: [
        ("5.1.1", true), ("2.0.0", true), ("4.5.3", true), ("5.1.10", true), ("3.1.1", false),
        ("5.1", false), ("5..1", false), ("a.b.c", false), ("5.1.1.1", false), ("5.1234.1", false),
    ])
    func enhancedStatusParsing(text: String, valid: Bool) {
        let status = EnhancedStatus(text)
        #expect((status != nil) == valid)
        if let status { #expect(status.description == text) }
    }
}
