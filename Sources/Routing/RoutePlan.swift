import NetAddress

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// The planner's decision for one destination.
public enum RouteVerdict: Sendable, Hashable, Codable {
    /// Try `RoutePlan.attempts` in order.
    case deliver
    /// The destination is ours: local delivery, no SMTP.
    case deliverLocally
    /// Bounce now: `status` is an RFC 3463 code such as "5.1.10".
    case permanentFailure(status: String, reason: String)
    /// Keep the message and retry later: `status` such as "4.4.3".
    case temporaryFailure(status: String, reason: String)

    public var status: String? {
        switch self {
        case .deliver, .deliverLocally: return nil
        case .permanentFailure(let status, _), .temporaryFailure(let status, _): return status
        }
    }

    public var description: String {
        switch self {
        case .deliver: return "deliver"
        case .deliverLocally: return "deliver locally"
        case .permanentFailure(let status, let reason): return "permanent failure \(status): \(reason)"
        case .temporaryFailure(let status, let reason): return "temporary failure \(status): \(reason)"
        }
    }
}

/// One connection to try, in plan order.
public struct PlannedAttempt: Sendable, Hashable, Codable {
    public var mxHost: String
    public var preference: UInt16
    public var endpoint: Endpoint
    /// Why this attempt is where it is, when that is not the plain rule (e.g. "cached transport moved to front").
    public var note: String?

    public var address: IPAddress { endpoint.address }
    public var port: UInt16 { endpoint.port }
    public var family: AddressFamily { endpoint.address.family }

    public init(mxHost: String, preference: UInt16, endpoint: Endpoint, note: String? = nil) {
        self.mxHost = mxHost
        self.preference = preference
        self.endpoint = endpoint
        self.note = note
    }
}

/// Something the planner left out, and why: `subject` is a host name or an address.
public struct SkippedEntry: Sendable, Hashable, Codable, CustomStringConvertible {
    public var subject: String
    public var reason: String

    public init(_ subject: String, _ reason: String) {
        self.subject = subject
        self.reason = reason
    }

    /// "mx20.example.test: no A record and IPv6 not usable".
    public var description: String { "\(subject): \(reason)" }
}

/// One MX record as the planner saw it, after sorting and shuffling.
public struct MXSetEntry: Sendable, Hashable, Codable {
    public var preference: UInt16
    /// "." for the root (null MX).
    public var host: String
    /// True for the implicit MX (no MX records: the domain itself, preference 0) and static route hosts.
    public var implicit: Bool
    /// "self (matched by address)", "pruned: preference 30 ≥ self", "numeric target", "null MX".
    public var note: String?

    public init(preference: UInt16, host: String, implicit: Bool = false, note: String? = nil) {
        self.preference = preference
        self.host = host
        self.implicit = implicit
        self.note = note
    }
}

/// The ordered plan for one destination. `dualmta route` prints `text`; delivery executes `attempts`.
public struct RoutePlan: Sendable, Hashable, Codable {
    /// The domain or address literal.
    public var destination: String
    /// How the next hops were found: "mx", "implicit mx", "static route X", "address literal", "local".
    public var source: String
    public var capability: String
    public var verdict: RouteVerdict
    public var attempts: [PlannedAttempt]
    public var skipped: [SkippedEntry]
    public var mxSet: [MXSetEntry]
    public var warnings: [String]

    public init(
        destination: String, source: String, capability: String, verdict: RouteVerdict,
        attempts: [PlannedAttempt] = [], skipped: [SkippedEntry] = [], mxSet: [MXSetEntry] = [], warnings: [String] = []
    ) {
        self.destination = destination
        self.source = source
        self.capability = capability
        self.verdict = verdict
        self.attempts = attempts
        self.skipped = skipped
        self.mxSet = mxSet
        self.warnings = warnings
    }

    /// The human form `dualmta route` prints: MX set by preference, the attempts in order (per level all AAAA,
    /// then all A, unless the preference is flipped), what was skipped and why, warnings, and the verdict.
    public var text: String {
        var lines = ["route for \(destination) via \(source) (this host: \(capability))"]
        if !mxSet.isEmpty {
            lines.append("MX set:")
            for entry in mxSet {
                var line = "  \(entry.preference) \(entry.host)"
                if entry.implicit { line += " (implicit)" }
                if let note = entry.note { line += "  [\(note)]" }
                lines.append(line)
            }
        }
        if !attempts.isEmpty {
            lines.append("attempts:")
            for (index, attempt) in attempts.enumerated() {
                var line = "  \(index + 1). \(attempt.mxHost) pref \(attempt.preference) \(attempt.family) "
                line += attempt.endpoint.description
                if let note = attempt.note { line += "  (\(note))" }
                lines.append(line)
            }
        }
        if !skipped.isEmpty {
            lines.append("skipped:")
            lines.append(contentsOf: skipped.map { "  \($0)" })
        }
        if !warnings.isEmpty {
            lines.append("warnings:")
            lines.append(contentsOf: warnings.map { "  \($0)" })
        }
        switch verdict {
        case .deliver: lines.append("verdict: deliver, \(attempts.count) attempt\(attempts.count == 1 ? "" : "s")")
        default: lines.append("verdict: \(verdict.description)")
        }
        return lines.joined(separator: "\n") + "\n"
    }
}
