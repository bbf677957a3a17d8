import NetAddress

/// Failed AUTH attempts counted across connections, per client address and per user name, so a brute-force client
/// gains nothing by opening new or parallel connections. Pure (the time is passed in) and bounded: at most
/// `capacity` entries; an entry lapses `window` after its last failure, and when the table is full the entry with
/// the oldest failure makes room.
public struct AuthFailureTable: Sendable {
    public enum Key: Hashable, Sendable, CustomStringConvertible {
        case address(IPAddress)
        case user(String)

        public var isAddress: Bool {
            if case .address = self { return true }
            return false
        }

        public var description: String {
            switch self {
            case .address(let address): "address \(address)"
            case .user(let name): "user \(name)"
            }
        }
    }

    struct Entry: Equatable {
        var failures: Int
        var lastFailure: Double
    }

    /// Failures after which a key is refused until its entry lapses.
    public let limit: Int
    /// Seconds after the last failure at which an entry is forgotten.
    public let window: Double
    public let capacity: Int
    private(set) var entries: [Key: Entry] = [:]

    public init(limit: Int = 10, window: Double = 15 * 60, capacity: Int = 10_000) {
        self.limit = limit
        self.window = window
        self.capacity = capacity
    }

    /// The keys of one attempt: the client address always, the user name when it could be one (an arbitrary
    /// client string is not kept: it could be kilobytes long).
    public static func keys(address: IPAddress, user: String) -> [Key] {
        let client = Key.address(clientNetwork(address))
        return PasswordHash.isValidUserName(user) ? [client, .user(user)] : [client]
    }

    /// What counts as one client: an IPv4 address, or the /64 an IPv6 address is in (one host or one site usually
    /// has a whole /64, so counting single IPv6 addresses would not limit it at all).
    public static func clientNetwork(_ address: IPAddress) -> IPAddress {
        switch address.unmapped {
        case .v4(let v4): return .v4(v4)
        case .v6(let v6): return .v6(IPv6Address(groups: Array(v6.groups[0..<4]) + [0, 0, 0, 0]))
        }
    }

    /// The first of `keys` that is over the limit now, if any.
    public func blocked(_ keys: [Key], now: Double) -> Key? {
        keys.first { key in
            guard let entry = entries[key], now - entry.lastFailure < window else { return false }
            return entry.failures >= limit
        }
    }

    public mutating func recordFailure(_ keys: [Key], now: Double) {
        for key in keys {
            if var entry = entries[key], now - entry.lastFailure < window {
                entry.failures += 1
                entry.lastFailure = now
                entries[key] = entry
                continue
            }
            if entries[key] == nil && entries.count >= capacity { makeRoom(now: now) }
            entries[key] = Entry(failures: 1, lastFailure: now)
        }
    }

    /// A successful login clears the user's count (the address keeps its own).
    public mutating func recordSuccess(user: String) {
        entries[.user(user)] = nil
    }

    private mutating func makeRoom(now: Double) {
        entries = entries.filter { now - $0.value.lastFailure < window }
        guard entries.count >= capacity, let oldest = entries.min(by: { $0.value.lastFailure < $1.value.lastFailure })
        else { return }
        entries[oldest.key] = nil
    }
}
