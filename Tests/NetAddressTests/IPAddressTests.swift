import NetAddress
import Testing

@Suite struct IPAddressTests {
    @Test(arguments: [
        ("2001:db8::1", "2001:db8::1"),
        ("2001:0DB8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),
        ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),
        ("2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"),
        ("::", "::"),
        ("::1", "::1"),
        ("::ffff:192.0.2.1", "::ffff:192.0.2.1"),
        ("fe80::1", "fe80::1"),
    ])
    func ipv6CanonicalForm(input: String, expected: String) {
        #expect(IPv6Address(input)?.description == expected)
    }

    @Test(arguments: ["2001:db8::g", "1::2::3", "2001:db8:1:2:3:4:5:6:7", "", ":::", "fe80::1%eth0", "12345::1"])
    func invalidIPv6(input: String) {
        #expect(IPv6Address(input) == nil)
    }

    @Test(arguments: ["300.1.1.1", "1.2.3", "01.2.3.4", "1.2.3.4.5", "a.b.c.d", ""])
    func invalidIPv4(input: String) {
        #expect(IPv4Address(input) == nil)
    }

    @Test func smtpLiterals() {
        #expect(IPAddress(smtpLiteral: "[192.0.2.1]") == IPAddress("192.0.2.1"))
        #expect(IPAddress(smtpLiteral: "[IPv6:2001:db8::1]")?.smtpLiteral == "[IPv6:2001:db8::1]")
        #expect(IPAddress(smtpLiteral: "[2001:db8::1]") == nil)
        #expect(IPAddress(smtpLiteral: "[IPv6:1::2::3]") == nil)
        #expect(IPAddress(smtpLiteral: "[300.1.1.1]") == nil)
    }

    @Test func mappedAddressesFoldToIPv4() {
        #expect(IPAddress("::ffff:127.0.0.1")?.unmapped == IPAddress("127.0.0.1"))
        #expect(IPAddress("2001:db8::1")?.unmapped == IPAddress("2001:db8::1"))
    }

    @Test(arguments: [
        ("fe80::1", AddressClass.linkLocal), ("::ffff:192.0.2.1", .ipv4Mapped), ("::", .unspecified),
        ("ff02::1", .multicast), ("2002:c000:201::1", .sixToFour), ("2001:0:4136:e378::1", .teredo),
        ("fd00::1", .uniqueLocal), ("2001:db8::1", .documentation), ("2a00:1450::1", .global),
        ("169.254.1.1", .linkLocal), ("192.0.2.1", .documentation), ("10.1.2.3", .privateIPv4),
        ("0.0.0.0", .unspecified), ("224.0.0.1", .multicast), ("127.0.0.1", .loopback),
        ("3fff:0fff::1", .documentation), ("3fff:1000::1", .global), ("3ffe::1", .reserved),
    ])
    func classification(input: String, expected: AddressClass) {
        #expect(IPAddress(input)?.addressClass == expected)
    }

    @Test func cidrMatching() throws {
        let loopback = try #require(CIDR("127.0.0.0/8"))
        #expect(loopback.contains(IPAddress("127.0.0.2")!))
        #expect(loopback.contains(IPAddress("::ffff:127.0.0.1")!))
        #expect(!loopback.contains(IPAddress("128.0.0.1")!))
        let v6 = try #require(CIDR("[::1]/128"))
        #expect(v6.contains(IPAddress("::1")!))
        #expect(!v6.contains(IPAddress("::2")!))
        #expect(CIDR("192.0.2.0/33") == nil)
        #expect(try #require(CIDR("2001:db8::/32")).contains(IPAddress("2001:db8:ffff::1")!))
    }
}
