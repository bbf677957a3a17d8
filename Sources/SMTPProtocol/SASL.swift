/// RFC 4954 AUTH with the PLAIN (RFC 4616) and LOGIN mechanisms: the base64 framing of the exchange and the decoding
/// of the client's credentials. Pure functions; the password check itself is the driver's business.

/// A user name and password sent by a client. The description never shows the password, so an action list or a
/// transaction printed into a log or a test failure cannot leak it.
public struct Credentials: Equatable, Sendable, CustomStringConvertible, CustomDebugStringConvertible {
    public var user: String
    public var password: String

    public init(user: String, password: String) {
        self.user = user
        self.password = password
    }

    public var description: String { "Credentials(user: \(LogText.user(user)), password: <redacted>)" }
    public var debugDescription: String { description }
}

/// What the driver found out about `Credentials`.
public enum AuthenticationOutcome: Equatable, Sendable {
    /// 235 2.7.0
    case success
    /// 535 5.7.8: unknown user or wrong password (never said which).
    case invalidCredentials
    /// 454 4.7.0: the user database could not be read.
    case temporaryFailure
    /// 454 4.7.0 without a password check: too many recent failures from this address or for this user.
    case throttled
}

/// The SASL mechanisms we offer.
public enum SASLMechanism: String, Sendable, CaseIterable {
    case plain = "PLAIN"
    case login = "LOGIN"
}

enum SASL {
    enum DecodeError: Error, Equatable {
        /// Not base64 (501 5.5.2).
        case badBase64
        /// Base64, but not the mechanism's message: wrong number of fields, NUL in a name, not UTF-8 (501 5.5.2).
        case malformed
    }

    /// RFC 4616 message: `[authzid] NUL authcid NUL passwd`, UTF-8. An authzid other than the authcid would let one
    /// user act as another; we have no such rule, so it is refused as invalid credentials by the caller.
    static func plain(_ message: [UInt8]) -> Result<(authorizationID: String, credentials: Credentials), DecodeError> {
        let fields = message.split(separator: 0, maxSplits: 2, omittingEmptySubsequences: false)
        guard fields.count == 3, !fields[1].isEmpty, !fields[2].isEmpty, !fields[2].contains(0),
            let authzid = String(validating: fields[0], as: UTF8.self),
            let user = String(validating: fields[1], as: UTF8.self),
            let password = String(validating: fields[2], as: UTF8.self)
        else { return .failure(.malformed) }
        return .success((authzid, Credentials(user: user, password: password)))
    }

    /// A LOGIN user name or password: UTF-8 without NUL, not empty.
    static func loginField(_ decoded: [UInt8]) -> String? {
        guard !decoded.isEmpty, !decoded.contains(0) else { return nil }
        return String(validating: decoded, as: UTF8.self)
    }
}

/// RFC 4648 §4 base64, strict: the standard alphabet, `=` padding required, no whitespace, no bits left over.
enum Base64 {
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    private static func value(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"): return byte - UInt8(ascii: "A")
        case UInt8(ascii: "a")...UInt8(ascii: "z"): return byte - UInt8(ascii: "a") + 26
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0") + 52
        case UInt8(ascii: "+"): return 62
        case UInt8(ascii: "/"): return 63
        default: return nil
        }
    }

    static func encode(_ bytes: some Collection<UInt8>) -> String {
        let input = Array(bytes)
        var out: [UInt8] = []
        out.reserveCapacity((input.count + 2) / 3 * 4)
        var index = 0
        while index < input.count {
            let b0 = input[index]
            let b1 = index + 1 < input.count ? input[index + 1] : 0
            let b2 = index + 2 < input.count ? input[index + 2] : 0
            out.append(alphabet[Int(b0 >> 2)])
            out.append(alphabet[Int((b0 & 0x03) << 4 | b1 >> 4)])
            out.append(index + 1 < input.count ? alphabet[Int((b1 & 0x0F) << 2 | b2 >> 6)] : UInt8(ascii: "="))
            out.append(index + 2 < input.count ? alphabet[Int(b2 & 0x3F)] : UInt8(ascii: "="))
            index += 3
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// nil unless `text` is canonical base64 (length a multiple of 4, padding only at the end, zero unused bits).
    static func decode(_ text: some StringProtocol) -> [UInt8]? {
        let bytes = Array(text.utf8)
        guard bytes.count % 4 == 0 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count / 4 * 3)
        var index = 0
        while index < bytes.count {
            var padding = 0
            if index + 4 == bytes.count && bytes[index + 3] == UInt8(ascii: "=") {
                padding = bytes[index + 2] == UInt8(ascii: "=") ? 2 : 1
            }
            guard let v0 = value(bytes[index]), let v1 = value(bytes[index + 1]) else { return nil }
            let v2 = padding >= 2 ? 0 : value(bytes[index + 2])
            let v3 = padding >= 1 ? 0 : value(bytes[index + 3])
            guard let v2, let v3 else { return nil }
            out.append(v0 << 2 | v1 >> 4)
            if padding < 2 { out.append(v1 << 4 | v2 >> 2) } else if v1 & 0x0F != 0 { return nil }
            if padding < 1 { out.append(v2 << 6 | v3) } else if padding == 1 && v2 & 0x03 != 0 { return nil }
            index += 4
        }
        return out
    }
}

/// Text from the client made safe for a log line or a header comment.
enum LogText {
    /// A user name as logged: printable ASCII without spaces or parentheses, at most 64 characters; anything else is
    /// replaced by a placeholder (a client that typed its password into the user field must not see it logged).
    static func user(_ name: String) -> String {
        isPlainUser(name) ? name : "(unprintable)"
    }

    static func isPlainUser(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= 64
            && name.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "(") && $0 != UInt8(ascii: ")") }
    }
}
