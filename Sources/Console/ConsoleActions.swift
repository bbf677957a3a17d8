import Spool

/// The console's write actions: the queue commands of the CLI, over `POST` with `Authorization: Bearer TOKEN`.
/// They exist only when a token is configured. No cookies and no side effects on GET, so another site cannot make
/// a browser perform them (a cross-site form can neither set the header nor read the answer).
public enum ConsoleAction: String, Sendable, CaseIterable {
    case flush, hold, release, delete, bounce
}

/// What an action did: success, or why not (`notFound` for an unknown id).
public enum ConsoleActionResult: Equatable, Sendable {
    case done(String)
    case notFound(String)
    case failed(String)
}

public enum BearerToken {
    /// The token from an `Authorization: Bearer ...` header (RFC 6750 §2.1); nil when absent or another scheme.
    public static func parse(_ header: String?) -> String? {
        guard let header else { return nil }
        let parts = header.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else { return nil }
        return String(parts[1])
    }

    /// Compares in time independent of where the first difference is, so the answer time tells nothing.
    public static func matches(_ offered: String, _ expected: String) -> Bool {
        let lhs = Array(offered.utf8)
        let rhs = Array(expected.utf8)
        var difference = UInt8(lhs.count == rhs.count ? 0 : 1)
        for index in 0..<rhs.count { difference |= (index < lhs.count ? lhs[index] : 0) ^ rhs[index] }
        return difference == 0
    }
}
