/// NetAddress holds IP addresses as values: parsing, RFC 5952 text form, SMTP address literals,
/// classification for routing (link-local, mapped, ...) and CIDR matching. Pure, standard library only,
/// so the protocol core, the sockets layer, DNS and the route planner all share one definition.

/// The two address families dualmta speaks.
public enum AddressFamily: String, Sendable, Hashable, Codable, CaseIterable, CustomStringConvertible {
    case ipv4
    case ipv6

    public var description: String { rawValue }
}

/// A 32-bit IPv4 address.
public struct IPv4Address: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var octets: (UInt8, UInt8, UInt8, UInt8)

    public init(_ a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) {
        octets = (a, b, c, d)
    }

    public init(bytes: [UInt8]) {
        precondition(bytes.count == 4, "an IPv4 address has 4 bytes")
        octets = (bytes[0], bytes[1], bytes[2], bytes[3])
    }

    public var bytes: [UInt8] { [octets.0, octets.1, octets.2, octets.3] }

    public var value: UInt32 {
        UInt32(octets.0) << 24 | UInt32(octets.1) << 16 | UInt32(octets.2) << 8 | UInt32(octets.3)
    }

    /// Parses strict dotted-quad: four decimal parts 0...255, no leading zeros (they read as octal elsewhere).
    public init?(_ text: Substring) {
        var parts: [UInt8] = []
        for part in text.split(separator: ".", omittingEmptySubsequences: false) {
            guard !part.isEmpty, part.count <= 3, part.allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
            if part.count > 1 && part.first == "0" { return nil }
            guard let number = Int(part), number <= 255 else { return nil }
            parts.append(UInt8(number))
        }
        guard parts.count == 4 else { return nil }
        self.init(bytes: parts)
    }

    public init?(_ text: String) { self.init(Substring(text)) }

    public var description: String { "\(octets.0).\(octets.1).\(octets.2).\(octets.3)" }

    public static func == (lhs: IPv4Address, rhs: IPv4Address) -> Bool { lhs.value == rhs.value }
    public func hash(into hasher: inout Hasher) { hasher.combine(value) }
    public static func < (lhs: IPv4Address, rhs: IPv4Address) -> Bool { lhs.value < rhs.value }
}

/// A 128-bit IPv6 address, stored as eight 16-bit groups.
public struct IPv6Address: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var groups: [UInt16]

    public init(groups: [UInt16]) {
        precondition(groups.count == 8, "an IPv6 address has 8 groups")
        self.groups = groups
    }

    public init(bytes: [UInt8]) {
        precondition(bytes.count == 16, "an IPv6 address has 16 bytes")
        groups = (0..<8).map { UInt16(bytes[2 * $0]) << 8 | UInt16(bytes[2 * $0 + 1]) }
    }

    public var bytes: [UInt8] { groups.flatMap { [UInt8($0 >> 8), UInt8($0 & 0xff)] } }

    /// Parses RFC 4291 text: hex groups, one `::`, optional embedded dotted quad at the end.
    /// A zone index (`%eth0`) is refused: it has no meaning in mail routing.
    public init?(_ text: Substring) {
        guard !text.isEmpty, text.count <= 45, !text.contains("%") else { return nil }
        let halves = splitOnDoubleColon(String(text))
        guard halves.count <= 2 else { return nil }
        func parseSide(_ side: String, allowEmbeddedV4: Bool) -> [UInt16]? {
            if side.isEmpty { return [] }
            var result: [UInt16] = []
            let pieces = side.split(separator: ":", omittingEmptySubsequences: false)
            for (index, piece) in pieces.enumerated() {
                if allowEmbeddedV4 && index == pieces.count - 1 && piece.contains(".") {
                    guard let v4 = IPv4Address(piece) else { return nil }
                    result.append(UInt16(v4.octets.0) << 8 | UInt16(v4.octets.1))
                    result.append(UInt16(v4.octets.2) << 8 | UInt16(v4.octets.3))
                    continue
                }
                guard !piece.isEmpty, piece.count <= 4, piece.allSatisfy({ $0.isHexDigit && $0.isASCII }),
                    let group = UInt16(piece, radix: 16)
                else { return nil }
                result.append(group)
            }
            return result
        }
        if halves.count == 2 {
            guard let head = parseSide(halves[0], allowEmbeddedV4: false),
                let tail = parseSide(halves[1], allowEmbeddedV4: true),
                head.count + tail.count <= 7
            else { return nil }
            self.init(groups: head + Array(repeating: 0, count: 8 - head.count - tail.count) + tail)
        } else {
            guard let all = parseSide(halves[0], allowEmbeddedV4: true), all.count == 8 else { return nil }
            self.init(groups: all)
        }
    }

    public init?(_ text: String) { self.init(Substring(text)) }

    /// RFC 5952 text form: lowercase, no leading zeros, the longest run (≥ 2) of zero groups as `::`
    /// (the first one on a tie); IPv4-mapped addresses end in a dotted quad.
    public var description: String {
        if isIPv4Mapped, let v4 = embeddedIPv4 { return "::ffff:\(v4)" }
        var bestStart = -1
        var bestLength = 0
        var index = 0
        while index < 8 {
            if groups[index] == 0 {
                var end = index
                while end < 8 && groups[end] == 0 { end += 1 }
                if end - index > bestLength {
                    bestStart = index
                    bestLength = end - index
                }
                index = end
            } else {
                index += 1
            }
        }
        if bestLength < 2 { bestStart = -1 }
        func hex(_ range: Range<Int>) -> String {
            groups[range].map { String($0, radix: 16) }.joined(separator: ":")
        }
        if bestStart < 0 { return hex(0..<8) }
        return hex(0..<bestStart) + "::" + hex((bestStart + bestLength)..<8)
    }

    public var isIPv4Mapped: Bool { groups[0..<5].allSatisfy { $0 == 0 } && groups[5] == 0xffff }

    /// The IPv4 address in the last 32 bits (meaningful for mapped addresses).
    public var embeddedIPv4: IPv4Address? {
        IPv4Address(
            UInt8(groups[6] >> 8), UInt8(groups[6] & 0xff), UInt8(groups[7] >> 8), UInt8(groups[7] & 0xff))
    }

    public static func < (lhs: IPv6Address, rhs: IPv6Address) -> Bool {
        lhs.groups.lexicographicallyPrecedes(rhs.groups)
    }
}

/// An address of either family.
public enum IPAddress: Hashable, Sendable, Comparable, CustomStringConvertible {
    case v4(IPv4Address)
    case v6(IPv6Address)

    /// Parses either family's text form. `::ffff:a.b.c.d` stays IPv6 here; call `unmapped` to fold it.
    public init?(_ text: String) {
        if let v4 = IPv4Address(text) {
            self = .v4(v4)
        } else if let v6 = IPv6Address(text) {
            self = .v6(v6)
        } else {
            return nil
        }
    }

    public var family: AddressFamily {
        switch self {
        case .v4: return .ipv4
        case .v6: return .ipv6
        }
    }

    public var bytes: [UInt8] {
        switch self {
        case .v4(let a): return a.bytes
        case .v6(let a): return a.bytes
        }
    }

    /// An IPv4 peer seen on an IPv6 socket as `::ffff:a.b.c.d` is an IPv4 peer: treat and log it as one.
    public var unmapped: IPAddress {
        if case .v6(let a) = self, a.isIPv4Mapped, let v4 = a.embeddedIPv4 { return .v4(v4) }
        return self
    }

    public var description: String {
        switch self {
        case .v4(let a): return a.description
        case .v6(let a): return a.description
        }
    }

    /// The SMTP address-literal form (RFC 5321 §4.1.3): `[192.0.2.1]` or `[IPv6:2001:db8::1]`.
    public var smtpLiteral: String {
        switch self {
        case .v4(let a): return "[\(a)]"
        case .v6(let a): return "[IPv6:\(a)]"
        }
    }

    /// Parses an SMTP address literal including its brackets. The `IPv6:` tag is mandatory for IPv6
    /// (case-insensitive); other general-address-literal tags are not supported.
    public init?(smtpLiteral text: Substring) {
        guard text.hasPrefix("["), text.hasSuffix("]"), text.count >= 3 else { return nil }
        let inner = text.dropFirst().dropLast()
        if inner.count > 5, inner.prefix(5).lowercased() == "ipv6:" {
            guard let v6 = IPv6Address(inner.dropFirst(5)) else { return nil }
            self = .v6(v6)
        } else if let v4 = IPv4Address(inner) {
            self = .v4(v4)
        } else {
            return nil
        }
    }

    public static func < (lhs: IPAddress, rhs: IPAddress) -> Bool {
        switch (lhs, rhs) {
        case (.v4(let a), .v4(let b)): return a < b
        case (.v6(let a), .v6(let b)): return a < b
        case (.v4, .v6): return true
        case (.v6, .v4): return false
        }
    }
}

/// Splits at every `::` (stdlib only; Foundation's `components(separatedBy:)` is not available here).
private func splitOnDoubleColon(_ text: String) -> [String] {
    var parts: [String] = []
    var current = ""
    var iterator = Array(text)
    var index = 0
    while index < iterator.count {
        if iterator[index] == ":" && index + 1 < iterator.count && iterator[index + 1] == ":" {
            parts.append(current)
            current = ""
            index += 2
        } else {
            current.append(iterator[index])
            index += 1
        }
    }
    parts.append(current)
    iterator.removeAll()
    return parts
}
