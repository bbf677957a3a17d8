import Spool

/// Remote attempts per address family, split into sent and not sent (pure: counted from journal events).
public struct FamilyCounts: Equatable, Sendable {
    public struct Count: Equatable, Sendable {
        public var attempts = 0
        public var sent = 0
        public var failed: Int { attempts - sent }
    }

    public var byFamily: [String: Count] = [:]

    public init(_ events: [HistoryEvent]) {
        for event in events where event.event == "attempt" {
            let family = event["family"] ?? "unknown"
            byFamily[family, default: Count()].attempts += 1
            if event["result"] == "sent" { byFamily[family, default: Count()].sent += 1 }
        }
    }

    /// IPv6 first, then IPv4, then anything else by name.
    public var families: [String] {
        byFamily.keys.sorted { lhs, rhs in
            let order = ["ipv6": 0, "ipv4": 1]
            return (order[lhs] ?? 2, lhs) < (order[rhs] ?? 2, rhs)
        }
    }
}
