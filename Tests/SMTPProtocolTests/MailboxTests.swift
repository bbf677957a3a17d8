import NetAddress
import SMTPProtocol
import Testing

@Suite struct MailboxTests {
    @Test(arguments: [
        ("alice@lab.example", "alice", "alice", "alice@lab.example"),
        ("Alice@LAB.EXAMPLE", "Alice", "Alice", "Alice@lab.example"),
        ("\"john smith\"@lab.example", "\"john smith\"", "john smith", "\"john smith\"@lab.example"),
        ("\"a\\\"b\"@lab.example", "\"a\\\"b\"", "a\"b", "\"a\\\"b\"@lab.example"),
        (
            "\"victim@remote.example\"@lab.example", "\"victim@remote.example\"", "victim@remote.example",
            "\"victim@remote.example\"@lab.example"
        ),
        (
            "victim%remote.example@lab.example", "victim%remote.example", "victim%remote.example",
            "victim%remote.example@lab.example"
        ),
        ("a.b+tag@x.example", "a.b+tag", "a.b+tag", "a.b+tag@x.example"),
        ("u@[192.0.2.2]", "u", "u", "u@[192.0.2.2]"),
        ("u@[IPv6:2001:DB8:99::2]", "u", "u", "u@[IPv6:2001:db8:99::2]"),
        ("\"\"@lab.example", "\"\"", "", "\"\"@lab.example"),
    ])
    func valid(text: String, localPart: String, decoded: String, description: String) throws {
        let mailbox = try #require(Mailbox(parsing: Substring(text), allowUTF8: false))
        #expect(mailbox.localPart == localPart)
        #expect(mailbox.decodedLocalPart == decoded)
        #expect(mailbox.description == description)
        // Round trip.
        #expect(Mailbox(parsing: Substring(mailbox.description), allowUTF8: false) == mailbox)
    }

    @Test(arguments: [
        "", "@lab.example", "alice", "alice@", "alice@lab.example.", "victim@remote.example@lab.example",
        "\"x@y\"", "\"abc@lab.example", "a..b@x", ".a@x", "a.@x", "a b@x", "a\u{0}b@x.example", "\"x\u{1}\"@x",
        "\"a\\\u{1}\"@x", "a(b)@x", "a@b@c", "u@[IPv6:2001:db8::g]", "u@[2001:db8::1]", "u@[300.1.1.1]",
        "u@[IPv6:1::2::3]", "remote.example!victim", "j\u{f6}rg@r.example",
    ])
    func invalid(text: String) {
        #expect(Mailbox(parsing: Substring(text), allowUTF8: false) == nil)
    }

    @Test func localPartLimit() {
        let local64 = String(repeating: "a", count: 64)
        #expect(Mailbox(parsing: Substring(local64 + "@x.example"), allowUTF8: false) != nil)
        #expect(Mailbox(parsing: Substring(local64 + "a@x.example"), allowUTF8: false) == nil)
    }

    @Test func utf8AddressesNeedPermission() throws {
        let text: Substring = "j\u{f6}rg@b\u{fc}cher.example"
        #expect(Mailbox(parsing: text, allowUTF8: false) == nil)
        let mailbox = try #require(Mailbox(parsing: text, allowUTF8: true))
        #expect(mailbox.isInternationalized)
        #expect(Mailbox(parsing: Substring(mailbox.description), allowUTF8: true) == mailbox)
    }

    @Test func pathDescriptions() throws {
        let mailbox = try #require(Mailbox(parsing: "a@b.example", allowUTF8: false))
        #expect(ReversePath.null.description == "")
        #expect(ReversePath.mailbox(mailbox).description == "a@b.example")
        #expect(ForwardPath.postmaster.description == "Postmaster")
        #expect(ForwardPath.mailbox(mailbox).description == "a@b.example")
    }
}
