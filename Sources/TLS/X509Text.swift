internal import COpenSSL

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Turns X.509 values into Swift strings.
enum X509Text {
    /// An X509_NAME in RFC 2253 form ("CN=mx.example.org,O=Example").
    static func name(_ name: OpaquePointer?) -> String? {
        guard let name, let bio = BIO_new(BIO_s_mem()) else { return nil }
        defer { BIO_free(bio) }
        guard X509_NAME_print_ex(bio, name, 0, dualmta_XN_FLAG_RFC2253()) >= 0 else { return nil }
        return memoryBIOString(bio)
    }

    /// OpenSSL's text for an X509_V_ERR_* code ("self-signed certificate", "hostname mismatch").
    static func verifyError(_ code: Int) -> String {
        guard let text = X509_verify_cert_error_string(code) else { return "verify error \(code)" }
        return String(cString: text)
    }

    /// The whole content of a memory BIO as bytes.
    static func memoryBIOBytes(_ bio: OpaquePointer) -> [UInt8] {
        var data: UnsafeMutablePointer<CChar>? = nil
        let length = dualmta_BIO_get_mem_data(bio, &data)
        guard length > 0, let data else { return [] }
        return data.withMemoryRebound(to: UInt8.self, capacity: length) {
            Array(UnsafeBufferPointer(start: $0, count: length))
        }
    }

    static func memoryBIOString(_ bio: OpaquePointer) -> String {
        String(decoding: memoryBIOBytes(bio), as: UTF8.self)
    }

    /// ASN1_TIME as seconds since 1970-01-01 UTC.
    static func epochSeconds(_ time: UnsafePointer<ASN1_TIME>?) -> Int64? {
        guard let time else { return nil }
        var parts = tm()
        guard ASN1_TIME_to_tm(time, &parts) == 1 else { return nil }
        return Int64(timegm(&parts))
    }
}

/// Host-name checks for SNI and for names put into certificates.
enum HostName {
    static func isIPAddress(_ text: String) -> Bool {
        var v4 = in_addr()
        var v6 = in6_addr()
        return inet_pton(AF_INET, text, &v4) == 1 || inet_pton(AF_INET6, text, &v6) == 1
    }

    /// A DNS name of letters, digits and hyphens (RFC 1123 §2.1), at most 253 octets, labels of 1–63 octets not
    /// starting or ending with a hyphen. A trailing dot is not allowed (certificates do not carry it).
    static func isValidDNSName(_ text: String) -> Bool {
        let bytes = Array(text.utf8)
        guard !bytes.isEmpty, bytes.count <= 253 else { return false }
        for label in bytes.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false) {
            guard (1...63).contains(label.count),
                label.first != UInt8(ascii: "-"), label.last != UInt8(ascii: "-")
            else { return false }
            for byte in label {
                switch byte {
                case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                    UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"):
                    continue
                default:
                    return false
                }
            }
        }
        return true
    }
}
