// RFC 5322 message headers, as far as dualmta reads them: the header section of a stored (CRLF) message, field
// by field, and address lists (for `sendmail -t`). Pure: bytes and strings in, values out.

/// One header field as it appears in the message: its name and the raw bytes (continuation lines and the final
/// CRLF included).
public struct HeaderField: Equatable, Sendable {
    public var name: String
    public var raw: ArraySlice<UInt8>

    /// The value unfolded (RFC 5322 §2.2.3: CRLF removed), without the name and colon.
    public var unfoldedValue: String {
        var bytes = Array(raw.drop { $0 != UInt8(ascii: ":") }.dropFirst())
        bytes.removeAll { $0 == UInt8(ascii: "\r") || $0 == UInt8(ascii: "\n") }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// The header section of a CRLF-normalized message.
public struct HeaderSection: Equatable, Sendable {
    public var fields: [HeaderField]
    /// Index of the first body byte.
    public var bodyStart: Int
    /// Whether an empty line separated header and body.
    public var hasSeparator: Bool

    /// Fields end at the first empty line, or at the first line that is neither a field nor a continuation (that
    /// line starts the body; `compose` then inserts the missing empty line).
    public init(parsing bytes: [UInt8]) {
        fields = []
        bodyStart = bytes.count
        hasSeparator = false
        var position = 0
        while position < bytes.count {
            var end = position
            while end + 1 < bytes.count, !(bytes[end] == 13 && bytes[end + 1] == 10) { end += 1 }
            let next = end + 1 < bytes.count ? end + 2 : bytes.count
            if end == position {
                bodyStart = next
                hasSeparator = true
                return
            }
            let first = bytes[position]
            if (first == UInt8(ascii: " ") || first == UInt8(ascii: "\t")), var last = fields.popLast() {
                last.raw = bytes[last.raw.startIndex..<next]
                fields.append(last)
            } else if let colon = bytes[position..<end].firstIndex(of: UInt8(ascii: ":")), colon > position,
                bytes[position..<colon].allSatisfy({ $0 >= 33 && $0 <= 126 })
            {
                fields.append(
                    HeaderField(
                        name: String(decoding: bytes[position..<colon], as: UTF8.self), raw: bytes[position..<next]))
            } else {
                bodyStart = position
                return
            }
            position = next
        }
    }

    public func contains(_ name: String) -> Bool {
        fields.contains { $0.name.lowercased() == name.lowercased() }
    }
}

/// An address list that does not parse; `text` is the whole list as given.
public struct AddressListError: Error, Equatable, Sendable {
    public var text: String
}

/// RFC 5322 §3.4 address lists, as far as sendmail -t needs them: mailboxes with or without display names,
/// groups (`undisclosed-recipients:;`), comments and quoted strings. Returns the addr-specs in order.
public enum AddressList {
    public static func parse(_ text: String) throws(AddressListError) -> [String] {
        let bytes = Array(text.utf8)
        var result: [String] = []
        var current: [UInt8] = []
        var angle: [UInt8]? = nil
        var inAngle = false
        var inGroup = false
        var index = 0

        func finish() {
            var spec = angle ?? current
            spec = removeWhitespaceOutsideQuotes(spec)
            if angle != nil, spec.first == UInt8(ascii: "@"), let colon = spec.firstIndex(of: UInt8(ascii: ":")) {
                spec = Array(spec[(colon + 1)...])  // obsolete source route @a,@b:user@c
            }
            if !spec.isEmpty { result.append(String(decoding: spec, as: UTF8.self)) }
            current = []
            angle = nil
        }

        while index < bytes.count {
            let byte = bytes[index]
            if byte == UInt8(ascii: "\"") {
                var quoted: [UInt8] = [byte]
                index += 1
                var closed = false
                while index < bytes.count {
                    let inner = bytes[index]
                    quoted.append(inner)
                    index += 1
                    if inner == UInt8(ascii: "\\"), index < bytes.count {
                        quoted.append(bytes[index])
                        index += 1
                    } else if inner == UInt8(ascii: "\"") {
                        closed = true
                        break
                    }
                }
                guard closed else { throw AddressListError(text: text) }
                if inAngle { angle?.append(contentsOf: quoted) } else { current.append(contentsOf: quoted) }
                continue
            }
            if byte == UInt8(ascii: "(") {
                var depth = 0
                repeat {
                    guard index < bytes.count else { throw AddressListError(text: text) }
                    switch bytes[index] {
                    case UInt8(ascii: "\\"): index += 1
                    case UInt8(ascii: "("): depth += 1
                    case UInt8(ascii: ")"): depth -= 1
                    default: break
                    }
                    index += 1
                } while depth > 0
                if !inAngle { current.append(UInt8(ascii: " ")) }
                continue
            }
            index += 1
            if inAngle {
                if byte == UInt8(ascii: ">") { inAngle = false } else { angle?.append(byte) }
                continue
            }
            switch byte {
            case UInt8(ascii: "<"):
                guard angle == nil else { throw AddressListError(text: text) }
                angle = []
                inAngle = true
            case UInt8(ascii: ","):
                finish()
            case UInt8(ascii: ":"):
                // A group's display name ends here; its members follow up to ";".
                guard !inGroup, angle == nil else { throw AddressListError(text: text) }
                inGroup = true
                current = []
            case UInt8(ascii: ";"):
                guard inGroup else { throw AddressListError(text: text) }
                finish()
                inGroup = false
            default:
                current.append(byte)
            }
        }
        guard !inAngle else { throw AddressListError(text: text) }
        finish()
        return result
    }

    private static func removeWhitespaceOutsideQuotes(_ bytes: [UInt8]) -> [UInt8] {
        var result: [UInt8] = []
        var quoted = false
        var escaped = false
        for byte in bytes {
            if quoted {
                if escaped {
                    escaped = false
                } else if byte == UInt8(ascii: "\\") {
                    escaped = true
                } else if byte == UInt8(ascii: "\"") {
                    quoted = false
                }
                result.append(byte)
            } else if byte == UInt8(ascii: "\"") {
                quoted = true
                result.append(byte)
            } else if byte != UInt8(ascii: " ") && byte != UInt8(ascii: "\t") && byte != 13 && byte != 10 {
                result.append(byte)
            }
        }
        return result
    }
}
