import NetAddress

/// A mail domain: a host name (stored lowercased, no trailing dot) or an address literal (RFC 5321 §4.1.3).
public struct Domain: Hashable, Sendable, CustomStringConvertible {
    public enum Kind: Hashable, Sendable {
        case name(String)
        case literal(IPAddress)
    }

    public var kind: Kind

    public init(literal address: IPAddress) {
        kind = .literal(address)
    }

    /// Parses RFC 5321 `Domain` (let-dig labels joined by dots; ≤ 63 octets a label, ≤ 255 in all) or an address
    /// literal `[192.0.2.1]` / `[IPv6:2001:db8::1]`. With `allowUTF8` labels may also hold non-ASCII characters
    /// (RFC 6531 U-labels). A trailing dot is refused: it is not SMTP syntax.
    public init?(parsing text: Substring, allowUTF8: Bool) {
        if text.hasPrefix("[") {
            guard let address = IPAddress(smtpLiteral: text) else { return nil }
            kind = .literal(address)
            return
        }
        guard isValidDomainName(text.utf8, allowUTF8: allowUTF8) else { return nil }
        // DNS names compare case-insensitively in ASCII only (RFC 4343). Unicode lowercasing can lengthen a name
        // ("İ" → "i̇") past the limits just checked, so non-ASCII octets are kept as they are.
        kind = .name(asciiLowercased(text))
    }

    /// Convenience for configuration values and tests: ASCII or UTF-8 names and literals.
    public init?(_ text: String) {
        self.init(parsing: Substring(text), allowUTF8: true)
    }

    /// The lowercased name, or nil for a literal.
    public var name: String? {
        if case .name(let name) = kind { return name }
        return nil
    }

    public var description: String {
        switch kind {
        case .name(let name): return name
        case .literal(let address): return address.smtpLiteral
        }
    }
}

/// `sub-domain *("." sub-domain)`; sub-domain = let-dig [ldh-str]; non-ASCII octets count as letters with allowUTF8.
private func isValidDomainName(_ bytes: Substring.UTF8View, allowUTF8: Bool) -> Bool {
    guard !bytes.isEmpty, bytes.count <= 255 else { return false }
    var labelLength = 0
    var previous: UInt8 = UInt8(ascii: ".")
    for byte in bytes {
        if byte == UInt8(ascii: ".") {
            // Empty label (leading, doubled or trailing dot) or a label ending in a hyphen.
            guard labelLength > 0, previous != UInt8(ascii: "-") else { return false }
            labelLength = 0
        } else if byte == UInt8(ascii: "-") {
            guard labelLength > 0 else { return false }
            labelLength += 1
        } else if isASCIIAlphanumeric(byte) || (allowUTF8 && byte >= 0x80) {
            labelLength += 1
        } else {
            return false
        }
        guard labelLength <= 63 else { return false }
        previous = byte
    }
    return labelLength > 0 && previous != UInt8(ascii: "-")
}

/// Lowercases ASCII letters only; every other octet is kept.
func asciiLowercased(_ text: Substring) -> String {
    String(decoding: text.utf8.map { $0 >= 0x41 && $0 <= 0x5A ? $0 + 0x20 : $0 }, as: UTF8.self)
}

/// Uppercases ASCII letters only. SMTP verbs, parameter keywords and EHLO keywords are ASCII (RFC 5321 §2.4):
/// Unicode case mapping would turn "maıl" (dotless i) into MAIL or "ſtarttls" (long s) into STARTTLS.
func asciiUppercased(_ text: some StringProtocol) -> String {
    String(decoding: text.utf8.map { $0 >= 0x61 && $0 <= 0x7A ? $0 - 0x20 : $0 }, as: UTF8.self)
}

func isASCIIAlphanumeric(_ byte: UInt8) -> Bool {
    (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
}

/// RFC 5322 atext as RFC 5321 uses it in Dot-string.
private func isAtext(_ byte: UInt8) -> Bool {
    if isASCIIAlphanumeric(byte) { return true }
    switch byte {
    case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"),
        UInt8(ascii: "'"), UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "/"),
        UInt8(ascii: "="), UInt8(ascii: "?"), UInt8(ascii: "^"), UInt8(ascii: "_"), UInt8(ascii: "`"),
        UInt8(ascii: "{"), UInt8(ascii: "|"), UInt8(ascii: "}"), UInt8(ascii: "~"):
        return true
    default:
        return false
    }
}

/// A mailbox `local-part@domain` (RFC 5321 §4.1.2). The local part is kept in wire form, quotes included, so the
/// address is passed on exactly as received; `decodedLocalPart` is the value for user lookups.
public struct Mailbox: Hashable, Sendable, CustomStringConvertible {
    /// Wire form with quotes and escapes kept: `"john smith"` or `alice`.
    public var localPart: String
    public var domain: Domain

    /// Parses `local-part@domain` (the text inside `<>`, source route already removed).
    /// Local part ≤ 64 octets: Dot-string or Quoted-string; no control characters; non-ASCII only with `allowUTF8`.
    public init?(parsing text: Substring, allowUTF8: Bool) {
        let bytes = text.utf8
        var index = bytes.startIndex
        guard index < bytes.endIndex else { return nil }
        if bytes[index] == UInt8(ascii: "\"") {
            index = bytes.index(after: index)
            var closed = false
            while index < bytes.endIndex {
                let byte = bytes[index]
                if byte == UInt8(ascii: "\"") {
                    closed = true
                    index = bytes.index(after: index)
                    break
                }
                if byte == UInt8(ascii: "\\") {
                    // quoted-pairSMTP = "\" %d32-126
                    index = bytes.index(after: index)
                    guard index < bytes.endIndex, bytes[index] >= 32, bytes[index] <= 126 else { return nil }
                } else {
                    // qtextSMTP = %d32-33 / %d35-91 / %d93-126 (/ UTF8-non-ascii with SMTPUTF8)
                    guard (byte >= 32 && byte <= 126) || (allowUTF8 && byte >= 0x80) else { return nil }
                }
                index = bytes.index(after: index)
            }
            guard closed else { return nil }
        } else {
            var atomLength = 0
            while index < bytes.endIndex, bytes[index] != UInt8(ascii: "@") {
                let byte = bytes[index]
                if byte == UInt8(ascii: ".") {
                    guard atomLength > 0 else { return nil }
                    atomLength = 0
                } else {
                    guard isAtext(byte) || (allowUTF8 && byte >= 0x80) else { return nil }
                    atomLength += 1
                }
                index = bytes.index(after: index)
            }
            guard atomLength > 0 else { return nil }
        }
        guard index < bytes.endIndex, bytes[index] == UInt8(ascii: "@") else { return nil }
        let local = text[text.startIndex..<index]
        guard local.utf8.count <= 64 else { return nil }
        let domainText = text[bytes.index(after: index)...]
        guard let domain = Domain(parsing: domainText, allowUTF8: allowUTF8) else { return nil }
        self.localPart = String(local)
        self.domain = domain
    }

    /// The local part with the quotes and backslash escapes of a Quoted-string removed.
    public var decodedLocalPart: String {
        guard localPart.hasPrefix("\""), localPart.hasSuffix("\""), localPart.count >= 2 else { return localPart }
        var result = ""
        var escaped = false
        for character in localPart.dropFirst().dropLast() {
            if escaped {
                result.append(character)
                escaped = false
            } else if character == "\\" {
                escaped = true
            } else {
                result.append(character)
            }
        }
        return result
    }

    /// True when the address needs SMTPUTF8 (any non-ASCII octet).
    public var isInternationalized: Bool {
        !localPart.utf8.allSatisfy { $0 < 0x80 } || !domain.description.utf8.allSatisfy { $0 < 0x80 }
    }

    public var description: String { "\(localPart)@\(domain)" }
}

/// MAIL FROM: the null path `<>` (bounces) or a mailbox.
public enum ReversePath: Hashable, Sendable, CustomStringConvertible {
    case null
    case mailbox(Mailbox)

    /// The text inside the angle brackets: "" for the null path.
    public var description: String {
        switch self {
        case .null: return ""
        case .mailbox(let mailbox): return mailbox.description
        }
    }
}

/// RCPT TO: a mailbox or the unqualified `<Postmaster>` that every server must accept (RFC 5321 §4.1.1.3).
public enum ForwardPath: Hashable, Sendable, CustomStringConvertible {
    case postmaster
    case mailbox(Mailbox)

    public var description: String {
        switch self {
        case .postmaster: return "Postmaster"
        case .mailbox(let mailbox): return mailbox.description
        }
    }
}

/// Why a path inside `<>` was refused; the session turns it into a reply.
enum PathError: Error, Equatable {
    case syntax
    case needsSMTPUTF8
}

/// Parsing of the text between `<` and `>` in MAIL and RCPT (RFC 5321 §4.1.2 Path / Reverse-path / Forward-path).
enum PathParser {
    enum Parsed: Equatable {
        case null
        case postmaster
        case mailbox(Mailbox)
    }

    /// - Parameters:
    ///   - text: the path without its angle brackets.
    ///   - allowUTF8: the transaction declared SMTPUTF8.
    ///   - recipient: RCPT (allows unqualified Postmaster, refuses the null path) rather than MAIL.
    static func parse(_ text: Substring, allowUTF8: Bool, recipient: Bool) -> Result<Parsed, PathError> {
        // Path length incl. "<" and ">" (RFC 5321 §4.5.3.1.3).
        guard text.utf8.count + 2 <= 256 else { return .failure(.syntax) }
        if text.isEmpty { return recipient ? .failure(.syntax) : .success(.null) }
        if !allowUTF8 && text.utf8.contains(where: { $0 >= 0x80 }) { return .failure(.needsSMTPUTF8) }
        var rest = text
        if rest.hasPrefix("@") {
            // A-d-l ":" — accepted and ignored (RFC 5321 §4.1.2, Appendix C), but each hop must still be a domain.
            guard let mailboxStart = skipSourceRoute(rest, allowUTF8: allowUTF8) else { return .failure(.syntax) }
            rest = rest[mailboxStart...]
        }
        if recipient && rest.count == 10 && rest.lowercased() == "postmaster" && rest.startIndex == text.startIndex {
            return .success(.postmaster)
        }
        guard let mailbox = Mailbox(parsing: rest, allowUTF8: allowUTF8) else { return .failure(.syntax) }
        return .success(.mailbox(mailbox))
    }

    /// Returns the index after the route's ":" when `@dom(,@dom)*:` is well formed.
    private static func skipSourceRoute(_ text: Substring, allowUTF8: Bool) -> Substring.Index? {
        var index = text.startIndex
        while true {
            guard index < text.endIndex, text[index] == "@" else { return nil }
            let start = text.index(after: index)
            var end = start
            if end < text.endIndex, text[end] == "[" {
                guard let close = text[end...].firstIndex(of: "]") else { return nil }
                end = text.index(after: close)
            } else {
                while end < text.endIndex, text[end] != ",", text[end] != ":" { end = text.index(after: end) }
            }
            guard Domain(parsing: text[start..<end], allowUTF8: allowUTF8) != nil, end < text.endIndex else {
                return nil
            }
            if text[end] == ":" { return text.index(after: end) }
            guard text[end] == "," else { return nil }
            index = text.index(after: end)
        }
    }
}
