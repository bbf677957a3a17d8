import Glibc
import NetAddress

/// An IP address and a TCP port, for either family.
///
/// Text form: `127.0.0.1:2525` for IPv4, `[::1]:2525` for IPv6 (brackets are mandatory for IPv6).
/// Addresses read from the kernel (accept, getsockname) are unmapped: an IPv4 peer seen on an IPv6 socket as
/// `::ffff:a.b.c.d` is stored as the IPv4 address. `init(ip:port:)` stores what it is given.
public struct SocketAddress: Hashable, Sendable, CustomStringConvertible {
    public var ip: IPAddress
    public var port: UInt16

    public var family: AddressFamily { ip.family }

    public init(ip: IPAddress, port: UInt16) {
        self.ip = ip
        self.port = port
    }

    /// Parses `a.b.c.d:port` or `[ipv6]:port`; the port is 0...65535 in decimal. Zone indexes (`%eth0`) and
    /// unbracketed IPv6 are refused (`::1:25` is ambiguous).
    public init?(parsing text: String) {
        let characters = Substring(text)
        let addressPart: Substring
        let portPart: Substring
        if characters.hasPrefix("[") {
            guard let close = characters.firstIndex(of: "]") else { return nil }
            let afterClose = characters.index(after: close)
            guard afterClose < characters.endIndex, characters[afterClose] == ":" else { return nil }
            addressPart = characters[characters.index(after: characters.startIndex)..<close]
            portPart = characters[characters.index(after: afterClose)...]
            guard let v6 = IPv6Address(addressPart) else { return nil }
            guard let port = parsePort(portPart) else { return nil }
            self.init(ip: .v6(v6), port: port)
        } else {
            guard let colon = characters.lastIndex(of: ":") else { return nil }
            addressPart = characters[..<colon]
            portPart = characters[characters.index(after: colon)...]
            guard let v4 = IPv4Address(addressPart) else { return nil }
            guard let port = parsePort(portPart) else { return nil }
            self.init(ip: .v4(v4), port: port)
        }
    }

    public var description: String {
        switch ip {
        case .v4(let address): return "\(address):\(port)"
        case .v6(let address): return "[\(address)]:\(port)"
        }
    }

    /// Builds the address from a kernel `sockaddr_storage`; nil for families other than AF_INET/AF_INET6.
    init?(storage: sockaddr_storage) {
        var storage = storage
        switch Int32(storage.ss_family) {
        case AF_INET:
            let sin = withUnsafePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee }
            }
            let bytes = withUnsafeBytes(of: sin.sin_addr) { Array($0) }
            self.init(ip: .v4(IPv4Address(bytes: bytes)), port: UInt16(bigEndian: sin.sin_port))
        case AF_INET6:
            let sin6 = withUnsafePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { $0.pointee }
            }
            let bytes = withUnsafeBytes(of: sin6.sin6_addr) { Array($0) }
            let ip = IPAddress.v6(IPv6Address(bytes: bytes)).unmapped
            self.init(ip: ip, port: UInt16(bigEndian: sin6.sin6_port))
        default:
            return nil
        }
    }

    /// Calls `body` with this address as a `sockaddr` of the right family and its length.
    func withSockAddr<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
        switch ip {
        case .v4(let address):
            var sin = sockaddr_in()
            sin.sin_family = sa_family_t(AF_INET)
            sin.sin_port = port.bigEndian
            withUnsafeMutableBytes(of: &sin.sin_addr) { raw in
                for (index, byte) in address.bytes.enumerated() { raw[index] = byte }
            }
            return withUnsafePointer(to: &sin) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    body($0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
        case .v6(let address):
            var sin6 = sockaddr_in6()
            sin6.sin6_family = sa_family_t(AF_INET6)
            sin6.sin6_port = port.bigEndian
            withUnsafeMutableBytes(of: &sin6.sin6_addr) { raw in
                for (index, byte) in address.bytes.enumerated() { raw[index] = byte }
            }
            return withUnsafePointer(to: &sin6) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    body($0, socklen_t(MemoryLayout<sockaddr_in6>.size))
                }
            }
        }
    }
}

/// A decimal port 0...65535: ASCII digits only (no sign, no spaces), at most five of them.
private func parsePort(_ text: Substring) -> UInt16? {
    guard !text.isEmpty, text.count <= 5, text.allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
    guard let value = Int(text), value <= 65535 else { return nil }
    return UInt16(value)
}
