internal import COpenSSL

/// Shared TLS configuration (an OpenSSL `SSL_CTX`): protocol floor, options, certificate and key, trust store.
///
/// Confinement invariant for `@unchecked Sendable`: the `SSL_CTX` is fully configured inside the factory methods and
/// never modified afterwards; OpenSSL allows concurrent `SSL_new` on an unchanging context (its reference count is
/// atomic). So one context may be shared by every connection of a listener or of the delivery engine.
public final class TLSContext: @unchecked Sendable {
    /// Which side of the handshake sessions made from this context take.
    enum Kind: Sendable {
        case server
        case client(verifyPeer: Bool)
    }

    let context: OpaquePointer
    let kind: Kind

    private init(context: OpaquePointer, kind: Kind) {
        self.context = context
        self.kind = kind
    }

    deinit {
        SSL_CTX_free(context)
    }

    /// The context's SSL_OP_* bits, for tests.
    var options: UInt64 {
        SSL_CTX_get_options(context)
    }

    /// The server's TLS 1.2 suites by default: Mozilla's "intermediate" profile, i.e. only forward-secret key
    /// exchange (ECDHE, DHE) with AEAD ciphers (AES-GCM, ChaCha20-Poly1305). No static-RSA key exchange, no CBC, no
    /// SHA-1 MAC. TLS 1.3 suites are set apart by OpenSSL and are all of that kind already.
    public static let intermediateCiphers =
        "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
        + "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
        + "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305"

    /// Whether OpenSSL accepts `ciphers` as a TLS 1.2 cipher list that selects at least one suite.
    public static func isUsableCipherList(_ ciphers: String) -> Bool {
        guard !ciphers.isEmpty, let ctx = SSL_CTX_new(TLS_server_method()) else { return false }
        defer {
            SSL_CTX_free(ctx)
            OpenSSLErrorQueue.clear()
        }
        return SSL_CTX_set_cipher_list(ctx, ciphers) == 1
    }

    /// Server context: TLS 1.2 minimum, modern defaults (no compression, no renegotiation, server cipher preference).
    ///
    /// - Parameters:
    ///   - certificateFile: PEM file with the certificate first, then any intermediate certificates.
    ///   - keyFile: PEM file with the private key matching the certificate.
    ///   - ciphers: the TLS 1.2 cipher list (`tls_ciphers`); TLS 1.3 keeps OpenSSL's suites.
    /// - Throws: `.certificateUnavailable` when either file cannot be read or they do not match; `.openSSL` when
    ///   OpenSSL cannot create the context or selects no cipher from `ciphers`.
    public static func server(
        certificateFile: String, keyFile: String, ciphers: String = intermediateCiphers
    ) throws(TLSError) -> TLSContext {
        let ctx = try makeContext(method: TLS_server_method(), minimumVersion: TLS1_2_VERSION)
        let result = TLSContext(context: ctx, kind: .server)  // from here on, deinit frees ctx on every exit
        _ = SSL_CTX_set_options(ctx, dualmta_SSL_OP_CIPHER_SERVER_PREFERENCE())
        OpenSSLErrorQueue.clear()
        guard SSL_CTX_set_cipher_list(ctx, ciphers) == 1 else {
            throw OpenSSLErrorQueue.error("SSL_CTX_set_cipher_list")
        }
        // DHE suites need Diffie-Hellman groups: OpenSSL's built-in ones, sized to the certificate's key.
        _ = dualmta_SSL_CTX_set_dh_auto(ctx, 1)
        // TLS 1.3 session tickets are only useful to clients that resume; MTAs rarely do, and unsolicited tickets
        // would leave post-handshake records for the peer to read before it can close cleanly.
        _ = SSL_CTX_set_num_tickets(ctx, 0)

        OpenSSLErrorQueue.clear()
        guard SSL_CTX_use_certificate_chain_file(ctx, certificateFile) == 1 else {
            throw .certificateUnavailable("\(certificateFile): \(OpenSSLErrorQueue.drain().joined(separator: "; "))")
        }
        OpenSSLErrorQueue.clear()
        guard SSL_CTX_use_PrivateKey_file(ctx, keyFile, SSL_FILETYPE_PEM) == 1 else {
            throw .certificateUnavailable("\(keyFile): \(OpenSSLErrorQueue.drain().joined(separator: "; "))")
        }
        OpenSSLErrorQueue.clear()
        guard SSL_CTX_check_private_key(ctx) == 1 else {
            let reasons = OpenSSLErrorQueue.drain().joined(separator: "; ")
            throw .certificateUnavailable("\(keyFile) does not match \(certificateFile): \(reasons)")
        }
        return result
    }

    /// Client context: TLS 1.2 minimum.
    ///
    /// - Parameters:
    ///   - verifyPeer: `false` for opportunistic TLS (RFC 7435): any certificate is accepted and the outcome of the
    ///     check is only reported (`TLSSession.peerCertificateVerified`). `true`: the handshake fails unless the chain
    ///     leads to a trusted root and the certificate names the session's `serverName`.
    ///   - caFile: PEM bundle of trusted roots; `nil` uses the system store (`/etc/ssl/certs`).
    /// - Throws: `.certificateUnavailable` when `caFile` cannot be loaded; `.openSSL` otherwise.
    public static func client(verifyPeer: Bool, caFile: String? = nil) throws(TLSError) -> TLSContext {
        try client(verifyPeer: verifyPeer, caFile: caFile, maximumVersion: nil, securityLevel: nil)
    }

    /// The full client factory. `maximumVersion` and `securityLevel` exist for tests that imitate legacy peers.
    static func client(
        verifyPeer: Bool, caFile: String?, maximumVersion: Int32?, securityLevel: Int32?
    ) throws(TLSError) -> TLSContext {
        // A legacy-peer imitation must be allowed to go below our own floor.
        let minimum = maximumVersion.map { min($0, TLS1_2_VERSION) } ?? TLS1_2_VERSION
        let ctx = try makeContext(method: TLS_client_method(), minimumVersion: minimum)
        let result = TLSContext(context: ctx, kind: .client(verifyPeer: verifyPeer))
        if let securityLevel {
            SSL_CTX_set_security_level(ctx, securityLevel)
        }
        if let maximumVersion {
            OpenSSLErrorQueue.clear()
            guard dualmta_SSL_CTX_set_max_proto_version(ctx, maximumVersion) == 1 else {
                throw OpenSSLErrorQueue.error("SSL_CTX_set_max_proto_version")
            }
        }
        // The chain is always checked, so an opportunistic session can still report whether the peer verified.
        SSL_CTX_set_verify(ctx, verifyPeer ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, nil)
        OpenSSLErrorQueue.clear()
        if let caFile {
            guard SSL_CTX_load_verify_locations(ctx, caFile, nil) == 1 else {
                throw .certificateUnavailable("\(caFile): \(OpenSSLErrorQueue.drain().joined(separator: "; "))")
            }
        } else {
            guard SSL_CTX_set_default_verify_paths(ctx) == 1 else {
                throw OpenSSLErrorQueue.error("SSL_CTX_set_default_verify_paths")
            }
        }
        return result
    }

    /// An `SSL_CTX` with the options both sides share. The caller owns the result.
    private static func makeContext(method: OpaquePointer?, minimumVersion: Int32) throws(TLSError) -> OpaquePointer {
        OpenSSLErrorQueue.clear()
        guard let ctx = SSL_CTX_new(method) else {
            throw OpenSSLErrorQueue.error("SSL_CTX_new")
        }
        guard dualmta_SSL_CTX_set_min_proto_version(ctx, minimumVersion) == 1 else {
            SSL_CTX_free(ctx)
            throw OpenSSLErrorQueue.error("SSL_CTX_set_min_proto_version")
        }
        // CRIME (compression) and renegotiation attacks: neither feature is needed by SMTP.
        _ = SSL_CTX_set_options(ctx, dualmta_SSL_OP_NO_COMPRESSION() | dualmta_SSL_OP_NO_RENEGOTIATION())
        // Swift arrays may move between a retried SSL_write and the first one; partial writes let a large
        // plaintext be written record by record.
        _ = dualmta_SSL_CTX_set_mode(
            ctx, Int(SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_ENABLE_PARTIAL_WRITE))
        return ctx
    }
}
