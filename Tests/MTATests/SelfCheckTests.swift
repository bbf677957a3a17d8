import NetAddress
import Sockets
import Testing

@testable import MTA

@Suite struct SelfCheckTests {
    static func ip(_ text: String) -> IPAddress { IPAddress(text) ?? .v4(IPv4Address(0, 0, 0, 0)) }
    static func listen(_ text: String) -> SocketAddress {
        SocketAddress(parsing: text) ?? SocketAddress(ip: ip("0.0.0.0"), port: 0)
    }

    static let dualStack = SelfCheck.IPv6State(hasGlobalAddress: true, hasRoute: true)

    static func inputs(
        listeners: [String], hostnameAddresses: [String]?, local: [String] = ["192.0.2.25", "2001:db8:1::25"],
        families: Set<AddressFamily> = [.ipv4, .ipv6], ipv6: SelfCheck.IPv6State = dualStack,
        bind6: String? = nil
    ) -> SelfCheck.Inputs {
        SelfCheck.Inputs(
            hostname: "mx.lab.test", listeners: listeners.map(listen),
            hostnameAddresses: hostnameAddresses?.map(ip), lookupProblem: hostnameAddresses == nil ? "SERVFAIL" : nil,
            localAddresses: Set(local.map(ip)), deliveryFamilies: families, ipv6: ipv6, bindAddress6: bind6.map(ip))
    }

    @Test("an IPv4-only listener on a host whose name has an AAAA record: one warning, families reported")
    func ipv4OnlyListenerWithAAAA() {
        let report = SelfCheck.evaluate(
            Self.inputs(listeners: ["0.0.0.0:25"], hostnameAddresses: ["2001:db8:1::25", "192.0.2.25"]))
        #expect(report.listeners == ["0.0.0.0:25 serves ipv4: every IPv4 address"])
        #expect(
            report.warnings == [
                "hostname mx.lab.test has AAAA 2001:db8:1::25 but no listener accepts ipv6: clients that use that "
                    + "address are refused"
            ])
    }

    @Test("both wildcards cover both records: no warning")
    func dualStackClean() {
        let report = SelfCheck.evaluate(
            Self.inputs(listeners: ["[::]:25", "0.0.0.0:25"], hostnameAddresses: ["2001:db8:1::25", "192.0.2.25"]))
        #expect(report.warnings.isEmpty)
        #expect(
            report.listeners == [
                "[::]:25 serves ipv6: every IPv6 address, not IPv4 (IPV6_V6ONLY)",
                "0.0.0.0:25 serves ipv4: every IPv4 address",
            ])
    }

    @Test("a specific listener that is not the name's address, and a name pointing elsewhere")
    func specificAndForeign() {
        let specific = SelfCheck.evaluate(
            Self.inputs(
                listeners: ["[2001:db8:1::26]:25", "0.0.0.0:25"], hostnameAddresses: ["2001:db8:1::25"],
                local: ["2001:db8:1::25", "2001:db8:1::26"]))
        #expect(specific.warnings == ["hostname mx.lab.test has AAAA 2001:db8:1::25 but no listener is bound to it"])
        let foreign = SelfCheck.evaluate(Self.inputs(listeners: ["0.0.0.0:25"], hostnameAddresses: ["198.51.100.9"]))
        #expect(foreign.warnings == ["hostname mx.lab.test has A 198.51.100.9, which is not an address of this host"])
    }

    @Test("IPv6 delivery without a global address or route warns; IPv4-only delivery does not")
    func ipv6Capability() {
        let none = SelfCheck.IPv6State(hasGlobalAddress: false, hasRoute: false)
        let warned = SelfCheck.evaluate(Self.inputs(listeners: ["0.0.0.0:25"], hostnameAddresses: [], ipv6: none))
        #expect(warned.warnings.count == 2)
        #expect(warned.warnings.allSatisfy { $0.hasPrefix("inet_protocols enables IPv6 for delivery") })
        let quiet = SelfCheck.evaluate(
            Self.inputs(listeners: ["0.0.0.0:25"], hostnameAddresses: [], families: [.ipv4], ipv6: none))
        #expect(quiet.warnings.isEmpty)
        let disabled = SelfCheck.evaluate(
            Self.inputs(
                listeners: ["0.0.0.0:25"], hostnameAddresses: [],
                ipv6: SelfCheck.IPv6State(hasGlobalAddress: false, hasRoute: false, disabled: true)))
        #expect(disabled.warnings == ["inet_protocols enables IPv6 for delivery but the kernel has no IPv6"])
    }

    @Test("Only loopback listeners: missing global IPv6 is a note, not a warning; one wildcard makes it a warning")
    func loopbackLabNotes() {
        let none = SelfCheck.IPv6State(hasGlobalAddress: false, hasRoute: false)
        let lab = SelfCheck.evaluate(
            Self.inputs(listeners: ["[::1]:2525", "127.0.0.1:2525"], hostnameAddresses: [], ipv6: none))
        #expect(lab.warnings.isEmpty)
        #expect(lab.notes.count == 2)
        #expect(lab.notes.allSatisfy { $0.hasPrefix("inet_protocols enables IPv6 for delivery") })
        let mixed = SelfCheck.evaluate(
            Self.inputs(listeners: ["[::1]:2525", "0.0.0.0:2525"], hostnameAddresses: [], ipv6: none))
        #expect(mixed.warnings.count == 2)
        #expect(mixed.notes.isEmpty)
    }

    @Test("bind_address6 that is not local, and a failed name lookup")
    func bindAndLookup() {
        let report = SelfCheck.evaluate(
            Self.inputs(listeners: ["[::]:25"], hostnameAddresses: nil, bind6: "2001:db8:ffff::1"))
        #expect(
            report.warnings == [
                "hostname mx.lab.test could not be resolved: SERVFAIL",
                "bind_address6 2001:db8:ffff::1 is not an address of this host: IPv6 connects will fail",
            ])
        let local = SelfCheck.evaluate(
            Self.inputs(listeners: ["[::]:25"], hostnameAddresses: [], bind6: "2001:db8:1::25"))
        #expect(local.warnings.isEmpty)
    }

    @Test("/proc/net/if_inet6: a global address counts unless tentative; link-local and loopback do not")
    func ifInet6() {
        let linkOnly = """
            00000000000000000000000000000001 01 80 10 80       lo
            fe80000000000000000000fffe000001 02 40 20 80     eth0
            """
        #expect(!SelfCheck.hasGlobalAddress(ifInet6: linkOnly))
        #expect(
            SelfCheck.hasGlobalAddress(ifInet6: linkOnly + "\n20010db8000100000000000000000025 02 20 00 80     eth0"))
        #expect(!SelfCheck.hasGlobalAddress(ifInet6: "20010db8000100000000000000000025 02 20 00 c0     eth0"))
    }

    @Test("/proc/net/ipv6_route: prefix and default routes count; link-local, multicast, lo and reject do not")
    func ipv6Route() {
        let base = """
            fe800000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0
            00000000000000000000000000000001 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000002 00000000 80200001       lo
            ff000000000000000000000000000000 08 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0
            00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo
            """
        #expect(!SelfCheck.hasUsableRoute(ipv6Route: base))
        let prefix =
            "20010db8000000000000000000000000 20 00000000000000000000000000000000 00 "
            + "00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0"
        #expect(SelfCheck.hasUsableRoute(ipv6Route: base + "\n" + prefix))
        let gateway =
            "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
            + "fe800000000000000000000000000001 00000400 00000001 00000000 00000003     eth0"
        #expect(SelfCheck.hasUsableRoute(ipv6Route: base + "\n" + gateway))
    }

    @Test(
        "special-use host names are not sent to the system resolver",
        arguments: [
            ("localhost", true), ("mx.lab.example", true), ("mx.lab.test", true), ("mail.example.org", false),
        ])
    func specialUse(name: String, special: Bool) {
        #expect(SelfCheck.isSpecialUse(name) == special)
    }
}
