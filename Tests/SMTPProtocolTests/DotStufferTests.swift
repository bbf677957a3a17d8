import SMTPProtocol
import Testing

@Suite struct DotStufferTests {
    @Test(arguments: [
        ("", ".\r\n"),
        ("a\r\n", "a\r\n.\r\n"),
        (".\r\n", "..\r\n.\r\n"),
        (".hidden\r\n", "..hidden\r\n.\r\n"),
        ("a\r\n.b\r\n..c\r\n", "a\r\n..b\r\n...c\r\n.\r\n"),
        ("a.b\r\n", "a.b\r\n.\r\n"),
        ("no newline", "no newline\r\n.\r\n"),
        ("x\r\n.", "x\r\n..\r\n.\r\n"),
    ])
    func stuffing(input: String, expected: String) {
        #expect(DotStuffer.stuff(Array(input.utf8)) == Array(expected.utf8))
    }

    @Test func onlyCRLFStartsALine() {
        // A bare LF is not a line start for SMTP; stored content never holds one, but stuffing must not invent one.
        #expect(DotStuffer.stuff(Array("a\n.b\r\n".utf8)) == Array("a\n.b\r\n.\r\n".utf8))
    }
}
