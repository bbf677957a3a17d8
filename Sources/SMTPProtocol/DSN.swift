/// RFC 3461 `NOTIFY=`: `never`, or any of success / failure / delay. Absent means the default (failure and delay).
public struct DSNNotify: Hashable, Sendable {
    public var success: Bool
    public var failure: Bool
    public var delay: Bool

    public init(success: Bool = false, failure: Bool = false, delay: Bool = false) {
        self.success = success
        self.failure = failure
        self.delay = delay
    }

    public static let never = DSNNotify()
    public var isNever: Bool { !success && !failure && !delay }

    /// The parameter value as sent on the wire: `NEVER` or the asked-for conditions in RFC order.
    public var parameterValue: String {
        if isNever { return "NEVER" }
        return [(success, "SUCCESS"), (failure, "FAILURE"), (delay, "DELAY")].filter(\.0).map(\.1)
            .joined(separator: ",")
    }

    /// Parses `NEVER` or a non-empty list of SUCCESS, FAILURE, DELAY (any case, each at most once, NEVER alone).
    public init?(parameter value: Substring) {
        self.init()
        let words = value.split(separator: ",", omittingEmptySubsequences: false).map { asciiUppercased($0) }
        if words == ["NEVER"] { return }
        var seen = Set<String>()
        for word in words {
            guard seen.insert(word).inserted else { return nil }
            switch word {
            case "SUCCESS": success = true
            case "FAILURE": failure = true
            case "DELAY": delay = true
            default: return nil
            }
        }
    }
}

/// RFC 3461 `RET=`: how much of the original a failure report returns.
public enum DSNReturn: String, Hashable, Sendable {
    case full = "FULL"
    case headers = "HDRS"
}

/// RFC 3461 §4: xtext, the encoding of ENVID and ORCPT values. Printable ASCII except `+` and `=` stands for
/// itself; anything else is `+` and two upper-case hex digits.
public enum XText {
    /// Decodes xtext; nil for a malformed value (a character outside 33–126, `=`, a bad `+XX`) or a decoded
    /// control character or non-UTF-8 byte sequence (these would end up in logs and reports).
    public static func decode(_ text: Substring) -> String? {
        var bytes: [UInt8] = []
        var iterator = text.utf8.makeIterator()
        while let byte = iterator.next() {
            guard byte >= 33, byte <= 126, byte != UInt8(ascii: "=") else { return nil }
            if byte == UInt8(ascii: "+") {
                guard let high = iterator.next().flatMap(hexValue), let low = iterator.next().flatMap(hexValue)
                else { return nil }
                bytes.append(high << 4 | low)
            } else {
                bytes.append(byte)
            }
        }
        guard !bytes.contains(where: { $0 < 0x20 || $0 == 0x7F }) else { return nil }
        return String(validating: bytes, as: UTF8.self)
    }

    /// Encodes text as xtext (every byte of a UTF-8 character as `+XX`).
    public static func encode(_ text: String) -> String {
        var out = ""
        for byte in text.utf8 {
            if byte >= 33, byte <= 126, byte != UInt8(ascii: "+"), byte != UInt8(ascii: "=") {
                out.unicodeScalars.append(Unicode.Scalar(byte))
            } else {
                let digits = Array("0123456789ABCDEF")
                out += "+\(digits[Int(byte >> 4)])\(digits[Int(byte & 0x0F)])"
            }
        }
        return out
    }

    /// Upper-case hex only, as RFC 3461 §4 writes it; lower case is accepted too (Postfix does).
    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
        default: return nil
        }
    }
}

/// The DSN request of one outbound transaction, passed on to a next hop that offers DSN (RFC 3461 §6.2).
public struct OutboundDSN: Hashable, Sendable {
    public var ret: DSNReturn?
    /// ENVID, decoded (encoded again on the wire).
    public var envelopeID: String?
    /// Per recipient of the session, in the same order: NOTIFY and ORCPT (`addr-type;address`, decoded).
    public var recipients: [Recipient]

    public struct Recipient: Hashable, Sendable {
        public var notify: DSNNotify?
        public var originalRecipient: String?

        public init(notify: DSNNotify?, originalRecipient: String?) {
            self.notify = notify
            self.originalRecipient = originalRecipient
        }
    }

    public init(ret: DSNReturn?, envelopeID: String?, recipients: [Recipient]) {
        self.ret = ret
        self.envelopeID = envelopeID
        self.recipients = recipients
    }

    /// ` RET=... ENVID=...` for MAIL (empty when nothing was asked).
    public var mailParameters: String {
        var out = ""
        if let ret { out += " RET=\(ret.rawValue)" }
        if let envelopeID { out += " ENVID=\(XText.encode(envelopeID))" }
        return out
    }

    /// ` NOTIFY=... ORCPT=...` for the RCPT of recipient `index`.
    public func rcptParameters(_ index: Int) -> String {
        guard recipients.indices.contains(index) else { return "" }
        var out = ""
        if let notify = recipients[index].notify { out += " NOTIFY=\(notify.parameterValue)" }
        if let original = recipients[index].originalRecipient,
            let semicolon = original.firstIndex(of: ";")
        {
            let type = original[..<semicolon]
            out += " ORCPT=\(type);\(XText.encode(String(original[original.index(after: semicolon)...])))"
        }
        return out
    }
}
