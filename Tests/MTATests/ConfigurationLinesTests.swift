import Testing

@testable import MTA

@Suite struct ConfigurationLinesTests {
    static func contents(_ bytes: [UInt8]) -> [String]? {
        try? ConfigurationLines.split(bytes).get().map(\.content)
    }

    /// Line ends and the byte-order mark: each form gives the same two settings.
    @Test(arguments: [
        ("LF", Array("a = 1\nb = 2\n".utf8)),
        ("CRLF", Array("a = 1\r\nb = 2\r\n".utf8)),
        ("mixed", Array("a = 1\r\nb = 2\n".utf8)),
        ("no final newline", Array("a = 1\nb = 2".utf8)),
        ("CRLF, no final newline", Array("a = 1\r\nb = 2".utf8)),
        ("BOM", ConfigurationLines.byteOrderMark + Array("a = 1\r\nb = 2\r\n".utf8)),
    ])
    func lineEnds(name: String, bytes: [UInt8]) {
        #expect(Self.contents(bytes) == ["a = 1", "b = 2"], "\(name)")
    }

    @Test func commentsAndNumbers() throws {
        let lines = try ConfigurationLines.split(Array("# lab\r\n\r\nlisten = x # note\r\n".utf8)).get()
        #expect(lines.map(\.number) == [1, 2, 3])
        #expect(lines.map(\.content) == ["", "", "listen = x "])
    }

    /// Bad bytes before any `#` are errors naming the line and showing the bytes escaped; in a comment they pass.
    @Test(arguments: [
        (Array("a = 1\nhostname = a\u{1}b\n".utf8), 2, "control character in \"hostname = a\\x01b\""),
        (Array("a = 1\rb = 2\n".utf8), 1, "control character in \"a = 1\\x0db = 2\""),
        (Array("x = \u{0}\n".utf8), 1, "control character in \"x = \\x00\""),
        ([0x61, 0x20, 0x3D, 0x20, 0xFF, 0x0A], 1, "invalid UTF-8 in \"a = \\xff\""),
        (Array("a = 1\n".utf8) + [0x62, 0x3D, 0xC3, 0x28], 2, "invalid UTF-8 in \"b=\\xc3(\""),
    ])
    func badBytes(bytes: [UInt8], line: Int, message: String) {
        #expect(ConfigurationLines.split(bytes) == .failure(ConfigurationLines.Problem(line: line, message: message)))
    }

    @Test func badBytesInACommentAreIgnored() {
        #expect(Self.contents(Array("a = 1 # \u{1}".utf8) + [0xFF]) == ["a = 1 "])
    }

    /// The bug this replaces: a CRLF file used to be one line, silently a comment, so every default applied.
    @Test func crlfFileSetsItsValues() throws {
        let text = "# lab\r\nlisten = 127.0.0.1:45025\r\nrelay_networks = 127.0.0.1/32\r\n"
        let configuration = try ConfigurationFile.parse(bytes: Array(text.utf8))
        #expect(configuration.listen.map(\.description) == ["127.0.0.1:45025"])
        #expect(configuration.relayNetworks.map(\.description) == ["127.0.0.1/32"])
    }

    @Test func errorsNameTheLine() {
        #expect(throws: ConfigurationError(file: "f", line: 2, message: "invalid UTF-8 in \"hostname = \\xe9\"")) {
            try ConfigurationFile.parse(bytes: Array("# x\r\nhostname = ".utf8) + [0xE9], file: "f")
        }
    }
}
