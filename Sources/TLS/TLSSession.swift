// Module TLS: OpenSSL (libssl 3) contexts and sessions over memory BIOs, with no socket in sight.
//
// A `TLSSession` is a byte filter: the connection driver feeds it ciphertext from the socket
// (`consumeFromNetwork`), asks it to make progress (`handshake`, `readPlaintext`, `writePlaintext`) and sends
// whatever ciphertext it produced (`getDataForNetwork`). STARTTLS therefore swaps a filter on the same non-blocking
// socket, as swift-nio-ssl's `SSLConnection` does. Results follow NIO's shape: `.incomplete` (OpenSSL's WANT_READ /
// WANT_WRITE: more network data needed), `.complete`, `.failed(TLSError)`.
//
// The driver's loop, after every socket read and after every call on the session:
//     session.consumeFromNetwork(bytesFromSocket)
//     switch session.handshake() { ... }          // or readPlaintext() once complete
//     send(session.getDataForNetwork())           // also after .complete and .failed (alerts, Finished, close_notify)
//
// RFC 3207 §4.2 / CVE-2011-0411: a session starts with empty BIOs and only sees bytes given to it
// after it was created. The driver must drop plaintext it buffered before the 220 reply (server) or after the
// 220 reply (client) instead of passing it on.
internal import COpenSSL

/// Outcome of one step of a non-blocking TLS operation (swift-nio-ssl's `AsyncOperationResult`).
public enum TLSResult<T> {
    /// OpenSSL needs more data from the network: send `getDataForNetwork()`, then wait for the peer.
    case incomplete
    case complete(T)
    case failed(TLSError)
}

extension TLSResult: Sendable where T: Sendable {}

/// One TLS connection over memory BIOs.
///
/// Confinement invariant for `@unchecked Sendable`: a session belongs to one connection and every call, including
/// the property getters, is made on that connection's serial queue. The `SSL` object and its BIOs are touched by
/// nothing else; the type is Sendable only so that it can be handed to that queue.
public final class TLSSession: @unchecked Sendable {
    public enum Role: Sendable, Equatable {
        case server
        /// `serverName` is sent as SNI (host names only, RFC 6066 §3) and is the name the certificate must carry.
        case client(serverName: String?)
    }

    private let context: TLSContext  // kept alive for the SSL object's lifetime (SSL_new also holds a reference)
    private let ssl: OpaquePointer
    private let networkIn: OpaquePointer  // ciphertext from the peer, read by OpenSSL
    private let networkOut: OpaquePointer  // ciphertext for the peer, written by OpenSSL
    private let verifyPeer: Bool
    /// Set once a fatal error occurred; later calls report it again instead of touching OpenSSL (which must not be
    /// used after SSL_ERROR_SSL / SSL_ERROR_SYSCALL, not even for SSL_shutdown).
    private var terminalError: TLSError?
    private var closeNotifyReceived = false
    private var shutdownSent = false

    /// Size of the buffer one SSL_read fills; a TLS record carries at most 16 KiB of plaintext.
    private static let readChunk = 16 * 1024

    /// - Throws: `.invalidArgument` when the role does not fit the context (a client role on a server context and vice
    ///   versa, or a verifying client without a server name, which could not check the host name); `.openSSL` when
    ///   OpenSSL cannot allocate the session.
    public init(context: TLSContext, role: Role) throws(TLSError) {
        var verifyPeer = false
        switch (context.kind, role) {
        case (.server, .server):
            break
        case (.client(let verify), .client(let serverName)):
            if verify && (serverName ?? "").isEmpty {
                throw .invalidArgument("a verifying client needs a server name to check the certificate against")
            }
            verifyPeer = verify
        case (.server, .client), (.client, .server):
            throw .invalidArgument("session role \(role) does not match the context")
        }

        OpenSSLErrorQueue.clear()
        guard let ssl = SSL_new(context.context) else {
            throw OpenSSLErrorQueue.error("SSL_new")
        }
        guard let networkIn = BIO_new(BIO_s_mem()) else {
            SSL_free(ssl)
            throw OpenSSLErrorQueue.error("BIO_new")
        }
        guard let networkOut = BIO_new(BIO_s_mem()) else {
            BIO_free(networkIn)
            SSL_free(ssl)
            throw OpenSSLErrorQueue.error("BIO_new")
        }
        // An empty input BIO means "retry later", never end of stream: the socket's EOF is the driver's business.
        _ = dualmta_BIO_set_mem_eof_return(networkIn, -1)
        _ = dualmta_BIO_set_mem_eof_return(networkOut, -1)
        SSL_set_bio(ssl, networkIn, networkOut)  // ssl now owns both BIOs

        self.context = context
        self.ssl = ssl
        self.networkIn = networkIn
        self.networkOut = networkOut
        self.verifyPeer = verifyPeer

        switch role {
        case .server:
            SSL_set_accept_state(ssl)
        case .client(let serverName):
            SSL_set_connect_state(ssl)
            if let serverName, !serverName.isEmpty {
                try configurePeerName(serverName)
            }
        }
    }

    deinit {
        SSL_free(ssl)  // frees both BIOs too
    }

    /// Names the expected peer: SNI for host names, and the identity certificate verification checks.
    private func configurePeerName(_ serverName: String) throws(TLSError) {
        let param = SSL_get0_param(ssl)
        OpenSSLErrorQueue.clear()
        if HostName.isIPAddress(serverName) {
            // RFC 6066 §3: "Literal IPv4 and IPv6 addresses are not permitted in HostName".
            guard X509_VERIFY_PARAM_set1_ip_asc(param, serverName) == 1 else {
                throw OpenSSLErrorQueue.error("X509_VERIFY_PARAM_set1_ip_asc")
            }
            return
        }
        guard SSL_set1_host(ssl, serverName) == 1 else {
            throw OpenSSLErrorQueue.error("SSL_set1_host")
        }
        // SNI is a courtesy; names OpenSSL refuses (over 255 bytes) do not stop the session.
        OpenSSLErrorQueue.clear()
        _ = dualmta_SSL_set_tlsext_host_name(ssl, serverName)
        OpenSSLErrorQueue.clear()
    }

    // MARK: - Network side

    /// Feed ciphertext received from the network.
    public func consumeFromNetwork(_ bytes: some Collection<UInt8>) {
        if bytes.isEmpty { return }
        let written: Void? = bytes.withContiguousStorageIfAvailable { buffer in
            writeToNetworkIn(UnsafeRawBufferPointer(buffer))
        }
        if written == nil {
            Array(bytes).withUnsafeBytes { writeToNetworkIn($0) }
        }
    }

    private func writeToNetworkIn(_ buffer: UnsafeRawBufferPointer) {
        guard var base = buffer.baseAddress else { return }
        var remaining = buffer.count
        while remaining > 0 {
            let chunk = Int32(min(remaining, Int(Int32.max)))
            // A memory BIO grows as needed; it fails only when malloc does, and then so will everything else.
            let n = BIO_write(networkIn, base, chunk)
            if n <= 0 { return }
            base += Int(n)
            remaining -= Int(n)
        }
    }

    /// Ciphertext to send to the peer now (empty if none). Call after every other operation, including failed ones:
    /// a failed handshake leaves the alert for the peer here.
    public func getDataForNetwork() -> [UInt8] {
        let pending = dualmta_BIO_ctrl_pending(networkOut)
        if pending <= 0 { return [] }
        return [UInt8](unsafeUninitializedCapacity: pending) { buffer, count in
            // A memory BIO hands out everything it holds in one read (up to Int32.max; the rest stays queued).
            let n = BIO_read(networkOut, buffer.baseAddress, Int32(clamping: buffer.count))
            count = max(0, Int(n))
        }
    }

    // MARK: - TLS operations

    /// Drive the handshake.
    ///
    /// - Returns: `.incomplete` when more network data is needed (send `getDataForNetwork()` first), `.complete` once
    ///   the handshake is done (still send `getDataForNetwork()`: a TLS 1.3 client's Finished is there), `.failed`
    ///   with `.handshakeFailed` or `.certificateVerificationFailed`.
    public func handshake() -> TLSResult<Void> {
        if let terminalError { return .failed(terminalError) }
        if isHandshakeComplete { return .complete(()) }
        OpenSSLErrorQueue.clear()
        let rc = SSL_do_handshake(ssl)
        if rc == 1 { return .complete(()) }
        switch classify(rc, operation: "SSL_do_handshake", inHandshake: true) {
        case .retry:
            return .incomplete
        case .closed:
            return fail(.handshakeFailed("peer closed the connection during the handshake"))
        case .fatal(let error):
            return fail(error)
        }
    }

    /// Decrypted application bytes available now (may be empty).
    ///
    /// - Returns: `.complete(bytes)`; `.failed(.closed)` once the peer's close_notify is read (bytes that came before
    ///   it are returned first); `.failed` with another error on a TLS error. Send `getDataForNetwork()` afterwards:
    ///   reading may produce protocol replies.
    public func readPlaintext() -> TLSResult<[UInt8]> {
        if let terminalError { return .failed(terminalError) }
        if closeNotifyReceived { return .failed(.closed) }
        // SSL_read drives an unfinished handshake itself; failures then are handshake failures.
        let inHandshake = !isHandshakeComplete
        var plaintext: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: Self.readChunk)
        while true {
            OpenSSLErrorQueue.clear()
            let rc = chunk.withUnsafeMutableBytes { SSL_read(ssl, $0.baseAddress, Int32($0.count)) }
            if rc > 0 {
                plaintext.append(contentsOf: chunk[0..<Int(rc)])
                continue
            }
            switch classify(rc, operation: "SSL_read", inHandshake: inHandshake) {
            case .retry:
                return .complete(plaintext)
            case .closed:
                closeNotifyReceived = true
                return plaintext.isEmpty ? .failed(.closed) : .complete(plaintext)
            case .fatal(let error):
                // Plaintext already decrypted is authentic; deliver it, and report the error on the next call.
                if plaintext.isEmpty { return fail(error) }
                terminalError = error
                return .complete(plaintext)
            }
        }
    }

    /// Encrypt application bytes; the records are queued for `getDataForNetwork()`.
    ///
    /// - Returns: `.complete` when all bytes were encrypted; `.incomplete` with nothing written while the handshake is
    ///   not finished; `.failed(.closed)` after `shutdown()` or the peer's close_notify; `.failed` on a TLS error.
    public func writePlaintext(_ bytes: [UInt8]) -> TLSResult<Void> {
        if let terminalError { return .failed(terminalError) }
        if shutdownSent || closeNotifyReceived { return .failed(.closed) }
        if !isHandshakeComplete { return .incomplete }
        return bytes.withUnsafeBytes { buffer -> TLSResult<Void> in
            guard var base = buffer.baseAddress else { return .complete(()) }
            var remaining = buffer.count
            while remaining > 0 {
                OpenSSLErrorQueue.clear()
                let rc = SSL_write(ssl, base, Int32(min(remaining, Int(Int32.max))))
                if rc > 0 {
                    base += Int(rc)
                    remaining -= Int(rc)
                    continue
                }
                switch classify(rc, operation: "SSL_write", inHandshake: false) {
                case .retry:
                    // Writing into a memory BIO after the handshake never waits (renegotiation is off).
                    return fail(.openSSL(operation: "SSL_write", reasons: ["unexpected retry after the handshake"]))
                case .closed:
                    closeNotifyReceived = true
                    return .failed(.closed)
                case .fatal(let error):
                    return fail(error)
                }
            }
            return .complete(())
        }
    }

    /// Queue close_notify for the peer (send it with `getDataForNetwork()`). Does nothing before the handshake is
    /// complete, after a fatal error, or when already called. Later writes fail with `.closed`.
    public func shutdown() {
        if terminalError != nil || shutdownSent || !isHandshakeComplete { return }
        shutdownSent = true
        OpenSSLErrorQueue.clear()
        // 0 = close_notify sent, waiting for the peer's; 1 = both done. Either way ours is in the output BIO.
        _ = SSL_shutdown(ssl)
        OpenSSLErrorQueue.clear()
    }

    // MARK: - State

    public var isHandshakeComplete: Bool {
        SSL_is_init_finished(ssl) == 1
    }

    /// The negotiated protocol, as OpenSSL names it: "TLSv1.3", "TLSv1.2". `nil` before the handshake completes.
    public var protocolVersion: String? {
        guard isHandshakeComplete, let name = SSL_get_version(ssl) else { return nil }
        return String(cString: name)
    }

    /// The negotiated cipher suite's OpenSSL name: "TLS_AES_256_GCM_SHA384", "ECDHE-RSA-AES256-GCM-SHA384".
    public var cipherName: String? {
        guard isHandshakeComplete, let cipher = SSL_get_current_cipher(ssl), let name = SSL_CIPHER_get_name(cipher)
        else { return nil }
        return String(cString: name)
    }

    /// Secret bits of the negotiated cipher (256 for AES-256), for Received headers and logs.
    public var cipherBits: Int? {
        guard isHandshakeComplete, let cipher = SSL_get_current_cipher(ssl) else { return nil }
        return Int(SSL_CIPHER_get_bits(cipher, nil))
    }

    /// The peer certificate's subject in RFC 2253 form ("CN=mx.example.org"); `nil` when the peer sent none
    /// (a server never asks its clients for one).
    public var peerCertificateSubject: String? {
        guard let certificate = SSL_get1_peer_certificate(ssl) else { return nil }
        defer { X509_free(certificate) }
        return X509Text.name(X509_get_subject_name(certificate))
    }

    /// Whether the peer's certificate chains to a trusted root and names the expected server (always `true` once a
    /// verifying client's handshake completed). An opportunistic client uses this for logging.
    public var peerCertificateVerified: Bool {
        guard isHandshakeComplete, let certificate = SSL_get1_peer_certificate(ssl) else { return false }
        X509_free(certificate)
        return SSL_get_verify_result(ssl) == X509_V_OK
    }

    // MARK: - Error mapping

    private enum Step {
        case retry
        case closed
        case fatal(TLSError)
    }

    /// Maps `SSL_get_error` for a non-positive return code, and the error queue, to a step (NIO's
    /// `BoringSSLError.fromSSLGetErrorResult`). The only place that interprets OpenSSL failure codes for a session.
    /// `inHandshake` is decided before the call: after a fatal error OpenSSL no longer reports the handshake finished.
    private func classify(_ returnCode: Int32, operation: String, inHandshake: Bool) -> Step {
        let code = SSL_get_error(ssl, returnCode)
        switch code {
        case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE:
            return .retry
        case SSL_ERROR_ZERO_RETURN:
            return .closed
        default:
            break
        }
        var reasons = OpenSSLErrorQueue.drain()
        if code == SSL_ERROR_SYSCALL && reasons.isEmpty {
            reasons = ["unexpected end of stream"]
        } else if code != SSL_ERROR_SSL && code != SSL_ERROR_SYSCALL {
            reasons.append("SSL_get_error \(code)")
        }
        if !inHandshake {
            return .fatal(.openSSL(operation: operation, reasons: reasons))
        }
        let verifyResult = SSL_get_verify_result(ssl)
        if verifyPeer && verifyResult != X509_V_OK {
            return .fatal(.certificateVerificationFailed(X509Text.verifyError(verifyResult)))
        }
        return .fatal(.handshakeFailed(reasons.isEmpty ? "unknown reason" : reasons.joined(separator: "; ")))
    }

    private func fail<T>(_ error: TLSError) -> TLSResult<T> {
        terminalError = error
        return .failed(error)
    }
}
