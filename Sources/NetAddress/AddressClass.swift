/// What kind of address a DNS answer or a peer gave us. The route planner drops the unusable ones
/// (link-local, multicast, unspecified, IPv4-mapped, ...) and `dualmta check` reports the doubtful ones.
public enum AddressClass: String, Sendable, Hashable, CustomStringConvertible {
    case global
    case unspecified
    case loopback
    case ipv4Mapped = "ipv4-mapped"
    case ipv4Compatible = "ipv4-compatible"
    case linkLocal = "link-local"
    case siteLocal = "site-local"
    case multicast
    case uniqueLocal = "unique-local"
    case documentation
    case sixToFour = "6to4"
    case teredo
    case nat64
    case reserved
    case privateIPv4 = "private"
    case sharedIPv4 = "shared-address-space"
    case broadcastOrReserved = "reserved-ipv4"

    public var description: String { rawValue }

    /// Addresses that can never carry mail to a remote host: the planner skips them with this reason.
    public var isUnusableForDelivery: Bool {
        switch self {
        case .unspecified, .ipv4Mapped, .ipv4Compatible, .linkLocal, .siteLocal, .multicast, .reserved,
            .broadcastOrReserved:
            return true
        case .global, .loopback, .uniqueLocal, .documentation, .sixToFour, .teredo, .nat64, .privateIPv4,
            .sharedIPv4:
            return false
        }
    }
}

extension IPAddress {
    public var addressClass: AddressClass {
        switch self {
        case .v4(let a): return a.addressClass
        case .v6(let a): return a.addressClass
        }
    }
}

extension IPv4Address {
    public var addressClass: AddressClass {
        let (a, b, c, _) = octets
        switch a {
        case 0: return value == 0 ? .unspecified : .broadcastOrReserved
        case 127: return .loopback
        case 10: return .privateIPv4
        case 169 where b == 254: return .linkLocal
        case 172 where (16...31).contains(b): return .privateIPv4
        case 192 where b == 168: return .privateIPv4
        case 100 where (64...127).contains(b): return .sharedIPv4
        case 224...239: return .multicast
        case 240...255: return .broadcastOrReserved
        default: break
        }
        if (a, b, c) == (192, 0, 2) || (a, b, c) == (198, 51, 100) || (a, b, c) == (203, 0, 113) {
            return .documentation
        }
        return .global
    }
}

extension IPv6Address {
    public var addressClass: AddressClass {
        let g = groups
        if g.allSatisfy({ $0 == 0 }) { return .unspecified }
        if g[0..<7].allSatisfy({ $0 == 0 }) && g[7] == 1 { return .loopback }
        if isIPv4Mapped { return .ipv4Mapped }
        if g[0..<6].allSatisfy({ $0 == 0 }) { return .ipv4Compatible }
        if g[0] & 0xffc0 == 0xfe80 { return .linkLocal }
        if g[0] & 0xffc0 == 0xfec0 { return .siteLocal }
        if g[0] & 0xff00 == 0xff00 { return .multicast }
        if g[0] & 0xfe00 == 0xfc00 { return .uniqueLocal }
        if g[0] == 0x2001 && g[1] == 0x0db8 { return .documentation }
        if g[0] == 0x3fff && g[1] & 0xf000 == 0 { return .documentation }  // 3fff::/20, RFC 9637
        if g[0] == 0x2002 { return .sixToFour }
        if g[0] == 0x2001 && g[1] == 0 { return .teredo }
        if g[0] == 0x64 && g[1] == 0xff9b { return .nat64 }
        if g[0] == 0x3ffe { return .reserved }  // returned 6bone space
        if g[0] == 0x2001 && (g[1] & 0xfff0 == 0x0010 || g[1] & 0xfff0 == 0x0020) { return .reserved }  // ORCHID
        if g[0] == 0x2001 && g[1] == 0x0002 && g[2] == 0 { return .reserved }  // benchmarking
        if g[0] == 0x0100 && g[1...3].allSatisfy({ $0 == 0 }) { return .reserved }  // discard-only
        return .global
    }

    /// The ISATAP interface identifier `0:5efe:a.b.c.d` / `200:5efe:a.b.c.d` (RFC 5214), if present.
    public var isatapIPv4: IPv4Address? {
        guard (groups[4] == 0 || groups[4] == 0x0200), groups[5] == 0x5efe else { return nil }
        return embeddedIPv4
    }
}

/// An address prefix such as `127.0.0.0/8` or `[::1]/128` (brackets optional), matched per family.
public struct CIDR: Hashable, Sendable, CustomStringConvertible {
    public let address: IPAddress
    public let prefixLength: Int

    public init?(_ text: String) {
        let pieces = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        var host = String(pieces[0])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard let address = IPAddress(host) else { return nil }
        let maximum = address.family == .ipv4 ? 32 : 128
        var length = maximum
        if pieces.count == 2 {
            guard let parsed = Int(pieces[1]), (0...maximum).contains(parsed), pieces[1].allSatisfy(\.isNumber)
            else { return nil }
            length = parsed
        }
        self.address = address
        self.prefixLength = length
    }

    public func contains(_ candidate: IPAddress) -> Bool {
        let candidate = candidate.unmapped
        guard candidate.family == address.family else { return false }
        let lhs = address.bytes
        let rhs = candidate.bytes
        var remaining = prefixLength
        for index in 0..<lhs.count where remaining > 0 {
            let bits = min(8, remaining)
            let mask = UInt8(truncatingIfNeeded: 0xff << (8 - bits))
            if lhs[index] & mask != rhs[index] & mask { return false }
            remaining -= bits
        }
        return true
    }

    public var description: String {
        address.family == .ipv6 ? "[\(address)]/\(prefixLength)" : "\(address)/\(prefixLength)"
    }
}
