import Glibc
import NetAddress
import Testing

@testable import Sockets

@Suite struct SocketAddressTests {
    @Test(arguments: [
        ("[::]:2525", "[::]:2525", AddressFamily.ipv6, UInt16(2525)),
        ("0.0.0.0:2525", "0.0.0.0:2525", .ipv4, 2525),
        ("[2001:db8::1]:25", "[2001:db8::1]:25", .ipv6, 25),
        ("127.0.0.1:0", "127.0.0.1:0", .ipv4, 0),
        ("[::1]:65535", "[::1]:65535", .ipv6, 65535),
        ("[2001:DB8:0:0:0:0:0:1]:587", "[2001:db8::1]:587", .ipv6, 587),
        ("[::ffff:192.0.2.1]:25", "[::ffff:192.0.2.1]:25", .ipv6, 25),
    ])
    func parsesAndPrints(text: String, printed: String, family: AddressFamily, port: UInt16) throws {
        let parsed = try #require(SocketAddress(parsing: text))
        #expect(parsed.description == printed)
        #expect(parsed.family == family)
        #expect(parsed.port == port)
        #expect(SocketAddress(parsing: parsed.description) == parsed)
    }

    @Test(arguments: [
        "", "127.0.0.1", "127.0.0.1:", ":25", "127.0.0.1:65536", "127.0.0.1:-1", "127.0.0.1:+25", "127.0.0.1: 25",
        "::1:25", "[::1]", "[::1]25", "[::1]:", "[::1:25", "::1]:25", "[127.0.0.1]:25", "[fe80::1%eth0]:25",
        "localhost:25", "[::1]:123456", "1.2.3:25", "[::1]:2a", "01.2.3.4:25", "[::1]:25:", "127.0.0.1:٣",
    ])
    func refusesMalformed(text: String) {
        #expect(SocketAddress(parsing: text) == nil)
    }

    @Test func equalityAndHashingUseAddressAndPort() throws {
        let a = try address("[2001:db8::1]:25")
        let b = SocketAddress(ip: try #require(IPAddress("2001:db8:0::1")), port: 25)
        #expect(a == b)
        #expect(Set([a, b]).count == 1)
        #expect(a != SocketAddress(ip: a.ip, port: 26))
    }

    @Test func kernelIPv4RoundTrip() throws {
        let original = try address("192.0.2.33:2525")
        let decoded = try #require(
            original.withSockAddr { pointer, length in
                var storage = sockaddr_storage()
                withUnsafeMutableBytes(of: &storage) { raw in
                    raw.copyMemory(from: UnsafeRawBufferPointer(start: pointer, count: Int(length)))
                }
                return SocketAddress(storage: storage)
            })
        #expect(decoded == original)
    }

    @Test func kernelIPv6RoundTrip() throws {
        let original = try address("[2001:db8:1:2::3]:587")
        let decoded = try #require(
            original.withSockAddr { pointer, length in
                var storage = sockaddr_storage()
                withUnsafeMutableBytes(of: &storage) { raw in
                    raw.copyMemory(from: UnsafeRawBufferPointer(start: pointer, count: Int(length)))
                }
                return SocketAddress(storage: storage)
            })
        #expect(decoded == original)
        #expect(decoded.family == .ipv6)
    }

    /// An IPv4 peer on a dual-stack (V6ONLY=0) socket appears as ::ffff:a.b.c.d; it must come out as IPv4.
    @Test func mappedPeerIsStoredUnmapped() throws {
        var sin6 = sockaddr_in6()
        sin6.sin6_family = sa_family_t(AF_INET6)
        sin6.sin6_port = UInt16(40000).bigEndian
        let mapped: [UInt8] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 7]
        withUnsafeMutableBytes(of: &sin6.sin6_addr) { raw in
            for (index, byte) in mapped.enumerated() { raw[index] = byte }
        }
        var storage = sockaddr_storage()
        withUnsafeMutableBytes(of: &storage) { raw in
            withUnsafeBytes(of: sin6) { raw.copyMemory(from: $0) }
        }
        let decoded = try #require(SocketAddress(storage: storage))
        #expect(decoded.family == .ipv4)
        #expect(decoded.description == "192.0.2.7:40000")
    }

    @Test func unknownFamilyIsRefused() {
        var storage = sockaddr_storage()
        storage.ss_family = sa_family_t(AF_UNIX)
        #expect(SocketAddress(storage: storage) == nil)
    }
}
