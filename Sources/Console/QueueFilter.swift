import Spool

/// The queue page's filter and order, from the query string (`state`, `sender`, `rcpt`, `domain`, `sort`). Patterns
/// take `*` wildcards and compare case-insensitively. Pure, so it is table-tested.
public struct QueueFilter: Equatable, Sendable {
    public var state: RecipientState?
    public var sender: String?
    public var recipient: String?
    public var domain: String?
    public var sort: Order = .arrival

    public enum Order: String, Sendable, CaseIterable {
        case arrival, sender, next
    }

    public init() {}

    /// Nil for a value that is not understood (an unknown state or order), so the page can say 400.
    public init?(_ request: HTTPRequest) {
        func value(_ name: String) -> String? { request.parameter(name).flatMap { $0.isEmpty ? nil : $0 } }
        if let text = value("state") {
            guard let state = RecipientState(rawValue: text) else { return nil }
            self.state = state
        }
        sender = value("sender")
        recipient = value("rcpt")
        domain = value("domain")?.lowercased()
        if let text = value("sort") {
            guard let order = Order(rawValue: text) else { return nil }
            sort = order
        }
    }

    public var isEmpty: Bool { self == QueueFilter() }

    public func apply(_ envelopes: [Envelope]) -> [Envelope] {
        let kept = envelopes.filter { envelope in
            if let sender, !Self.matches(sender, envelope.sender) { return false }
            let recipients = envelope.recipients.filter { record in
                if let state, record.state != state { return false }
                if let pattern = recipient, !Self.matches(pattern, record.address) { return false }
                if let domain, Self.domain(of: record.address) != domain { return false }
                return true
            }
            return !recipients.isEmpty || (state == nil && self.recipient == nil && domain == nil)
        }
        switch sort {
        case .arrival: return kept.sorted { ($0.arrival, $0.id) < ($1.arrival, $1.id) }
        case .sender: return kept.sorted { ($0.sender.lowercased(), $0.id) < ($1.sender.lowercased(), $1.id) }
        case .next: return kept.sorted { ($0.nextAttempt, $0.id) < ($1.nextAttempt, $1.id) }
        }
    }

    static func domain(of address: String) -> String {
        address.lastIndex(of: "@").map { String(address[address.index(after: $0)...]).lowercased() } ?? ""
    }

    /// `*` matches any run of characters; everything else literally, ignoring case.
    static func matches(_ pattern: String, _ text: String) -> Bool {
        let pattern = Array(pattern.lowercased())
        let text = Array(text.lowercased())
        var p = 0
        var t = 0
        var star: Int?
        var resume = 0
        while t < text.count {
            if p < pattern.count, pattern[p] != "*", pattern[p] == text[t] {
                p += 1
                t += 1
            } else if p < pattern.count, pattern[p] == "*" {
                star = p
                resume = t
                p += 1
            } else if let star {
                p = star + 1
                resume += 1
                t = resume
            } else {
                return false
            }
        }
        while p < pattern.count, pattern[p] == "*" { p += 1 }
        return p == pattern.count
    }
}
