import DNS
import Foundation
import NetAddress
import Testing

/// SystemResolver against a real unbound on loopback (see LabDNSServer).
@Suite(.enabled(if: LabDNSServer.enabled, "unbound not installed (Debian package unbound); skipped outside CI"))
struct SystemResolverTests {
    @Test("MX with equal preferences: every record, preference and lowercased exchange")
    func equalPreferences() throws {
        try LabDNSServer.with { server in
            let answer = server.resolver().mx("EQ.lab.test.")
            guard case .records(let records, let canonicalName) = answer else {
                Issue.record("expected records, got \(answer)")
                return
            }
            #expect(canonicalName == nil)
            #expect(
                Set(records.map { "\($0.preference) \($0.exchange)" }) == [
                    "10 mx1.lab.test", "10 mx2.lab.test", "10 mx3.lab.test", "20 mx4.lab.test",
                ])
            #expect(records.allSatisfy { $0.ttl > 0 && $0.ttl <= 300 })
        }
    }

    @Test("A and AAAA answers")
    func addresses() throws {
        try LabDNSServer.with { server in
            let resolver = server.resolver()
            #expect(
                resolver.addresses("mx1.lab.test", family: .ipv4).records.map(\.address.description) == ["192.0.2.1"])
            #expect(
                resolver.addresses("mx1.lab.test", family: .ipv6).records.map(\.address.description) == ["2001:db8::1"])
            #expect(resolver.addresses("mx2.lab.test", family: .ipv6) == .noData)
        }
    }

    @Test("implicit MX: no MX records (NODATA), but A and AAAA")
    func implicitMX() throws {
        try LabDNSServer.with { server in
            let resolver = server.resolver()
            #expect(resolver.mx("implicit.lab.test") == .noData)
            #expect(
                resolver.addresses("implicit.lab.test", family: .ipv6).records.map(\.address.description)
                    == ["2001:db8::5"])
        }
    }

    @Test("null MX comes back as one record with the root exchange")
    func nullMX() throws {
        try LabDNSServer.with { server in
            #expect(
                server.resolver().mx("null.lab.test")
                    == .records(
                        [MXRecord(preference: 0, exchange: "", ttl: 300)], canonicalName: nil))
        }
    }

    @Test("NXDOMAIN and NODATA are told apart")
    func nxdomainAndNodata() throws {
        try LabDNSServer.with { server in
            let resolver = server.resolver()
            #expect(resolver.mx("nosuch.lab.test") == .noSuchDomain)
            #expect(resolver.addresses("nosuch.lab.test", family: .ipv4) == .noSuchDomain)
            #expect(resolver.mx("nodata.lab.test") == .noData)
            #expect(resolver.addresses("nodata.lab.test", family: .ipv6) == .noData)
        }
    }

    @Test("CNAME: an MX target that is a CNAME, and a CNAME'd domain, report the canonical name")
    func cnames() throws {
        try LabDNSServer.with { server in
            let resolver = server.resolver()
            #expect(resolver.mx("cnametarget.lab.test").records.map(\.exchange) == ["alias.lab.test"])
            let target = resolver.addresses("alias.lab.test", family: .ipv4)
            #expect(
                target
                    == .records(
                        [AddressRecord(address: .v4(IPv4Address(192, 0, 2, 1)), ttl: 300)],
                        canonicalName: "mx1.lab.test"))
            guard case .records(let records, let canonicalName) = resolver.mx("cdom.lab.test") else {
                Issue.record("expected the MX records of eq.lab.test")
                return
            }
            #expect(canonicalName == "eq.lab.test")
            #expect(records.count == 4)
            #expect(resolver.addresses("dangling.lab.test", family: .ipv4) == .noSuchDomain)
        }
    }

    @Test("T1.15 a 40-record MX set (truncated over UDP) comes back complete over TCP")
    func truncatedRetriedOverTCP() throws {
        try LabDNSServer.with { server in
            let answer = server.resolver().mx("big.lab.test")
            let records = answer.records.sorted { $0.preference < $1.preference }
            #expect(records.count == 40)
            #expect(records.map(\.exchange) == LabDNSServer.bigMXHosts)
            #expect(records.map(\.preference) == (1...40).map { UInt16($0) })
        }
    }

    @Test("REFUSED and timeout are temporary failures")
    func temporaryFailures() throws {
        try LabDNSServer.with { server in
            let resolver = server.resolver(timeout: 1, attempts: 1)
            guard case .temporaryFailure = resolver.mx("refused.test") else {
                Issue.record("REFUSED must be temporary")
                return
            }
            let started = Date()
            guard case .temporaryFailure = resolver.mx("dropped.test") else {
                Issue.record("a timeout must be temporary")
                return
            }
            #expect(Date().timeIntervalSince(started) < 10)
        }
    }

    @Test("an IPv6 name server (::1) is used through glibc's _ext.nsaddrs")
    func ipv6NameServer() throws {
        try LabDNSServer.with { server in
            let resolver = server.resolver([server.ipv6])
            #expect(resolver.mx("eq.lab.test").records.count == 4)
            #expect(resolver.mx("big.lab.test").records.count == 40)
        }
    }

    @Test("mixed server list: a dead IPv4 server first, then ::1, then 127.0.0.1")
    func mixedServers() throws {
        try LabDNSServer.with { server in
            let dead = NameServer(address: .v4(IPv4Address(127, 0, 0, 1)), port: 9)
            let resolver = server.resolver([dead, server.ipv6, server.ipv4], timeout: 1, attempts: 1)
            #expect(
                resolver.addresses("mx4.lab.test", family: .ipv4).records.map(\.address.description)
                    == ["192.0.2.4"])
        }
    }

    @Test("invalid names are NXDOMAIN without a query")
    func invalidNames() {
        let resolver = SystemResolver(servers: [NameServer(address: .v4(IPv4Address(127, 0, 0, 1)), port: 9)])
        #expect(resolver.mx("") == .noSuchDomain)
        #expect(resolver.mx("a..b") == .noSuchDomain)
        #expect(resolver.mx(String(repeating: "a", count: 64) + ".test") == .noSuchDomain)
    }
}
