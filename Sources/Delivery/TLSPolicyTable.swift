import DNS
import NetAddress
import Routing
import SMTPProtocol

/// `smtp_tls_policy`: outbound STARTTLS per destination, e.g. `example.net=encrypt, [192.0.2.7]=none, *=may`, so one
/// lab sink without STARTTLS does not force `smtp_tls = may` everywhere.
///
/// Patterns: a domain (`example.net`), a domain and its subdomains (`.example.net`), a next-hop address
/// (`[192.0.2.7]`, `[IPv6:2001:db8::7]` or `[2001:db8::7]`), or `*`. The recipient's domain is asked first (exact,
/// then the longest suffix), then the address being connected to, then `*`; nothing matching means `smtp_tls`.
/// A domain is what the user names; an address entry covers a host whatever names point at it.
public struct TLSPolicyTable: Sendable, Equatable, CustomStringConvertible {
    public enum Pattern: Hashable, Sendable, CustomStringConvertible {
        case domain(String)
        case subdomains(String)
        case address(IPAddress)
        case any

        public var description: String {
            switch self {
            case .domain(let name): return name
            case .subdomains(let name): return "." + name
            case .address(let address): return address.bracketed
            case .any: return "*"
            }
        }
    }

    public struct Entry: Hashable, Sendable, CustomStringConvertible {
        public var pattern: Pattern
        public var policy: ClientTLSPolicy

        public var description: String { "\(pattern)=\(policy.rawValue)" }
    }

    public var entries: [Entry]

    public init(_ entries: [Entry] = []) { self.entries = entries }

    /// Parses the config value; entries separated by commas or blanks, blanks around `=` allowed.
    public init(parsing text: String) throws(TLSPolicyTableError) {
        var entries: [Entry] = []
        var seen = Set<Pattern>()
        for entry in KeyValueList.entries(text) {
            guard let equals = entry.firstIndex(of: "=") else { throw .missingEquals(entry) }
            let key = String(entry[..<equals])
            let value = entry[entry.index(after: equals)...].lowercased()
            guard let pattern = Self.pattern(key) else { throw .badPattern(entry) }
            guard let policy = ClientTLSPolicy(rawValue: value) else { throw .badPolicy(entry) }
            guard seen.insert(pattern).inserted else { throw .duplicate(entry) }
            entries.append(Entry(pattern: pattern, policy: policy))
        }
        self.entries = entries
    }

    static func pattern(_ text: String) -> Pattern? {
        if text == "*" { return .any }
        if text.hasPrefix("[") && text.hasSuffix("]") {
            let inner = String(text.dropFirst().dropLast())
            return (IPAddress(smtpLiteral: Substring(text)) ?? IPAddress(inner)).map(Pattern.address)
        }
        let isSuffix = text.hasPrefix(".")
        let name = DNSName.normalized(String(isSuffix ? text.dropFirst() : Substring(text)))
        let labels = name.split(separator: ".", omittingEmptySubsequences: false)
        guard !name.isEmpty,
            labels.allSatisfy({ label in
                !label.isEmpty
                    && label.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }
            })
        else { return nil }
        return isSuffix ? .subdomains(name) : .domain(name)
    }

    /// The policy for a recipient domain reached at `address`; nil when no entry applies (then `smtp_tls` does).
    public func policy(domain: String, address: IPAddress?) -> ClientTLSPolicy? {
        let name = DNSName.normalized(domain)
        for entry in entries where entry.pattern == .domain(name) { return entry.policy }
        var best: (length: Int, policy: ClientTLSPolicy)? = nil
        for entry in entries {
            guard case .subdomains(let parent) = entry.pattern, name.hasSuffix("." + parent) else { continue }
            if parent.count > (best?.length ?? -1) { best = (parent.count, entry.policy) }
        }
        if let best { return best.policy }
        if let address {
            for entry in entries where entry.pattern == .address(address) { return entry.policy }
        }
        return entries.first { $0.pattern == .any }?.policy
    }

    public var description: String { entries.map(\.description).joined(separator: ", ") }
}

public enum TLSPolicyTableError: Error, Equatable, Sendable, CustomStringConvertible {
    case missingEquals(String)
    case badPattern(String)
    case badPolicy(String)
    case duplicate(String)

    public var description: String {
        switch self {
        case .missingEquals(let entry): return "\"\(entry)\": expected DESTINATION=none|may|encrypt"
        case .badPattern(let entry):
            return "\"\(entry)\": the destination must be a domain, .domain, [address] or *"
        case .badPolicy(let entry): return "\"\(entry)\": the policy must be none, may or encrypt"
        case .duplicate(let entry): return "\"\(entry)\": this destination is listed twice"
        }
    }
}

extension OutboundConfiguration {
    /// The STARTTLS policy of one attempt: `smtp_tls_policy` for the recipients' domain and the attempt's address,
    /// else `smtp_tls`.
    public func tlsPolicy(for attempt: PlannedAttempt, recipients: [String]) -> ClientTLSPolicy {
        let domain = recipients.first.map { String($0.split(separator: "@").last ?? "") } ?? ""
        return tlsPolicyTable.policy(domain: domain, address: attempt.address) ?? tlsPolicy
    }

    /// The name sent as SNI on STARTTLS: the MX (or route) host name; none for an address literal.
    public func tlsServerName(for attempt: PlannedAttempt) -> String? {
        attempt.mxHost.hasPrefix("[") || attempt.mxHost.isEmpty || IPAddress(attempt.mxHost) != nil
            ? nil : attempt.mxHost
    }
}
