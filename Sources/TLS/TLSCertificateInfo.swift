internal import COpenSSL

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// What a PEM certificate file says about itself: for `dualmta check` (expiry, names) and for tests.
public struct TLSCertificateInfo: Sendable, Equatable {
    /// Subject in RFC 2253 form ("CN=mx.example.org").
    public var subject: String
    /// Issuer in RFC 2253 form; equal to `subject` for a self-signed certificate.
    public var issuer: String
    /// subjectAltName dNSName entries.
    public var dnsNames: [String]
    /// subjectAltName iPAddress entries, in inet_ntop form.
    public var ipAddresses: [String]
    /// Validity period, in seconds since 1970-01-01 UTC.
    public var notBefore: Int64
    public var notAfter: Int64

    /// Reads the first certificate of a PEM file.
    ///
    /// - Throws: `.certificateUnavailable` when the file cannot be read or holds no PEM certificate.
    public init(certificateFile: String) throws(TLSError) {
        OpenSSLErrorQueue.clear()
        guard let file = BIO_new_file(certificateFile, "r") else {
            throw .certificateUnavailable("\(certificateFile): \(OpenSSLErrorQueue.drain().joined(separator: "; "))")
        }
        defer { BIO_free(file) }
        guard let certificate = PEM_read_bio_X509(file, nil, nil, nil) else {
            throw .certificateUnavailable("\(certificateFile): \(OpenSSLErrorQueue.drain().joined(separator: "; "))")
        }
        defer { X509_free(certificate) }
        guard let subject = X509Text.name(X509_get_subject_name(certificate)),
            let issuer = X509Text.name(X509_get_issuer_name(certificate)),
            let notBefore = X509Text.epochSeconds(X509_get0_notBefore(certificate)),
            let notAfter = X509Text.epochSeconds(X509_get0_notAfter(certificate))
        else {
            throw .certificateUnavailable("\(certificateFile): unreadable subject, issuer or validity")
        }
        self.subject = subject
        self.issuer = issuer
        self.notBefore = notBefore
        self.notAfter = notAfter
        (dnsNames, ipAddresses) = Self.alternativeNames(certificate)
    }

    private static func alternativeNames(_ certificate: OpaquePointer) -> (dns: [String], ip: [String]) {
        guard let raw = X509_get_ext_d2i(certificate, NID_subject_alt_name, nil, nil) else { return ([], []) }
        let names = OpaquePointer(raw)
        defer { GENERAL_NAMES_free(names) }
        var dns: [String] = []
        var ip: [String] = []
        for index in 0..<dualmta_sk_GENERAL_NAME_num(names) {
            guard let name = dualmta_sk_GENERAL_NAME_value(names, index) else { continue }
            switch name.pointee.type {
            case GEN_DNS:
                if let text = name.pointee.d.dNSName, let data = ASN1_STRING_get0_data(text) {
                    let bytes = UnsafeBufferPointer(start: data, count: Int(ASN1_STRING_length(text)))
                    dns.append(String(decoding: bytes, as: UTF8.self))
                }
            case GEN_IPADD:
                if let octets = name.pointee.d.iPAddress, let data = ASN1_STRING_get0_data(octets) {
                    let bytes = Array(UnsafeBufferPointer(start: data, count: Int(ASN1_STRING_length(octets))))
                    if let text = ipText(bytes) { ip.append(text) }
                }
            default:
                continue
            }
        }
        return (dns, ip)
    }

    private static func ipText(_ bytes: [UInt8]) -> String? {
        let family: Int32
        switch bytes.count {
        case 4: family = AF_INET
        case 16: family = AF_INET6
        default: return nil
        }
        var text = [UInt8](repeating: 0, count: 64)
        let ok = bytes.withUnsafeBytes { raw in
            text.withUnsafeMutableBytes { out in
                inet_ntop(family, raw.baseAddress, out.baseAddress, socklen_t(out.count)) != nil
            }
        }
        guard ok else { return nil }
        return String(decoding: text.prefix { $0 != 0 }, as: UTF8.self)
    }
}
