import DNS
import NetAddress
import Routing
import Testing

/// The gatherer asks exactly the questions the planner needs (MX, then A and AAAA as
/// the sender's families allow; nothing after a null MX).
@Suite struct RouteResolverTests {
    @Test("MX SERVFAIL: no A/AAAA question follows (T1.9)")
    func servfail() {
        let zone = LabZone().mxAnswer("example.test", .temporaryFailure("SERVFAIL")).host("example.test", "192.0.2.5")
        let lookups = RouteResolver(resolver: zone).gather(.domain("example.test"), context: context())
        #expect(zone.log.questions == ["MX example.test"])
        #expect(lookups.hosts.isEmpty)
    }

    @Test("NXDOMAIN and null MX: no address question")
    func noFallback() {
        let nullMX = LabZone().mx("example.test", (0, ".")).host("example.test", "192.0.2.5")
        _ = RouteResolver(resolver: nullMX).gather(.domain("example.test"), context: context())
        #expect(nullMX.log.questions == ["MX example.test"])
        let missing = LabZone()
        _ = RouteResolver(resolver: missing).gather(.domain("nosuch.test"), context: context())
        #expect(missing.log.questions == ["MX nosuch.test"])
    }

    @Test("dual-stack: per MX host in preference order, AAAA then A")
    func questionOrder() {
        let zone = test1Zone
        _ = RouteResolver(resolver: zone).gather(.domain("example.test"), context: context())
        #expect(
            zone.log.questions == [
                "MX example.test", "AAAA mx10.example.test", "A mx10.example.test", "AAAA mx20.example.test",
                "A mx20.example.test",
            ])
    }

    @Test(
        "only the families we can use are asked",
        arguments: [
            (Capability.ipv4Only, ["MX example.test", "A mx10.example.test", "A mx20.example.test"]),
            (Capability.ipv6Only, ["MX example.test", "AAAA mx10.example.test", "AAAA mx20.example.test"]),
        ])
    func families(capability: Capability, expected: [String]) {
        let zone = test1Zone
        _ = RouteResolver(resolver: zone).gather(.domain("example.test"), context: context(capability))
        #expect(zone.log.questions == expected)
    }

    @Test("NODATA for MX: the domain's own addresses (implicit MX)")
    func implicitMX() {
        let zone = LabZone().host("example.test", "192.0.2.5")
        _ = RouteResolver(resolver: zone).gather(.domain("example.test"), context: context())
        #expect(zone.log.questions == ["MX example.test", "AAAA example.test", "A example.test"])
    }

    @Test("hosts at or below our own preference (by name) and numeric targets are not asked")
    func skipsPrunedAndNumeric() {
        let zone = test2Zone.mx(
            "example.test", (10, "mx10.example.test"), (15, "192.0.2.15"), (30, "mx30.example.test"),
            (40, "mx40.example.test"))
        let identity = LocalIdentity(hostname: "mx30.example.test")
        _ = RouteResolver(resolver: zone).gather(.domain("example.test"), context: context(identity: identity))
        #expect(zone.log.questions == ["MX example.test", "AAAA mx10.example.test", "A mx10.example.test"])
    }
}
