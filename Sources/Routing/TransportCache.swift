import DNS
import NetAddress

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// What delivery learned about transports (RFC 5321 §4.5.4.1 lets a sender remember failed hosts), as a value: the lead persists it under
/// `<spool>/state/` as JSON. Positive entries (destination → the MX address that last delivered) move that address
/// to the front of its own preference level; negative entries (address:port → dead until) skip connect-level
/// failures. Never record a 5xx reply here: that is about a message, not a host.
public struct TransportCache: Sendable, Hashable, Codable {
    public struct Success: Sendable, Hashable, Codable {
        public var mxHost: String
        public var endpoint: Endpoint
        public var expires: Date

        public var family: AddressFamily { endpoint.address.family }

        public init(mxHost: String, endpoint: Endpoint, expires: Date) {
            self.mxHost = DNSName.normalized(mxHost)
            self.endpoint = endpoint
            self.expires = expires
        }
    }

    public struct Failure: Sendable, Hashable, Codable {
        public var endpoint: Endpoint
        public var until: Date
        public var reason: String

        public init(endpoint: Endpoint, until: Date, reason: String = "") {
            self.endpoint = endpoint
            self.until = until
            self.reason = reason
        }
    }

    /// Destination (domain, normalized; or an address literal's text) → last working transport.
    public private(set) var successes: [String: Success]
    public private(set) var failures: [Endpoint: Failure]

    public init() {
        successes = [:]
        failures = [:]
    }

    /// A delivery to `endpoint` (MX `mxHost`) worked: remember it for `ttl` seconds and forget any failure of it.
    /// A live entry for the same transport keeps its expiry: the TTL counts from when the exception to the RFC 3974
    /// order began, so a busy destination still returns to its preferred family once the TTL has passed.
    public mutating func recordSuccess(
        destination: String, mxHost: String, endpoint: Endpoint, now: Date, ttl: TimeInterval
    ) {
        let key = DNSName.normalized(destination)
        failures[endpoint] = nil
        if let current = successes[key], current.expires > now, current.endpoint == endpoint,
            current.mxHost == mxHost
        {
            return
        }
        successes[key] = Success(mxHost: mxHost, endpoint: endpoint, expires: now.addingTimeInterval(ttl))
    }

    /// A connect-level failure (refused, unreachable, timeout, greeting/EHLO failure): skip the endpoint for `ttl`
    /// seconds (keep it at most the minimum retry interval). Drops a positive entry that points at it.
    public mutating func recordFailure(endpoint: Endpoint, now: Date, ttl: TimeInterval, reason: String = "") {
        failures[endpoint] = Failure(endpoint: endpoint, until: now.addingTimeInterval(ttl), reason: reason)
        for (destination, success) in successes where success.endpoint == endpoint {
            successes[destination] = nil
        }
    }

    /// The live positive entry for a destination.
    public func success(for destination: String, now: Date) -> Success? {
        guard let entry = successes[DNSName.normalized(destination)], entry.expires > now else { return nil }
        return entry
    }

    /// The end of the live negative entry for an endpoint.
    public func deadUntil(_ endpoint: Endpoint, now: Date) -> Date? {
        guard let entry = failures[endpoint], entry.until > now else { return nil }
        return entry.until
    }

    /// Drops expired entries (call before persisting).
    public mutating func prune(now: Date) {
        successes = successes.filter { $0.value.expires > now }
        failures = failures.filter { $0.value.until > now }
    }

    // JSON: lists rather than dictionaries keyed by structs, so the file stays readable.
    private enum CodingKeys: String, CodingKey { case successes, failures }
    private struct SuccessRow: Codable {
        var destination: String
        var entry: Success
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        successes = [:]
        failures = [:]
        for row in try container.decode([SuccessRow].self, forKey: .successes) {
            successes[row.destination] = row.entry
        }
        for failure in try container.decode([Failure].self, forKey: .failures) {
            failures[failure.endpoint] = failure
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        let rows = successes.sorted { $0.key < $1.key }.map { SuccessRow(destination: $0.key, entry: $0.value) }
        try container.encode(rows, forKey: .successes)
        let dead = failures.values.sorted {
            ($0.endpoint.address, $0.endpoint.port) < ($1.endpoint.address, $1.endpoint.port)
        }
        try container.encode(dead, forKey: .failures)
    }
}

extension Endpoint: Codable {
    private enum CodingKeys: String, CodingKey { case address, port }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let text = try container.decode(String.self, forKey: .address)
        guard let address = IPAddress(text) else {
            throw DecodingError.dataCorruptedError(
                forKey: .address, in: container, debugDescription: "bad address \(text)")
        }
        self.init(address: address, port: try container.decode(UInt16.self, forKey: .port))
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(address.description, forKey: .address)
        try container.encode(port, forKey: .port)
    }
}
