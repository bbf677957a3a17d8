import DNS
import NetAddress

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// Where a message goes: a domain, or an address literal (`[192.0.2.1]`, `[IPv6:2001:db8::1]`) that skips DNS.
public enum Destination: Hashable, Sendable, CustomStringConvertible {
    case domain(String)
    case address(IPAddress)

    /// Accepts a domain, an address literal, or a whole address (`user@domain`, the part after the last `@`).
    /// A domain is lowercased and loses its trailing dot. IDNs must already be A-labels.
    public init?(parsing text: String) {
        var part = Substring(text)
        if let at = part.lastIndex(of: "@") { part = part[part.index(after: at)...] }
        if part.hasPrefix("[") {
            guard let address = IPAddress(smtpLiteral: part) else { return nil }
            self = .address(address.unmapped)
            return
        }
        let name = DNSName.normalized(String(part))
        guard !name.isEmpty, name.allSatisfy({ $0.isASCII && !$0.isWhitespace && $0 != "[" && $0 != "]" })
        else { return nil }
        self = .domain(name)
    }

    public var description: String {
        switch self {
        case .domain(let name): return name
        case .address(let address): return address.smtpLiteral
        }
    }
}

/// An (address, port) pair: a listener of ours, or a static next hop.
public struct Endpoint: Hashable, Sendable, CustomStringConvertible {
    public var address: IPAddress
    public var port: UInt16

    public init(address: IPAddress, port: UInt16) {
        self.address = address
        self.port = port
    }

    public var description: String {
        address.family == .ipv6 ? "[\(address)]:\(port)" : "\(address):\(port)"
    }
}

/// Who "we" are, for self-MX detection (RFC 5321 §5.1) and local delivery.
public struct LocalIdentity: Sendable, Hashable {
    /// `hostname` plus aliases, normalized (lowercase, no trailing dot).
    public var names: Set<String>
    /// Local interface addresses of both families. Loopback and unspecified addresses always count as local.
    public var addresses: Set<IPAddress>
    /// NAT/proxy public addresses (Postfix `proxy_interfaces`): self on any port, since a forwarder sits between.
    public var proxyAddresses: Set<IPAddress>
    /// Where we accept SMTP. A target address is self only if one of these would answer it.
    public var listeners: [Endpoint]
    /// Final destinations (`local_domains`); the hostname is always local too.
    public var localDomains: Set<String>
    public var hostname: String

    public init(
        hostname: String, aliases: [String] = [], addresses: Set<IPAddress> = [], proxyAddresses: Set<IPAddress> = [],
        listeners: [Endpoint] = [], localDomains: Set<String> = ["localhost"]
    ) {
        self.hostname = DNSName.normalized(hostname)
        self.names = Set(([hostname] + aliases).map(DNSName.normalized).filter { !$0.isEmpty })
        self.addresses = Set(addresses.map(\.unmapped))
        self.proxyAddresses = Set(proxyAddresses.map(\.unmapped))
        self.listeners = listeners.map { Endpoint(address: $0.address.unmapped, port: $0.port) }
        self.localDomains = Set(localDomains.map(DNSName.normalized))
    }

    public func isLocalDomain(_ domain: String) -> Bool {
        let name = DNSName.normalized(domain)
        return name == hostname || localDomains.contains(name)
    }

    public func isSelf(name: String) -> Bool { names.contains(DNSName.normalized(name)) }

    /// True when connecting to `address:port` would reach one of our own listeners (a loop). A local address on a
    /// port where we do not listen is not a loop (lab namespaces each have their own loopback).
    public func isSelf(address: IPAddress, port: UInt16) -> Bool {
        let target = address.unmapped
        if proxyAddresses.contains(target) { return true }
        let isLocal =
            addresses.contains(target) || target.addressClass == .loopback || target.addressClass == .unspecified
        return listeners.contains { listener in
            guard listener.port == port, listener.address.family == target.family else { return false }
            if listener.address == target { return true }
            return listener.address.addressClass == .unspecified && isLocal
        }
    }
}

/// What this host can use outbound (`inet_protocols`) and which family goes first in a level (`address_preference`).
public struct Capability: Sendable, Hashable {
    public var usableFamilies: Set<AddressFamily>
    public var preferredFamily: AddressFamily

    public init(usableFamilies: Set<AddressFamily> = [.ipv4, .ipv6], preferredFamily: AddressFamily = .ipv6) {
        self.usableFamilies = usableFamilies
        self.preferredFamily = preferredFamily
    }

    public static let dualStack = Capability()
    public static let ipv4Only = Capability(usableFamilies: [.ipv4])
    public static let ipv6Only = Capability(usableFamilies: [.ipv6])

    /// The usable families, preferred one first.
    public var familyOrder: [AddressFamily] {
        let other: AddressFamily = preferredFamily == .ipv6 ? .ipv4 : .ipv6
        return [preferredFamily, other].filter { usableFamilies.contains($0) }
    }

    /// "dual-stack", "IPv4-only", "IPv6-only" or "no usable family".
    public var summary: String {
        switch (usableFamilies.contains(.ipv4), usableFamilies.contains(.ipv6)) {
        case (true, true): return "dual-stack"
        case (true, false): return "IPv4-only"
        case (false, true): return "IPv6-only"
        case (false, false): return "no usable family"
        }
    }
}

/// The answers gathered for one destination. A missing answer for a question the planner needs counts as a
/// temporary failure, so a gatherer that skipped a question can never produce a permanent verdict.
public struct RouteLookups: Sendable {
    public var mx: DNSAnswer<MXRecord>?
    /// Per host name (normalized): its A and AAAA answers.
    public var hosts: [String: HostAddresses]

    public init(mx: DNSAnswer<MXRecord>? = nil, hosts: [String: HostAddresses] = [:]) {
        self.mx = mx
        self.hosts = [:]
        for (name, answers) in hosts { self.hosts[DNSName.normalized(name)] = answers }
    }

    public func addresses(of host: String) -> HostAddresses {
        hosts[DNSName.normalized(host)] ?? HostAddresses()
    }
}

/// The A and AAAA answers of one host; nil = not asked.
public struct HostAddresses: Sendable {
    public var ipv4: DNSAnswer<AddressRecord>?
    public var ipv6: DNSAnswer<AddressRecord>?

    public init(ipv4: DNSAnswer<AddressRecord>? = nil, ipv6: DNSAnswer<AddressRecord>? = nil) {
        self.ipv4 = ipv4
        self.ipv6 = ipv6
    }

    public subscript(family: AddressFamily) -> DNSAnswer<AddressRecord>? {
        get { family == .ipv4 ? ipv4 : ipv6 }
        set {
            if family == .ipv4 { ipv4 = newValue } else { ipv6 = newValue }
        }
    }
}

/// What to do when no MX host has an address of a family we can use (RFC 3974 §3
/// treats it like MX hosts without address records: delivery fails).
public enum FamilyMismatchPolicy: String, Sendable, Hashable, Codable {
    /// Permanent 5.4.4 at once (project default).
    case bounce
    /// Temporary 4.4.4: keep retrying until the queue lifetime ends.
    case `defer`
}

/// The routing settings of the config file: who we are, which families we can use, static routes, the MX port
/// and what to do on a family mismatch. The live `Router` holds one; `RoutingContext` adds the moment's state.
public struct RoutingPolicy: Sendable, Hashable {
    public var identity: LocalIdentity
    public var capability: Capability
    public var staticRoutes: StaticRoutes
    /// Port for MX hosts, implicit MX and address literals (25; tests use others).
    public var mxPort: UInt16
    public var familyMismatch: FamilyMismatchPolicy
    /// Loopback addresses in DNS answers are skipped unless this is set; lab tests that serve MX records pointing
    /// at 127.0.0.1 turn it on.
    public var acceptLoopbackFromDNS: Bool

    public init(
        identity: LocalIdentity, capability: Capability = .dualStack, staticRoutes: StaticRoutes = StaticRoutes(),
        mxPort: UInt16 = 25, familyMismatch: FamilyMismatchPolicy = .bounce, acceptLoopbackFromDNS: Bool = false
    ) {
        self.identity = identity
        self.capability = capability
        self.staticRoutes = staticRoutes
        self.mxPort = mxPort
        self.familyMismatch = familyMismatch
        self.acceptLoopbackFromDNS = acceptLoopbackFromDNS
    }
}

/// Everything besides the DNS answers that the planner needs, as plain values: the policy, the transport cache,
/// the clock value and the seed of the shuffle.
public struct RoutingContext: Sendable {
    public var policy: RoutingPolicy
    public var transportCache: TransportCache
    public var now: Date
    /// Seeds the shuffle of equal preferences: the same seed gives the same plan.
    public var seed: UInt64

    public init(
        policy: RoutingPolicy, transportCache: TransportCache = TransportCache(),
        now: Date = Date(timeIntervalSince1970: 0), seed: UInt64 = 0
    ) {
        self.policy = policy
        self.transportCache = transportCache
        self.now = now
        self.seed = seed
    }

    public init(
        identity: LocalIdentity, capability: Capability = .dualStack, staticRoutes: StaticRoutes = StaticRoutes(),
        mxPort: UInt16 = 25, familyMismatch: FamilyMismatchPolicy = .bounce, acceptLoopbackFromDNS: Bool = false,
        transportCache: TransportCache = TransportCache(), now: Date = Date(timeIntervalSince1970: 0), seed: UInt64 = 0
    ) {
        self.init(
            policy: RoutingPolicy(
                identity: identity, capability: capability, staticRoutes: staticRoutes, mxPort: mxPort,
                familyMismatch: familyMismatch, acceptLoopbackFromDNS: acceptLoopbackFromDNS),
            transportCache: transportCache, now: now, seed: seed)
    }
}
