import Glibc

/// Why a socket operation failed. System call failures keep the call name and errno so the caller can log
/// "connect: No route to host" and decide (e.g. RFC 3974: any connect failure → next address).
public enum SocketError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A system call failed; `call` is its name ("bind", "connect", "accept", "send", ...).
    case system(call: String, errno: Int32)
    /// An outbound connect did not complete within its timeout.
    case timedOut
    /// The connection is already closed.
    case closed
    /// The kernel does not support the address family (e.g. IPv6 disabled: socket() → EAFNOSUPPORT).
    case addressFamilyUnsupported
    /// The source address given for an outbound connect is of the other family than the destination.
    case familyMismatch(source: SocketAddress, remote: SocketAddress)

    public var description: String {
        switch self {
        case .system(let call, let code):
            return "\(call): \(errorText(code))"
        case .timedOut:
            return "connection timed out"
        case .closed:
            return "connection closed"
        case .addressFamilyUnsupported:
            return "address family not supported"
        case .familyMismatch(let source, let remote):
            return "source address \(source) and destination \(remote) are of different families"
        }
    }

    /// The errno of a `.system` error, nil otherwise.
    public var errnoCode: Int32? {
        if case .system(_, let code) = self { return code }
        return nil
    }
}

/// strerror text. glibc's strerror returns static strings for known codes (thread-safe since 2.32) and a
/// thread-local buffer for unknown ones, so reading it right away is safe.
private func errorText(_ code: Int32) -> String {
    guard let text = strerror(code) else { return "errno \(code)" }
    return String(cString: text)
}

extension SocketError {
    /// The `reason` label of a failed connect in the metrics: refused, unreachable, timeout or other.
    public var metricReason: String {
        switch self {
        case .timedOut: return "timeout"
        case .system(_, let code):
            switch code {
            case ECONNREFUSED: return "refused"
            case EHOSTUNREACH, ENETUNREACH, EADDRNOTAVAIL, EHOSTDOWN, ENETDOWN: return "unreachable"
            case ETIMEDOUT: return "timeout"
            default: return "other"
            }
        case .addressFamilyUnsupported: return "unreachable"
        case .closed, .familyMismatch: return "other"
        }
    }
}
