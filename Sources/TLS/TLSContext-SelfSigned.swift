internal import COpenSSL

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Key algorithm for a generated certificate.
public enum TLSKeyType: Sendable, Equatable {
    /// RSA 2048: accepted by every TLS 1.2 peer, the safe default for opportunistic SMTP.
    case rsa2048
    /// ECDSA P-256: smaller and faster; every TLS 1.3 peer and nearly every TLS 1.2 peer supports it.
    case p256
}

extension TLSContext {
    /// Generates a self-signed certificate for `hostname` with the OpenSSL API (no shell-out) and writes it and its
    /// key as PEM files, each through a temporary file and rename so a crash never leaves half a file.
    ///
    /// The certificate: X.509 v3, random 127-bit serial, CN and subjectAltName = `hostname` (dNSName, or iPAddress
    /// for an address; CN only when at most 64 octets, the X.520 limit), valid from 5 minutes ago (clock skew) for
    /// `validityDays`, CA:FALSE, extendedKeyUsage serverAuth + clientAuth, SHA-256 signature.
    ///
    /// - Parameters:
    ///   - hostname: the server's name (`myhostname`), a DNS name or an IP address.
    ///   - certificateFile: written with mode 0644.
    ///   - keyFile: PKCS#8 PEM, written with mode 0600. Written before the certificate.
    ///   - keyType: `.rsa2048` (default) or `.p256`.
    ///   - validityDays: 3650 (10 years) by default.
    /// - Throws: `.invalidArgument` for a host name that is neither a DNS name nor an address, `.fileSystem` when a
    ///   file cannot be written, `.openSSL` when key generation or signing fails.
    public static func generateSelfSigned(
        hostname: String, certificateFile: String, keyFile: String, keyType: TLSKeyType = .rsa2048,
        validityDays: Int = 3650
    ) throws(TLSError) {
        // Checked before X509V3_EXT_conf_nid sees it: in its value syntax ("DNS:a,DNS:b") a comma would add names.
        let alternativeName: String
        if HostName.isIPAddress(hostname) {
            alternativeName = "IP:\(hostname)"
        } else if HostName.isValidDNSName(hostname) {
            alternativeName = "DNS:\(hostname)"
        } else {
            throw .invalidArgument("\"\(hostname)\" is not a DNS name or an IP address")
        }
        guard (1...36500).contains(validityDays) else {
            throw .invalidArgument("validity of \(validityDays) days")
        }

        let key = try generateKey(keyType)
        defer { EVP_PKEY_free(key) }
        let certificate = try makeCertificate(
            hostname: hostname, alternativeName: alternativeName, key: key, keyType: keyType,
            validityDays: validityDays)
        defer { X509_free(certificate) }

        let keyPEM = try pem("PEM_write_bio_PrivateKey") { PEM_write_bio_PrivateKey($0, key, nil, nil, 0, nil, nil) }
        let certificatePEM = try pem("PEM_write_bio_X509") { PEM_write_bio_X509($0, certificate) }
        try AtomicFile.replace(keyFile, with: keyPEM, mode: 0o600)
        try AtomicFile.replace(certificateFile, with: certificatePEM, mode: 0o644)
    }

    private static func generateKey(_ type: TLSKeyType) throws(TLSError) -> OpaquePointer {
        OpenSSLErrorQueue.clear()
        let key: OpaquePointer?
        switch type {
        case .rsa2048: key = dualmta_EVP_RSA_gen(2048)
        case .p256: key = dualmta_EVP_EC_gen("P-256")
        }
        guard let key else { throw OpenSSLErrorQueue.error("key generation") }
        return key
    }

    private static func makeCertificate(
        hostname: String, alternativeName: String, key: OpaquePointer, keyType: TLSKeyType, validityDays: Int
    ) throws(TLSError) -> OpaquePointer {
        OpenSSLErrorQueue.clear()
        guard let certificate = X509_new() else { throw OpenSSLErrorQueue.error("X509_new") }
        var done = false
        defer { if !done { X509_free(certificate) } }

        guard X509_set_version(certificate, Int(X509_VERSION_3)) == 1 else {
            throw OpenSSLErrorQueue.error("X509_set_version")
        }
        try setRandomSerial(certificate)
        guard X509_gmtime_adj(X509_getm_notBefore(certificate), -300) != nil,
            X509_time_adj_ex(X509_getm_notAfter(certificate), Int32(validityDays), 0, nil) != nil
        else { throw OpenSSLErrorQueue.error("X509_time_adj") }

        let name = X509_get_subject_name(certificate)
        if hostname.utf8.count <= 64 {
            guard X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, hostname, -1, -1, 0) == 1 else {
                throw OpenSSLErrorQueue.error("X509_NAME_add_entry_by_txt")
            }
        }
        guard X509_set_issuer_name(certificate, name) == 1, X509_set_pubkey(certificate, key) == 1 else {
            throw OpenSSLErrorQueue.error("X509_set_issuer_name")
        }

        // RSA keys may also be used for key transport in TLS 1.2 RSA kx suites; ECDSA keys only sign.
        let keyUsage = keyType == .rsa2048 ? "critical,digitalSignature,keyEncipherment" : "critical,digitalSignature"
        let extensions: [(Int32, String)] = [
            (NID_basic_constraints, "critical,CA:FALSE"),
            (NID_key_usage, keyUsage),
            (NID_ext_key_usage, "serverAuth,clientAuth"),
            (NID_subject_key_identifier, "hash"),
            (NID_subject_alt_name, alternativeName),
        ]
        var v3 = X509V3_CTX()
        X509V3_set_ctx(&v3, certificate, certificate, nil, nil, 0)
        for (nid, value) in extensions {
            guard let ext = X509V3_EXT_conf_nid(nil, &v3, nid, value) else {
                throw OpenSSLErrorQueue.error("X509V3_EXT_conf_nid \(value)")
            }
            defer { X509_EXTENSION_free(ext) }
            guard X509_add_ext(certificate, ext, -1) == 1 else { throw OpenSSLErrorQueue.error("X509_add_ext") }
        }

        guard X509_sign(certificate, key, EVP_sha256()) > 0 else { throw OpenSSLErrorQueue.error("X509_sign") }
        done = true
        return certificate
    }

    /// RFC 5280 §4.1.2.2: a positive serial of at most 20 octets; 127 random bits are positive and unique enough.
    private static func setRandomSerial(_ certificate: OpaquePointer) throws(TLSError) {
        guard let number = BN_new() else { throw OpenSSLErrorQueue.error("BN_new") }
        defer { BN_free(number) }
        guard BN_rand(number, 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) == 1,
            BN_to_ASN1_INTEGER(number, X509_get_serialNumber(certificate)) != nil
        else { throw OpenSSLErrorQueue.error("serial number") }
    }

    /// Runs a PEM writer against a memory BIO and returns what it wrote.
    private static func pem(_ operation: String, _ write: (OpaquePointer) -> Int32) throws(TLSError) -> [UInt8] {
        OpenSSLErrorQueue.clear()
        guard let bio = BIO_new(BIO_s_mem()) else { throw OpenSSLErrorQueue.error("BIO_new") }
        defer { BIO_free(bio) }
        guard write(bio) == 1 else { throw OpenSSLErrorQueue.error(operation) }
        return X509Text.memoryBIOBytes(bio)
    }
}

/// Write-to-temporary, fsync, rename, fsync-directory: the file at `path` is either the old one or the complete
/// new one.
enum AtomicFile {
    static func replace(_ path: String, with bytes: [UInt8], mode: mode_t) throws(TLSError) {
        let temporary = "\(path).tmp.\(getpid()).\(UInt32.random(in: 0...UInt32.max))"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        guard fd >= 0 else { throw .fileSystem(operation: "open", path: temporary, errno: errno) }
        var renamed = false
        defer { if !renamed { unlink(temporary) } }
        do {
            defer { close(fd) }
            // The umask may have removed bits; set exactly what was asked for.
            guard fchmod(fd, mode) == 0 else {
                throw TLSError.fileSystem(operation: "fchmod", path: temporary, errno: errno)
            }
            try writeAll(fd, bytes, path: temporary)
            guard fsync(fd) == 0 else { throw TLSError.fileSystem(operation: "fsync", path: temporary, errno: errno) }
        }
        guard rename(temporary, path) == 0 else { throw .fileSystem(operation: "rename", path: path, errno: errno) }
        renamed = true
        syncDirectory(of: path)
    }

    private static func writeAll(_ fd: Int32, _ bytes: [UInt8], path: String) throws(TLSError) {
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { buffer -> Int in
                guard let base = buffer.baseAddress else { return 0 }
                return write(fd, base + offset, buffer.count - offset)
            }
            if n < 0 {
                if errno == EINTR { continue }
                throw .fileSystem(operation: "write", path: path, errno: errno)
            }
            offset += n
        }
    }

    /// Makes the rename durable. Best effort: the file itself is complete either way.
    private static func syncDirectory(of path: String) {
        let directory: String
        if let slash = path.lastIndex(of: "/") {
            directory = slash == path.startIndex ? "/" : String(path[..<slash])
        } else {
            directory = "."
        }
        let fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd >= 0 {
            _ = fsync(fd)
            close(fd)
        }
    }
}
