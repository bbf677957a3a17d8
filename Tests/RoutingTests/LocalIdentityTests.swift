import NetAddress
import Routing
import Testing

@Suite struct LocalIdentityTests {
    let identity = LocalIdentity(
        hostname: "MX.Lab.Test.", aliases: ["alias.lab.test"], addresses: [ip("192.0.2.99"), ip("2001:db8::99")],
        proxyAddresses: [ip("203.0.113.9")],
        listeners: [Endpoint(address: ip("0.0.0.0"), port: 25), Endpoint(address: ip("2001:db8::99"), port: 2525)],
        localDomains: ["Local.Test"])

    @Test("names compare case-insensitively without the trailing dot")
    func names() {
        #expect(identity.isSelf(name: "mx.lab.test"))
        #expect(identity.isSelf(name: "ALIAS.lab.test."))
        #expect(!identity.isSelf(name: "other.lab.test"))
        #expect(identity.isLocalDomain("local.test.") && identity.isLocalDomain("mx.lab.test"))
    }

    @Test(
        "addresses are self only where a listener would answer",
        arguments: [
            ("192.0.2.99", UInt16(25), true), ("192.0.2.99", UInt16(2525), false),
            ("127.0.0.1", UInt16(25), true), ("0.0.0.0", UInt16(25), true), ("::ffff:192.0.2.99", UInt16(25), true),
            ("2001:db8::99", UInt16(2525), true), ("2001:db8::99", UInt16(25), false), ("::1", UInt16(25), false),
            ("198.51.100.1", UInt16(25), false), ("203.0.113.9", UInt16(25), true), ("203.0.113.9", UInt16(587), true),
        ])
    func addresses(text: String, port: UInt16, expected: Bool) {
        #expect(identity.isSelf(address: ip(text), port: port) == expected)
    }
}
