import DNS
import Foundation
import NetAddress
import Routing
import Testing

/// Table tests for the planner: RFC 3974 / RFC 5321 §5.1 ordering and self pruning, null MX (RFC 7505), the
/// DNS verdicts, the transport cache and the project's choices listed in `RoutePlanner`.
@Suite struct RoutePlannerTests {
    let dual = LabZone()
        .mx("example.test", (10, "a.example.test"), (20, "b.example.test"))
        .host("a.example.test", "2001:db8:a::1", "2001:db8:a::2", "192.0.2.1", "192.0.2.2")
        .host("b.example.test", "2001:db8:b::1", "192.0.2.3")

    @Test("T1.1 two dual-stack MX: a's AAAA, a's A, then b's AAAA, b's A")
    func t1_1() throws {
        let plan = try route("user@example.test", dual, context())
        #expect(plan.verdict == .deliver)
        #expect(
            plan.order == ["2001:db8:a::1", "2001:db8:a::2", "192.0.2.1", "192.0.2.2", "2001:db8:b::1", "192.0.2.3"])
        #expect(plan.attempts.map(\.preference) == [10, 10, 10, 10, 20, 20])
        #expect(plan.attempts.allSatisfy { $0.port == 25 })
        #expect(plan.mxSet.map(\.host) == ["a.example.test", "b.example.test"])
    }

    @Test("address_preference = ipv4 flips the blocks inside each level")
    func preferIPv4() throws {
        let plan = try route("example.test", dual, context(Capability(preferredFamily: .ipv4)))
        #expect(
            plan.order == ["192.0.2.1", "192.0.2.2", "2001:db8:a::1", "2001:db8:a::2", "192.0.2.3", "2001:db8:b::1"])
    }

    static var sharedLevel: LabZone {
        LabZone()
            .mx("example.test", (10, "a.example.test"), (10, "b.example.test"), (20, "c.example.test"))
            .host("a.example.test", "2001:db8:a::1", "192.0.2.1")
            .host("b.example.test", "2001:db8:b::1", "192.0.2.2")
            .host("c.example.test", "2001:db8:c::1", "192.0.2.3")
    }

    @Test("T1.2 equal preferences: order varies with the seed, c last, level's AAAA before its A", arguments: 0..<16)
    func t1_2(seed: UInt64) throws {
        let plan = try route("example.test", Self.sharedLevel, context(seed: seed))
        let hosts = plan.attempts.map(\.mxHost)
        #expect(Array(hosts.suffix(2)) == ["c.example.test", "c.example.test"])
        #expect(plan.attempts.prefix(4).map(\.family) == [.ipv6, .ipv6, .ipv4, .ipv4])
        // Both halves of the level follow the same host order.
        #expect(hosts[0] == hosts[2] && hosts[1] == hosts[3] && hosts[0] != hosts[1])
        // Deterministic per seed.
        #expect(try route("example.test", Self.sharedLevel, context(seed: seed)) == plan)
    }

    @Test("T1.2 both orders of the equal-preference pair occur across seeds")
    func t1_2Varies() throws {
        var firsts: Set<String> = []
        for seed in UInt64(0)..<32 {
            firsts.insert(try route("example.test", Self.sharedLevel, context(seed: seed)).attempts[0].mxHost)
        }
        #expect(firsts == ["a.example.test", "b.example.test"])
    }

    @Test("T1.3 IPv4-only sender: only dual's A; the IPv6-only MX is skipped with a reason")
    func t1_3() throws {
        let zone = LabZone()
            .mx("example.test", (10, "v6only.example.test"), (20, "dual.example.test"))
            .host("v6only.example.test", "2001:db8:6::1")
            .host("dual.example.test", "2001:db8:d::1", "192.0.2.20")
        let plan = try route("example.test", zone, context(.ipv4Only))
        #expect(plan.verdict == .deliver)
        #expect(plan.order == ["192.0.2.20"])
        #expect(plan.skipped.map(\.description).contains("v6only.example.test: no A record and IPv6 not usable"))
    }

    @Test("T1.4 IPv6-only sender, MX only IPv4 → 5.4.4 naming the missing family")
    func t1_4() throws {
        let zone = LabZone().mx("example.test", (10, "v4only.example.test")).host("v4only.example.test", "192.0.2.4")
        let plan = try route("example.test", zone, context(.ipv6Only))
        #expect(plan.attempts.isEmpty)
        guard case .permanentFailure(let status, let reason) = plan.verdict else {
            Issue.record("expected a permanent failure, got \(plan.verdict)")
            return
        }
        #expect(status == "5.4.4")
        #expect(reason == "no MX host for example.test has an address of a usable family (this host is IPv6-only)")
        #expect(plan.skipped.map(\.description) == ["v4only.example.test: no AAAA record and IPv4 not usable"])
    }

    @Test("family mismatch with familyMismatch = defer → temporary 4.4.4")
    func familyMismatchDefer() throws {
        let zone = LabZone().mx("example.test", (10, "v4only.example.test")).host("v4only.example.test", "192.0.2.4")
        var ctx = context(.ipv6Only)
        ctx.policy.familyMismatch = .defer
        #expect(try route("example.test", zone, ctx).verdict.status == "4.4.4")
    }

    static var selfZone: LabZone {
        LabZone()
            .mx(
                "example.test", (10, "a.example.test"), (20, "me.example.test"), (20, "b.example.test"),
                (30, "c.example.test")
            )
            .host("a.example.test", "2001:db8:a::1", "192.0.2.1")
            .host("b.example.test", "2001:db8:b::1", "192.0.2.2")
            .host("c.example.test", "2001:db8:c::1", "192.0.2.3")
    }

    @Test("T1.5 self at preference 20, matched by address: plan = a only")
    func t1_5() throws {
        let zone = Self.selfZone.host("me.example.test", "2001:db8:99::1", "192.0.2.99")
        let plan = try route("example.test", zone, context())
        #expect(plan.order == ["2001:db8:a::1", "192.0.2.1"])
        #expect(plan.mxSet.first { $0.host == "me.example.test" }?.note == "self (matched by address 2001:db8:99::1)")
        #expect(plan.mxSet.first { $0.host == "b.example.test" }?.note == "pruned: preference 20 ≥ self (20)")
    }

    @Test("self by address: an MX whose AAAA is ours but whose A is not is self")
    func selfByOneFamily() throws {
        let zone = Self.selfZone.host("me.example.test", "2001:db8:99::1", "198.51.100.7")
        #expect(try route("example.test", zone, context()).order == ["2001:db8:a::1", "192.0.2.1"])
    }

    @Test("T1.6 self matched by name only (NAT: DNS shows a public address that is not local)")
    func t1_6() throws {
        let zone = Self.selfZone.host("me.example.test", "203.0.113.5")
        let identity = LocalIdentity(
            hostname: "relay.lab.test", aliases: ["ME.example.test."], addresses: [ip("10.0.0.5")],
            listeners: [Endpoint(address: ip("0.0.0.0"), port: 25)])
        let plan = try route("example.test", zone, context(identity: identity))
        #expect(plan.order == ["2001:db8:a::1", "192.0.2.1"])
        #expect(plan.mxSet.first { $0.host == "me.example.test" }?.note == "self (matched by name)")
    }

    @Test("an MX at our address on a port where we do not listen is not self")
    func localAddressOtherPort() throws {
        let identity = LocalIdentity(
            hostname: "relay.lab.test", addresses: [ip("192.0.2.99")],
            listeners: [Endpoint(address: ip("192.0.2.99"), port: 2525)])
        let zone = LabZone().mx("example.test", (10, "mx.example.test")).host("mx.example.test", "192.0.2.99")
        #expect(try route("example.test", zone, context(identity: identity)).order == ["192.0.2.99"])
    }

    @Test("T1.7 self is the only MX of a non-local domain → 5.4.6; of a local domain → local delivery")
    func t1_7() throws {
        let zone = LabZone().mx("example.test", (10, "relay.lab.test")).host("relay.lab.test", "192.0.2.99")
        let loop = try route("example.test", zone, context())
        #expect(loop.verdict.status == "5.4.6")
        #expect(loop.attempts.isEmpty)
        let identity = LocalIdentity(
            hostname: "relay.lab.test", addresses: [ip("192.0.2.99")], localDomains: ["example.test"])
        let fresh = LabZone().mx("example.test", (10, "relay.lab.test"))
        let local = try route("example.test", fresh, context(identity: identity))
        #expect(local.verdict == .deliverLocally)
        #expect(fresh.log.questions.isEmpty)
    }

    @Test("T1.7 self is the best of several MX (by address) → 5.4.6, the worse ones are pruned")
    func t1_7Best() throws {
        let zone = LabZone()
            .mx("example.test", (5, "me.example.test"), (10, "a.example.test"))
            .host("me.example.test", "192.0.2.99")
            .host("a.example.test", "192.0.2.1")
        let plan = try route("example.test", zone, context())
        #expect(plan.verdict.status == "5.4.6")
        #expect(plan.attempts.isEmpty)
    }

    @Test("T1.8 the better MX does not resolve (SERVFAIL on AAAA and A), self next → 4.4.4, never 5.4.6")
    func t1_8() throws {
        let zone = LabZone()
            .mx("example.test", (10, "a.example.test"), (20, "relay.lab.test"))
            .hostAnswer("a.example.test", .ipv6, .temporaryFailure("SERVFAIL"))
            .hostAnswer("a.example.test", .ipv4, .temporaryFailure("SERVFAIL"))
        let plan = try route("example.test", zone, context())
        #expect(
            plan.verdict == .temporaryFailure(status: "4.4.4", reason: "unable to find primary relay for example.test"))
        #expect(plan.skipped.map(\.subject) == ["a.example.test"])
    }

    @Test("T1.9 MX SERVFAIL → 4.4.3 and no address question")
    func t1_9() throws {
        let zone = LabZone().mxAnswer("example.test", .temporaryFailure("SERVFAIL")).host("example.test", "192.0.2.5")
        let plan = try route("example.test", zone, context())
        #expect(plan.verdict.status == "4.4.3")
        #expect(zone.log.questions == ["MX example.test"])
    }

    @Test("NXDOMAIN for the domain → 5.1.2 (project choice)")
    func nxdomain() throws {
        let plan = try route("user@nosuch.test", LabZone(), context())
        #expect(
            plan.verdict == .permanentFailure(status: "5.1.2", reason: "domain nosuch.test does not exist (NXDOMAIN)"))
    }

    @Test("T1.10 no MX, AAAA and A → implicit MX preference 0, AAAA then A")
    func t1_10() throws {
        let zone = LabZone().host("example.test", "2001:db8:e::1", "192.0.2.5")
        let plan = try route("example.test", zone, context())
        #expect(plan.source == "implicit mx")
        #expect(plan.order == ["2001:db8:e::1", "192.0.2.5"])
        #expect(plan.attempts.allSatisfy { $0.preference == 0 && $0.mxHost == "example.test" })
        #expect(plan.mxSet == [MXSetEntry(preference: 0, host: "example.test", implicit: true)])
    }

    @Test("T1.11 no MX, AAAA only, IPv4-only sender → 5.4.4")
    func t1_11() throws {
        let zone = LabZone().host("example.test", "2001:db8:e::1")
        let plan = try route("example.test", zone, context(.ipv4Only))
        #expect(
            plan.verdict
                == .permanentFailure(
                    status: "5.4.4",
                    reason: "example.test has no MX records and no address of a usable family (this host is IPv4-only)")
        )
    }

    @Test("no MX, no A, no AAAA → 5.4.4")
    func nothingAtAll() throws {
        let zone = LabZone().mxAnswer("example.test", .noData).hostAnswer("example.test", .ipv4, .noData)
        let plan = try route("example.test", zone, context())
        #expect(
            plan.verdict
                == .permanentFailure(
                    status: "5.4.4", reason: "example.test has no MX records and no AAAA or A record"))
    }

    @Test("T1.12 numeric MX target is skipped with a warning; the others are used")
    func t1_12() throws {
        let zone = LabZone()
            .mx("example.test", (10, "192.0.2.1"), (20, "b.example.test"))
            .host("b.example.test", "192.0.2.3")
        let plan = try route("example.test", zone, context())
        #expect(plan.order == ["192.0.2.3"])
        #expect(plan.skipped.contains(SkippedEntry("192.0.2.1", "MX target is an IP address, not a host name")))
        #expect(plan.warnings.contains { $0.contains("192.0.2.1") })
        #expect(!zone.log.questions.contains("A 192.0.2.1"))
    }

    @Test(
        "T1.13 unusable addresses are dropped with a reason",
        arguments: [
            ("::ffff:192.0.2.1", "::ffff:192.0.2.1: ipv4-mapped address"),
            ("fe80::1", "fe80::1: link-local address"),
            ("ff02::1", "ff02::1: multicast address"),
            ("::", "::: unspecified address"),
            ("169.254.0.1", "169.254.0.1: link-local address"),
            ("::1", "::1: loopback address in DNS"),
        ])
    func t1_13(bad: String, expected: String) throws {
        let zone = LabZone().mx("example.test", (10, "mx.example.test")).host("mx.example.test", bad, "2001:db8:1::1")
        // No listener: "::" and "::1" would otherwise make the host self (next test).
        let plan = try route("example.test", zone, context(identity: LocalIdentity(hostname: "relay.lab.test")))
        #expect(plan.order == ["2001:db8:1::1"])
        #expect(plan.skipped.map(\.description).contains(expected))
    }

    @Test(
        "'::' or '::1' in an MX host's AAAA while we listen on [::]:25 makes that host self", arguments: ["::", "::1"])
    func unspecifiedIsSelf(address: String) throws {
        let zone = LabZone().mx("example.test", (10, "mx.example.test")).host("mx.example.test", address)
        #expect(try route("example.test", zone, context()).verdict.status == "5.4.6")
    }

    @Test("T1.13 an MX host whose only address is unusable → 5.4.4 'no usable address'")
    func t1_13Only() throws {
        let zone = LabZone().mx("example.test", (10, "mx.example.test")).host("mx.example.test", "fe80::1")
        let plan = try route("example.test", zone, context())
        #expect(
            plan.verdict
                == .permanentFailure(status: "5.4.4", reason: "no MX host for example.test has a usable address"))
        #expect(
            plan.skipped.map(\.description) == ["fe80::1: link-local address", "mx.example.test: no usable address"])
    }

    @Test("loopback in DNS is used when the lab allows it")
    func loopbackAllowed() throws {
        let zone = LabZone().mx("example.test", (10, "mx.example.test")).host("mx.example.test", "127.0.0.1")
        var ctx = context()
        ctx.policy.acceptLoopbackFromDNS = true
        ctx.policy.mxPort = 2600
        #expect(try route("example.test", zone, ctx).attempts.map(\.endpoint.description) == ["127.0.0.1:2600"])
    }

    @Test("T1.15 large MX set: every host is planned, no address cap")
    func t1_15() throws {
        var zone = LabZone()
        var records: [MXRecord] = []
        for index in 0..<40 {
            let name = "mx\(index).example.test"
            records.append(MXRecord(preference: UInt16(index), exchange: name))
            zone = zone.host(name, "2001:db8:40::\(index + 1)", "192.0.2.\(index + 1)")
        }
        zone = zone.mxAnswer("example.test", .records(records.reversed(), canonicalName: nil))
        let plan = try route("example.test", zone, context())
        #expect(plan.attempts.count == 80)
        #expect(plan.attempts.map(\.preference) == (0..<40).flatMap { [UInt16($0), UInt16($0)] })
    }

    @Test("some hosts soft-fail and none is usable → 4.4.3 (soft error dominates)")
    func softDominates() throws {
        let zone = LabZone()
            .mx("example.test", (10, "a.example.test"), (20, "b.example.test"))
            .hostAnswer("a.example.test", .ipv6, .temporaryFailure("timeout"))
            .hostAnswer("a.example.test", .ipv4, .noData)
            .hostAnswer("b.example.test", .ipv4, .noData)
        let plan = try route("example.test", zone, context())
        #expect(plan.verdict.status == "4.4.3")
        #expect(
            plan.skipped.map(\.description) == [
                "a.example.test: AAAA lookup failed: timeout", "b.example.test: no AAAA or A record",
            ])
    }

    @Test("a host with one soft-failed family still uses the other; the failure is logged")
    func partialSoftFailure() throws {
        let zone = LabZone()
            .mx("example.test", (10, "a.example.test"))
            .hostAnswer("a.example.test", .ipv6, .temporaryFailure("SERVFAIL"))
            .hostAnswer(
                "a.example.test", .ipv4, .records([AddressRecord(address: ip("192.0.2.1"))], canonicalName: nil))
        let plan = try route("example.test", zone, context())
        #expect(plan.order == ["192.0.2.1"])
        #expect(plan.skipped == [SkippedEntry("a.example.test", "AAAA lookup failed: SERVFAIL")])
    }

    @Test("every MX host is NXDOMAIN → 5.4.4")
    func allHostsMissing() throws {
        let zone = LabZone().mx("example.test", (10, "gone.example.test"))
        let plan = try route("example.test", zone, context())
        #expect(plan.verdict.status == "5.4.4")
        #expect(plan.skipped == [SkippedEntry("gone.example.test", "host name does not exist (NXDOMAIN)")])
    }

    @Test("T3.1 null MX → 5.1.10, no address question")
    func t3_1() throws {
        let zone = LabZone().mx("example.test", (0, ".")).host("example.test", "192.0.2.5")
        let plan = try route("example.test", zone, context())
        #expect(plan.verdict.status == "5.1.10")
        guard case .permanentFailure = plan.verdict else {
            Issue.record("null MX must be permanent")
            return
        }
        #expect(plan.attempts.isEmpty && plan.warnings.isEmpty)
        #expect(zone.log.questions == ["MX example.test"])
    }

    @Test("T3.2 '.' mixed with a real MX → null MX plus a warning, no address question")
    func t3_2() throws {
        let zone = LabZone().mx("example.test", (0, "."), (10, "mx.example.test")).host("mx.example.test", "192.0.2.5")
        let plan = try route("example.test", zone, context())
        #expect(plan.verdict.status == "5.1.10")
        #expect(plan.warnings == ["invalid null MX set for example.test: \".\" must be the only MX, preference 0"])
        #expect(plan.mxSet.map(\.host) == [".", "mx.example.test"])
        #expect(zone.log.questions == ["MX example.test"])
    }

    @Test("a CNAME'd MX target is followed with a warning; a CNAME'd domain too")
    func cnames() throws {
        let zone = LabZone()
            .mxAnswer(
                "alias.test",
                .records(
                    [MXRecord(preference: 10, exchange: "mx.example.test")],
                    canonicalName: "example.test")
            )
            .hostAnswer("mx.example.test", .ipv6, .noData)
            .hostAnswer(
                "mx.example.test", .ipv4,
                .records(
                    [AddressRecord(address: ip("192.0.2.8"))],
                    canonicalName: "real.example.test"))
        let plan = try route("alias.test", zone, context())
        #expect(plan.order == ["192.0.2.8"])
        #expect(
            plan.warnings == [
                "alias.test is a CNAME for example.test: its MX records are used",
                "mx.example.test is a CNAME for real.example.test (RFC 2181 §10.3): followed",
            ])
    }

    @Test("the planner ignores answers of families we cannot use")
    func ignoresUnusableFamilies() {
        let lookups = RouteLookups(
            mx: .records([MXRecord(preference: 10, exchange: "mx.example.test")], canonicalName: nil),
            hosts: [
                "mx.example.test": HostAddresses(
                    ipv4: .records([AddressRecord(address: ip("192.0.2.1"))], canonicalName: nil),
                    ipv6: .records([AddressRecord(address: ip("2001:db8::1"))], canonicalName: nil))
            ])
        let plan = RoutePlanner.plan(.domain("example.test"), lookups: lookups, context: context(.ipv4Only))
        #expect(plan.order == ["192.0.2.1"])
    }

    @Test("a missing answer for a needed question is temporary, never permanent")
    func missingAnswer() {
        let lookups = RouteLookups(
            mx: .records([MXRecord(preference: 10, exchange: "mx.example.test")], canonicalName: nil))
        let plan = RoutePlanner.plan(.domain("example.test"), lookups: lookups, context: context())
        #expect(plan.verdict.status == "4.4.3")
        #expect(
            RoutePlanner.plan(.domain("example.test"), lookups: RouteLookups(), context: context()).verdict.status
                == "4.4.3")
    }

    // MARK: address literals and static routes

    @Test(
        "address literals: implicit preference 0, no DNS",
        arguments: [
            ("user@[192.0.2.1]", "192.0.2.1:25"), ("[IPv6:2001:db8::1]", "[2001:db8::1]:25"),
        ])
    func literal(text: String, endpoint: String) throws {
        let zone = LabZone()
        let plan = try route(text, zone, context())
        #expect(plan.source == "address literal")
        #expect(plan.attempts.map(\.endpoint.description) == [endpoint])
        #expect(plan.attempts.map(\.preference) == [0])
        #expect(zone.log.questions.isEmpty)
    }

    @Test("IPv6 literal from an IPv4-only host → 5.4.4; our own literal → local")
    func literalFamilyAndSelf() throws {
        let mismatch = try route("[IPv6:2001:db8::1]", LabZone(), context(.ipv4Only))
        #expect(
            mismatch.verdict
                == .permanentFailure(
                    status: "5.4.4", reason: "[IPv6:2001:db8::1] needs IPv6 (this host is IPv4-only)"))
        #expect(try route("postmaster@[192.0.2.99]", LabZone(), context()).verdict == .deliverLocally)
    }

    @Test("static route to an address: no DNS, the route's port")
    func staticAddress() throws {
        var ctx = context()
        ctx.policy.staticRoutes = try StaticRoutes(parsing: "example.net=[192.0.2.7]:2526, *=[::1]:10025")
        let zone = test1Zone
        #expect(try route("a@example.net", zone, ctx).attempts.map(\.endpoint.description) == ["192.0.2.7:2526"])
        let wildcard = try route("a@example.test", zone, ctx)
        #expect(wildcard.attempts.map(\.endpoint.description) == ["[::1]:10025"])
        #expect(zone.log.questions.isEmpty)
    }

    @Test("static route to an address:port where we listen → 5.4.6 loop")
    func staticLoop() throws {
        var ctx = context(
            identity: LocalIdentity(
                hostname: "relay.lab.test", listeners: [Endpoint(address: ip("::1"), port: 10025)]))
        ctx.policy.staticRoutes = try StaticRoutes(parsing: "*=[::1]:10025")
        #expect(try route("a@example.test", LabZone(), ctx).verdict.status == "5.4.6")
    }

    @Test("static route to host:port resolves A/AAAA of the host, never MX")
    func staticHost() throws {
        var ctx = context()
        ctx.policy.staticRoutes = try StaticRoutes(parsing: "example.test=mx20.example.test:2526")
        let zone = test1Zone
        let plan = try route("example.test", zone, ctx)
        #expect(plan.attempts.map(\.endpoint.description) == ["[2001:db8:20::1]:2526", "192.0.2.21:2526"])
        #expect(zone.log.questions == ["AAAA mx20.example.test", "A mx20.example.test"])
    }

    @Test("a local domain is delivered locally and never routed")
    func localDomain() throws {
        let zone = test1Zone
        #expect(try route("user@localhost", zone, context()).verdict == .deliverLocally)
        #expect(try route("user@RELAY.lab.test.", zone, context()).verdict == .deliverLocally)
        #expect(zone.log.questions.isEmpty)
    }
}
