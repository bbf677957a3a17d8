import Testing

@testable import SMTPProtocol

@Suite struct AddressListTests {
    @Test(arguments: [
        ("a@x.example", ["a@x.example"]),
        ("a@x.example, b@x.example", ["a@x.example", "b@x.example"]),
        ("Alice <a@x.example>, \"Bob, Jr.\" <b@x.example>", ["a@x.example", "b@x.example"]),
        ("a@x.example (Alice, comment), <b@x.example>", ["a@x.example", "b@x.example"]),
        ("undisclosed-recipients:;", []),
        ("team: a@x.example, Bob <b@x.example>; c@x.example", ["a@x.example", "b@x.example", "c@x.example"]),
        ("\"john smith\"@x.example", ["\"john smith\"@x.example"]),
        ("<@relay.example:a@x.example>", ["a@x.example"]),
        ("root", ["root"]),
        (" a@x.example ,, ", ["a@x.example"]),
    ])
    func parses(text: String, expected: [String]) throws {
        #expect(try AddressList.parse(text) == expected)
    }

    @Test(arguments: ["<a@x.example", "\"open@x.example", "(open a@x.example", "a@x.example;", "<a@x><b@x>"])
    func refuses(text: String) {
        #expect(throws: AddressListError(text: text)) { try AddressList.parse(text) }
    }
}
