import DNS
import NetAddress

/// The next hop of a static route.
public enum RouteTarget: Hashable, Sendable, CustomStringConvertible {
    /// `[192.0.2.7]:2526`, `[::1]:10025`, `[IPv6:2001:db8::7]`: connect there, no DNS at all.
    case address(IPAddress, port: UInt16?)
    /// `relay.example:2526`: the host's A/AAAA (never its MX), like an implicit MX.
    case host(String, port: UInt16?)

    public var description: String {
        switch self {
        case .address(let address, let port):
            let text = "[\(address)]"
            return port.map { "\(text):\($0)" } ?? text
        case .host(let name, let port):
            return port.map { "\(name):\($0)" } ?? name
        }
    }
}

/// One `routes` entry: `example.net=[192.0.2.7]:2526`. The pattern is a domain, `.example.net` (any subdomain),
/// or `*` (everything not local).
public struct StaticRoute: Hashable, Sendable, CustomStringConvertible {
    public var pattern: String
    public var target: RouteTarget

    public init(pattern: String, target: RouteTarget) {
        self.pattern = pattern == "*" ? "*" : DNSName.normalized(pattern)
        self.target = target
    }

    public var description: String { "\(pattern)=\(target)" }
}

public enum StaticRouteError: Error, Hashable, Sendable, CustomStringConvertible {
    case missingEquals(String)
    case badPattern(String)
    case badTarget(String)

    public var description: String {
        switch self {
        case .missingEquals(let entry): return "route \"\(entry)\": expected DOMAIN=TARGET"
        case .badPattern(let entry): return "route \"\(entry)\": bad domain pattern"
        case .badTarget(let entry): return "route \"\(entry)\": bad target (use [address]:port or host:port)"
        }
    }
}

/// The `routes` setting: static next hops that bypass the MX lookup. Exact domains win over `.suffix` patterns,
/// longer suffixes over shorter ones, and `*` comes last.
public struct StaticRoutes: Hashable, Sendable {
    public var entries: [StaticRoute]

    public init(_ entries: [StaticRoute] = []) {
        self.entries = entries
    }

    /// Parses `example.net=[192.0.2.7]:2526, *=[::1]:10025` (entries separated by commas or spaces).
    public init(parsing text: String) throws(StaticRouteError) {
        var entries: [StaticRoute] = []
        // "\r\n" is one Character in Swift: list it, or a CRLF between two entries would glue them together.
        let items = text.split(whereSeparator: { [",", " ", "\t", "\n", "\r\n", "\r"].contains($0) })
        for item in items {
            let entry = String(item)
            guard let equals = entry.firstIndex(of: "=") else { throw .missingEquals(entry) }
            let pattern = String(entry[..<equals])
            let targetText = String(entry[entry.index(after: equals)...])
            guard StaticRoutes.isValidPattern(pattern) else { throw .badPattern(entry) }
            guard let target = StaticRoutes.parseTarget(targetText) else { throw .badTarget(entry) }
            entries.append(StaticRoute(pattern: pattern, target: target))
        }
        self.entries = entries
    }

    /// The route for `domain`, if any.
    public func route(for domain: String) -> StaticRoute? {
        let name = DNSName.normalized(domain)
        if let exact = entries.first(where: { $0.pattern == name }) { return exact }
        let suffixes = entries.filter { $0.pattern.hasPrefix(".") && name.hasSuffix($0.pattern) }
        if let best = suffixes.max(by: { $0.pattern.count < $1.pattern.count }) { return best }
        return entries.first(where: { $0.pattern == "*" })
    }

    private static func isValidPattern(_ pattern: String) -> Bool {
        if pattern == "*" { return true }
        let body = pattern.hasPrefix(".") ? pattern.dropFirst() : Substring(pattern)
        return !body.isEmpty && body.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == ".") }
    }

    static func parseTarget(_ text: String) -> RouteTarget? {
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return nil }
            let literal = text[...close]
            let inner = String(literal.dropFirst().dropLast())
            // `[::1]` (bare, as in the config example) and `[IPv6:::1]` (SMTP literal) are both accepted.
            guard let address = IPAddress(smtpLiteral: literal) ?? IPAddress(inner) else { return nil }
            let rest = text[text.index(after: close)...]
            if rest.isEmpty { return .address(address.unmapped, port: nil) }
            guard rest.hasPrefix(":"), let port = parsePort(rest.dropFirst()) else { return nil }
            return .address(address.unmapped, port: port)
        }
        if let v6 = IPv6Address(text) { return .address(.v6(v6), port: nil) }
        let pieces = text.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
        var port: UInt16?
        if pieces.count == 2 {
            guard let parsed = parsePort(pieces[1]) else { return nil }
            port = parsed
        }
        let host = String(pieces[0])
        if let v4 = IPv4Address(host) { return .address(.v4(v4), port: port) }
        let name = DNSName.normalized(host)
        guard !name.isEmpty, name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == ".") })
        else { return nil }
        return .host(name, port: port)
    }

    private static func parsePort(_ text: Substring) -> UInt16? {
        guard !text.isEmpty, text.count <= 5, text.allSatisfy({ $0.isASCII && $0.isNumber }), let value = UInt16(text),
            value > 0
        else { return nil }
        return value
    }
}
