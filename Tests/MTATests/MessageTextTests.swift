import Testing

@testable import MTA

@Suite struct MessageTextTests {
    private func normalize(_ text: String, ignoreDots: Bool = true) throws -> String {
        String(decoding: try MessageText.normalize(Array(text.utf8), ignoreDots: ignoreDots), as: UTF8.self)
    }

    @Test(arguments: [
        ("a\nb\n", "a\r\nb\r\n"), ("a\r\nb\r\n", "a\r\nb\r\n"), ("a\nb", "a\r\nb\r\n"), ("", ""),
        ("\n\n", "\r\n\r\n"), ("mixed\r\nlf\n", "mixed\r\nlf\r\n"),
    ])
    func lineEnds(input: String, expected: String) throws {
        #expect(try normalize(input) == expected)
    }

    @Test(arguments: [("a\rb\n", 1), ("ok\nx\r\r\n", 2), ("a\nb\r", 2), ("\r", 1)])
    func bareCRIsRefused(input: String, line: Int) {
        #expect(throws: SubmissionError.bareCR(line: line)) { try normalize(input) }
    }

    @Test func singleDotEndsInputWithoutI() throws {
        #expect(try normalize("a\n.\nb\n", ignoreDots: false) == "a\r\n")
        #expect(try normalize("a\r\n.\r\nb\r\n", ignoreDots: false) == "a\r\n")
        #expect(try normalize("a\n.", ignoreDots: false) == "a\r\n")
    }

    @Test func dotLinesKeptWithI() throws {
        // S13: the stored text is the input after LF → CRLF; dot-stuffing happens on the wire, not here.
        #expect(try normalize("a\n.\n..x\n.y\n", ignoreDots: true) == "a\r\n.\r\n..x\r\n.y\r\n")
        #expect(try normalize("..\n", ignoreDots: false) == "..\r\n")
    }
}
