import Testing

@testable import SMTPProtocol

@Suite struct HeaderSectionTests {
    @Test func fieldsFoldingAndBody() {
        let text = Array("To: a@x.example,\r\n\tb@x.example\r\nSubject: s\r\n\r\nbody\r\n".utf8)
        let header = HeaderSection(parsing: text)
        #expect(header.fields.map(\.name) == ["To", "Subject"])
        #expect(header.fields[0].unfoldedValue == " a@x.example,\tb@x.example")
        #expect(header.hasSeparator)
        #expect(Array(text[header.bodyStart...]) == Array("body\r\n".utf8))
    }

    @Test func nonHeaderLineStartsTheBody() {
        let text = Array("Subject: s\r\nthis is not a header\r\n".utf8)
        let header = HeaderSection(parsing: text)
        #expect(header.fields.count == 1)
        #expect(!header.hasSeparator)
        #expect(Array(text[header.bodyStart...]) == Array("this is not a header\r\n".utf8))
    }

    @Test func headersOnly() {
        let header = HeaderSection(parsing: Array("Subject: s\r\n".utf8))
        #expect(header.fields.count == 1 && !header.hasSeparator && header.bodyStart == 12)
        #expect(header.contains("subject") && !header.contains("Date"))
    }
}
