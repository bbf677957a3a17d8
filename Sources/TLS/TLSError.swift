internal import COpenSSL

/// Everything that can go wrong in this module. OpenSSL's thread-local error queue is turned into these values in
/// one place (`OpenSSLErrorQueue.drain()` and `TLSError.fromSSLGetError`), so no C code leaves the module.
public enum TLSError: Error, Equatable, Sendable, CustomStringConvertible {
    /// An OpenSSL call failed outside a handshake; `reasons` are the error-queue entries, oldest first.
    case openSSL(operation: String, reasons: [String])
    /// The TLS handshake failed (bad peer data, no shared version or cipher, alert from the peer, ...).
    case handshakeFailed(String)
    /// The peer's certificate did not verify (untrusted chain, expired, wrong host name). Only when verifying.
    case certificateVerificationFailed(String)
    /// The certificate or key file could not be loaded, or they do not match.
    case certificateUnavailable(String)
    /// The peer sent close_notify, or the session was shut down locally.
    case closed
    /// A caller-supplied value is unusable (for example a host name that cannot go into a certificate).
    case invalidArgument(String)
    /// A file operation failed while writing generated key material.
    case fileSystem(operation: String, path: String, errno: Int32)

    public var description: String {
        switch self {
        case .openSSL(let operation, let reasons):
            return reasons.isEmpty ? "\(operation) failed" : "\(operation) failed: \(reasons.joined(separator: "; "))"
        case .handshakeFailed(let reason):
            return "TLS handshake failed: \(reason)"
        case .certificateVerificationFailed(let reason):
            return "certificate verification failed: \(reason)"
        case .certificateUnavailable(let reason):
            return "certificate unavailable: \(reason)"
        case .closed:
            return "TLS session closed"
        case .invalidArgument(let reason):
            return "invalid argument: \(reason)"
        case .fileSystem(let operation, let path, let code):
            return "\(operation) \(path): \(String(cString: strerror(code)))"
        }
    }
}

/// Reads OpenSSL's per-thread error queue.
enum OpenSSLErrorQueue {
    /// Forget stale entries so that the next failure reports only its own reasons. Call before every OpenSSL call
    /// that can fail.
    static func clear() {
        ERR_clear_error()
    }

    /// Empties the queue and returns its entries, oldest first, as "library: reason (extra data)".
    static func drain() -> [String] {
        var reasons: [String] = []
        while true {
            var data: UnsafePointer<CChar>? = nil
            var flags: Int32 = 0
            let code = ERR_get_error_all(nil, nil, nil, &data, &flags)
            if code == 0 { break }
            let library = ERR_lib_error_string(code).map { String(cString: $0) } ?? "lib(\(ERR_GET_LIB(code)))"
            let reason = ERR_reason_error_string(code).map { String(cString: $0) } ?? "reason(\(code & 0x7F_FFFF))"
            var text = "\(library): \(reason)"
            if flags & ERR_TXT_STRING != 0, let data, data.pointee != 0 {
                text += " (\(String(cString: data)))"
            }
            reasons.append(text)
        }
        return reasons
    }

    /// `.openSSL` for `operation` with whatever the queue holds.
    static func error(_ operation: String) -> TLSError {
        .openSSL(operation: operation, reasons: drain())
    }
}
