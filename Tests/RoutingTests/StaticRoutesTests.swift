import NetAddress
import Routing
import Testing

@Suite struct StaticRoutesTests {
    @Test("the config example parses; exact beats suffix beats *")
    func parsing() throws {
        let routes = try StaticRoutes(parsing: "example.net=[192.0.2.7]:2526, *=[::1]:10025 .sub.test=relay.test:26")
        #expect(routes.route(for: "EXAMPLE.net.")?.target == .address(ip("192.0.2.7"), port: 2526))
        #expect(routes.route(for: "a.sub.test")?.target == .host("relay.test", port: 26))
        #expect(routes.route(for: "other.test")?.target == .address(ip("::1"), port: 10025))
        #expect(
            routes.entries.map(\.description) == [
                "example.net=[192.0.2.7]:2526", "*=[::1]:10025", ".sub.test=relay.test:26",
            ])
    }

    /// "\r\n" is one Character: a CRLF between two entries must separate them like any other separator.
    @Test func crlfSeparatesEntries() throws {
        let routes = try StaticRoutes(parsing: "a.example=[192.0.2.1]:25\r\nb.example=[192.0.2.2]:25\r")
        #expect(routes.entries.map(\.description) == ["a.example=[192.0.2.1]:25", "b.example=[192.0.2.2]:25"])
    }

    @Test(
        "target forms",
        arguments: [
            ("[IPv6:2001:db8::7]:25", RouteTarget.address(ip("2001:db8::7"), port: 25)),
            ("[2001:db8::7]", RouteTarget.address(ip("2001:db8::7"), port: nil)),
            ("2001:db8::7", RouteTarget.address(ip("2001:db8::7"), port: nil)),
            ("192.0.2.7:2526", RouteTarget.address(ip("192.0.2.7"), port: 2526)),
            ("Relay.Example:2526", RouteTarget.host("relay.example", port: 2526)),
            ("relay.example", RouteTarget.host("relay.example", port: nil)),
        ])
    func targets(text: String, expected: RouteTarget) throws {
        #expect(try StaticRoutes(parsing: "x.test=\(text)").entries.first?.target == expected)
    }

    @Test(
        "bad entries are typed errors",
        arguments: [
            ("example.net", StaticRouteError.missingEquals("example.net")),
            ("exa mple=[192.0.2.1]", StaticRouteError.missingEquals("exa")),
            ("=relay.test", StaticRouteError.badPattern("=relay.test")),
            ("a.test=[192.0.2.1]:0", StaticRouteError.badTarget("a.test=[192.0.2.1]:0")),
            ("a.test=[192.0.2.1]:99999", StaticRouteError.badTarget("a.test=[192.0.2.1]:99999")),
            ("a.test=[nope]", StaticRouteError.badTarget("a.test=[nope]")),
            ("a.test=relay:x", StaticRouteError.badTarget("a.test=relay:x")),
            ("a.test=", StaticRouteError.badTarget("a.test=")),
        ])
    func errors(text: String, expected: StaticRouteError) {
        #expect(throws: expected) { try StaticRoutes(parsing: text) }
    }
}
