/// DNS: the questions the outbound engine asks (MX, A, AAAA) and their typed answers.
///
/// `DNSResolver` is the seam: the route planner's gatherer (`Routing.RouteResolver`) talks to this protocol,
/// tests hand it recorded answers, and `SystemResolver` answers it over glibc's libresolv (`res_nquery`,
/// `ns_initparse`/`ns_parserr`/`dn_expand`; no DNS wire parser of our own). Names are absolute (FQDNs):
/// search-list expansion is off. Resolution blocks the calling thread: run it on a work queue, never on a
/// connection's event loop.

import NetAddress

/// One MX record. `exchange` is lowercased without the trailing dot; the root (`.`, RFC 7505 null MX) is "".
public struct MXRecord: Hashable, Sendable {
    public var preference: UInt16
    public var exchange: String
    public var ttl: UInt32

    public init(preference: UInt16, exchange: String, ttl: UInt32 = 3600) {
        self.preference = preference
        self.exchange = DNSName.normalized(exchange)
        self.ttl = ttl
    }

    /// RFC 7505: an exchange of "." means "this domain accepts no mail".
    public var isNullMX: Bool { exchange.isEmpty }
}

/// One A or AAAA record.
public struct AddressRecord: Hashable, Sendable {
    public var address: IPAddress
    public var ttl: UInt32

    public init(address: IPAddress, ttl: UInt32 = 3600) {
        self.address = address
        self.ttl = ttl
    }
}

/// The outcome of one question. `canonicalName` is set when a CNAME chain was followed to reach the records.
public enum DNSAnswer<Record: Sendable>: Sendable {
    case records([Record], canonicalName: String?)
    /// NXDOMAIN: the name does not exist.
    case noSuchDomain
    /// NOERROR without records of the asked type.
    case noData
    /// SERVFAIL, REFUSED, timeout, malformed answer: ask again later.
    case temporaryFailure(String)

    /// The records, or [] for every other outcome.
    public var records: [Record] {
        if case .records(let found, _) = self { return found }
        return []
    }
}

extension DNSAnswer: Equatable where Record: Equatable {}

/// Something that answers the outbound engine's DNS questions. Implementations may block.
public protocol DNSResolver: Sendable {
    func mx(_ name: String) -> DNSAnswer<MXRecord>
    func addresses(_ name: String, family: AddressFamily) -> DNSAnswer<AddressRecord>
}

/// Name helpers shared by the resolver and the planner.
public enum DNSName {
    /// Lowercased, without the trailing dot; the root "." becomes "".
    public static func normalized(_ name: String) -> String {
        var text = name.lowercased()
        if text.hasSuffix(".") { text.removeLast() }
        return text
    }
}
