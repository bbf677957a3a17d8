import DNS
import NetAddress
import Testing

@Suite struct NameServerTests {
    @Test(
        "accepted forms",
        arguments: [
            ("192.0.2.53", "192.0.2.53:53"), ("192.0.2.53:5353", "192.0.2.53:5353"),
            ("[2001:db8::53]:53", "[2001:db8::53]:53"), ("2001:db8::53", "[2001:db8::53]:53"),
            ("[2001:db8::53]", "[2001:db8::53]:53"), (" ::1 ", "[::1]:53"),
        ])
    func accepted(text: String, expected: String) {
        #expect(NameServer(parsing: text)?.description == expected)
    }

    @Test(
        "rejected forms",
        arguments: [
            "", "example.test", "192.0.2.53:", "192.0.2.53:0", "192.0.2.53:65536", "[2001:db8::53]:x", "[192.0.2.1]",
            "[2001:db8::53", "2001:db8::53:53:53:53:53:53:53",
        ])
    func rejected(text: String) {
        #expect(NameServer(parsing: text) == nil)
    }
}
