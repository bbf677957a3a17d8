import DNS
import Foundation
import NetAddress
import Routing
import Testing

/// The paper's three scenarios (docs/lab.md) as planner inputs.
@Suite struct RoutePlannerPaperTests {
    // MARK: Test 1 — all AAAA, then all A, then the next preference

    @Test("Test 1, dual-stack: the three mx10 AAAA, the two mx10 A, then mx20 AAAA (T10.1.1)")
    func test1DualStack() throws {
        let plan = try route("user@example.test", test1Zone, context())
        #expect(plan.verdict == .deliver)
        // The sixth attempt is the one that succeeds; mx20's A stays last and is never reached.
        #expect(
            Array(plan.order.prefix(6)) == [
                "2001:db8:10::1", "2001:db8:10::2", "2001:db8:10::3", "192.0.2.11", "192.0.2.12", "2001:db8:20::1",
            ])
        #expect(plan.order.count == 7 && plan.order.last == "192.0.2.21")
        #expect(plan.attempts.map(\.mxHost).prefix(5).allSatisfy { $0 == "mx10.example.test" })
        #expect(plan.skipped.isEmpty)
    }

    @Test("Test 1, IPv4-only sender: 192.0.2.11, 192.0.2.12, 192.0.2.21 (T10.1.4)")
    func test1IPv4Only() throws {
        let zone = test1Zone
        let plan = try route("user@example.test", zone, context(.ipv4Only))
        #expect(plan.order == ["192.0.2.11", "192.0.2.12", "192.0.2.21"])
        #expect(!zone.log.questions.contains { $0.hasPrefix("AAAA") })
    }

    @Test("Test 1, IPv6-only sender: the three mx10 AAAA, then 2001:db8:20::1 (T10.1.4)")
    func test1IPv6Only() throws {
        let plan = try route("user@example.test", test1Zone, context(.ipv6Only))
        #expect(plan.order == ["2001:db8:10::1", "2001:db8:10::2", "2001:db8:10::3", "2001:db8:20::1"])
    }

    @Test("Test 1: the plan text shows the MX set, the attempts in order and the verdict")
    func test1Text() throws {
        let plan = try route("user@example.test", test1Zone, context())
        #expect(
            plan.text == """
                route for example.test via mx (this host: dual-stack, ipv6 first)
                MX set:
                  10 mx10.example.test
                  20 mx20.example.test
                attempts:
                  1. mx10.example.test pref 10 ipv6 [2001:db8:10::1]:25
                  2. mx10.example.test pref 10 ipv6 [2001:db8:10::2]:25
                  3. mx10.example.test pref 10 ipv6 [2001:db8:10::3]:25
                  4. mx10.example.test pref 10 ipv4 192.0.2.11:25
                  5. mx10.example.test pref 10 ipv4 192.0.2.12:25
                  6. mx20.example.test pref 20 ipv6 [2001:db8:20::1]:25
                  7. mx20.example.test pref 20 ipv4 192.0.2.21:25
                verdict: deliver, 7 attempts

                """)
    }

    // MARK: Test 2 — IPv4-only relay, IPv6-only middle MX, dual-stack backup that must not loop

    @Test("Test 2 at the IPv4-only relay R: mx10 A, then mx30 A; mx20 skipped for its family")
    func test2AtRelay() throws {
        let zone = test2Zone
        let plan = try route("user@example.test", zone, context(.ipv4Only))
        #expect(plan.order == ["192.0.2.10", "192.0.2.30"])
        #expect(plan.skipped.map(\.description) == ["mx20.example.test: no A record and IPv6 not usable"])
        #expect(!zone.log.questions.contains { $0.hasPrefix("AAAA") })
    }

    static let mx30 = LocalIdentity(
        hostname: "mx30.example.test", addresses: [ip("2001:db8:30::1"), ip("192.0.2.30")],
        listeners: [Endpoint(address: ip("::"), port: 25), Endpoint(address: ip("0.0.0.0"), port: 25)],
        localDomains: [])

    @Test("Test 2 at the backup mx30: self pruned at 30, plan = mx10 AAAA, mx10 A, mx20 AAAA (T10.2.1)")
    func test2AtBackup() throws {
        let zone = test2Zone
        let plan = try route("user@example.test", zone, context(identity: Self.mx30))
        #expect(plan.verdict == .deliver)
        #expect(plan.order == ["2001:db8:10::1", "192.0.2.10", "2001:db8:20::1"])
        #expect(plan.mxSet.map(\.note) == [nil, nil, "self (matched by name)"])
        // Matched by name, mx30's own addresses are not even asked for.
        #expect(!zone.log.questions.contains { $0.hasSuffix("mx30.example.test") })
    }

    @Test("Test 2 at mx30, self known by address only: same plan")
    func test2AtBackupByAddress() throws {
        let identity = LocalIdentity(
            hostname: "backup.lab.test", addresses: Self.mx30.addresses, listeners: Self.mx30.listeners,
            localDomains: [])
        let plan = try route("user@example.test", test2Zone, context(identity: identity))
        #expect(plan.order == ["2001:db8:10::1", "192.0.2.10", "2001:db8:20::1"])
        #expect(plan.mxSet.last?.note == "self (matched by address 2001:db8:30::1)")
    }

    @Test("T10.2.3 mx30 cannot resolve mx10/mx20 for now → 4.4.4, never 5.4.6")
    func test2Unresolvable() throws {
        let zone =
            test2Zone
            .hostAnswer("mx10.example.test", .ipv6, .temporaryFailure("timeout"))
            .hostAnswer("mx10.example.test", .ipv4, .temporaryFailure("timeout"))
            .hostAnswer("mx20.example.test", .ipv6, .temporaryFailure("timeout"))
            .hostAnswer("mx20.example.test", .ipv4, .temporaryFailure("timeout"))
        let plan = try route("user@example.test", zone, context(identity: Self.mx30))
        #expect(
            plan.verdict
                == .temporaryFailure(
                    status: "4.4.4", reason: "unable to find primary relay for example.test"))
    }

    @Test("T10.2.4 mx30 made IPv4-only: plan = [192.0.2.10]; mx20 skipped for family")
    func test2BackupIPv4Only() throws {
        let plan = try route("user@example.test", test2Zone, context(.ipv4Only, identity: Self.mx30))
        #expect(plan.order == ["192.0.2.10"])
        #expect(plan.skipped.map(\.description) == ["mx20.example.test: no A record and IPv6 not usable"])
    }

    // MARK: Test 3 — the bounce that cannot go home

    static var test3Zone: LabZone {
        LabZone()
            .mx("v6only.test", (10, "mx.v6only.test"))
            .host("mx.v6only.test", "2001:db8:66::25")
            .mx("dest.test", (10, "mx.dest.test"))
            .host("mx.dest.test", "192.0.2.40")
    }

    @Test("Test 3 at the IPv4-only relay: the NDR's route is 5.4.4 naming the missing family")
    func test3() throws {
        let plan = try route("alice@v6only.test", Self.test3Zone, context(.ipv4Only))
        #expect(plan.attempts.isEmpty)
        #expect(
            plan.verdict
                == .permanentFailure(
                    status: "5.4.4",
                    reason: "no MX host for v6only.test has an address of a usable family (this host is IPv4-only)"))
        #expect(plan.skipped.map(\.description) == ["mx.v6only.test: no A record and IPv6 not usable"])
        // The original message's destination is fine from the same relay.
        #expect(try route("nobody@dest.test", Self.test3Zone, context(.ipv4Only)).order == ["192.0.2.40"])
    }

    @Test("T10.3.5 a dual-stack relay reaches mx.v6only.test over IPv6")
    func test3DualStack() throws {
        #expect(try route("alice@v6only.test", Self.test3Zone, context()).order == ["2001:db8:66::25"])
    }
}
