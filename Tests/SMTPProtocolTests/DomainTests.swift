import NetAddress
import SMTPProtocol
import Testing

@Suite struct DomainTests {
    @Test(arguments: [
        ("lab.example", "lab.example"),
        ("LAB.Example", "lab.example"),
        ("x", "x"),
        ("a-b.c0", "a-b.c0"),
        ("192.0.2.1", "192.0.2.1"),
        ("[192.0.2.1]", "[192.0.2.1]"),
        ("[IPv6:2001:DB8::25]", "[IPv6:2001:db8::25]"),
        ("[ipv6:2001:db8::25]", "[IPv6:2001:db8::25]"),
    ])
    func valid(text: String, expected: String) {
        #expect(Domain(parsing: Substring(text), allowUTF8: false)?.description == expected)
    }

    @Test(arguments: [
        "", ".", "a.", ".a", "a..b", "-a", "a-", "a-.b", "a_b", "x)", "a;b", "a b", "a\u{0}b",
        "[2001:db8::1]", "[300.1.1.1]", "[IPv6:1::2::3]", "[IPv6:2001:db8::g]", "[192.0.2.1", "ex\u{e4}mple.com",
    ])
    func invalid(text: String) {
        #expect(Domain(parsing: Substring(text), allowUTF8: false) == nil)
    }

    @Test func lengthLimits() {
        let label63 = String(repeating: "a", count: 63)
        #expect(Domain(parsing: Substring(label63 + ".example"), allowUTF8: false) != nil)
        #expect(Domain(parsing: Substring(label63 + "a.example"), allowUTF8: false) == nil)
        // 4 × 63 + 3 dots = 255 octets: the maximum.
        let name255 = [String](repeating: label63, count: 4).joined(separator: ".")
        #expect(name255.utf8.count == 255)
        #expect(Domain(parsing: Substring(name255), allowUTF8: false) != nil)
        #expect(Domain(parsing: Substring(name255 + "a"), allowUTF8: false) == nil)
    }

    @Test func utf8NamesOnlyWhenAllowed() {
        #expect(Domain(parsing: "b\u{fc}cher.example", allowUTF8: true)?.description == "b\u{fc}cher.example")
        #expect(Domain(parsing: "b\u{fc}cher.example", allowUTF8: false) == nil)
    }

    @Test func kinds() {
        #expect(Domain("Lab.Example")?.kind == .name("lab.example"))
        #expect(Domain("[IPv6:2001:db8::1]")?.kind == .literal(IPAddress("2001:db8::1")!))
        #expect(Domain(literal: IPAddress("192.0.2.9")!).description == "[192.0.2.9]")
    }
}

/// Found by the mailbox fuzzer: Unicode lowercasing lengthened a checked name ("İ" is 2 octets, "i̇" 3), so the
/// stored form broke the 63-octet label limit and did not parse again.
@Suite struct DomainFoldingTests {
    @Test func onlyASCIIIsFoldedSoTheStoredFormStillParses() throws {
        let text = "x@" + String(repeating: "\u{130}", count: 22)
        let mailbox = try #require(Mailbox(parsing: Substring(text), allowUTF8: true))
        #expect(Mailbox(parsing: Substring(mailbox.description), allowUTF8: true) == mailbox)
        #expect(Domain("MX.Lab.Example")?.description == "mx.lab.example")
    }
}
