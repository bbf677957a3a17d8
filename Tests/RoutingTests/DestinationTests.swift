import NetAddress
import Routing
import Testing

@Suite struct DestinationTests {
    @Test(
        "parsing",
        arguments: [
            ("user@Example.TEST.", Destination.domain("example.test")),
            ("example.test", Destination.domain("example.test")),
            ("a@b@[192.0.2.1]", Destination.address(ip("192.0.2.1"))),
            ("[IPv6:2001:DB8::1]", Destination.address(ip("2001:db8::1"))),
            ("[IPv6:::ffff:192.0.2.1]", Destination.address(ip("192.0.2.1"))),
        ])
    func parsing(text: String, expected: Destination) {
        #expect(Destination(parsing: text) == expected)
    }

    @Test("rejects", arguments: ["", "user@", "[2001:db8::1]", "[999.1.1.1]", "exa mple.test", "bücher.test"])
    func rejects(text: String) {
        #expect(Destination(parsing: text) == nil)
    }
}
