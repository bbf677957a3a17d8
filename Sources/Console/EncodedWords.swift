import Foundation

/// Decodes RFC 2047 encoded words (`=?charset?B|Q?text?=`) in a header value for display. UTF-8, US-ASCII and
/// ISO-8859-1 are decoded; a word in another charset, or one that does not decode, is left as written. Whitespace
/// between two adjacent encoded words is dropped (RFC 2047 §6.2). The result is text to be escaped, never markup.
public enum EncodedWords {
    public static func decode(_ value: String) -> String {
        var out = ""
        var rest = Substring(value)
        var pendingSpace = ""
        var lastWasEncoded = false
        while let start = rest.range(of: "=?") {
            let before = rest[..<start.lowerBound]
            guard let word = encodedWord(rest[start.lowerBound...]),
                let text = decodeWord(word.charset, word.encoding, word.text)
            else {
                out += pendingSpace + rest[..<start.upperBound]
                pendingSpace = ""
                rest = rest[start.upperBound...]
                lastWasEncoded = false
                continue
            }
            if !(lastWasEncoded && before.allSatisfy({ $0 == " " || $0 == "\t" })) { out += pendingSpace + before }
            pendingSpace = ""
            out += text
            rest = rest[word.end...]
            lastWasEncoded = true
            // Hold back the whitespace after a word until we know whether another encoded word follows.
            let blanks = rest.prefix { $0 == " " || $0 == "\t" }
            pendingSpace = String(blanks)
            rest = rest[blanks.endIndex...]
        }
        return out + pendingSpace + rest
    }

    private static func encodedWord(_ text: Substring)
        -> (charset: String, encoding: Character, text: Substring, end: Substring.Index)?
    {
        let body = text.dropFirst(2)
        guard let firstMark = body.firstIndex(of: "?") else { return nil }
        let charset = body[..<firstMark]
        let afterCharset = body[body.index(after: firstMark)...]
        guard let encoding = afterCharset.first, afterCharset.dropFirst().first == "?" else { return nil }
        let payload = afterCharset.dropFirst(2)
        guard let close = payload.range(of: "?=") else { return nil }
        let encoded = payload[..<close.lowerBound]
        guard !charset.isEmpty, !encoded.contains(" ") else { return nil }
        return (String(charset), encoding, encoded, close.upperBound)
    }

    private static func decodeWord(_ charset: String, _ encoding: Character, _ text: Substring) -> String? {
        let bytes: [UInt8]
        switch encoding {
        case "B", "b":
            guard let data = Data(base64Encoded: String(text)) else { return nil }
            bytes = Array(data)
        case "Q", "q":
            var decoded: [UInt8] = []
            var iterator = Array(text.utf8).makeIterator()
            while let byte = iterator.next() {
                switch byte {
                case UInt8(ascii: "_"): decoded.append(0x20)
                case UInt8(ascii: "="):
                    guard let high = iterator.next(), let low = iterator.next(),
                        let value = UInt8(String(decoding: [high, low], as: UTF8.self), radix: 16)
                    else { return nil }
                    decoded.append(value)
                default: decoded.append(byte)
                }
            }
            bytes = decoded
        default:
            return nil
        }
        // RFC 2231 §5 allows a language after "*" in the charset: utf-8*en.
        switch charset.split(separator: "*").first?.lowercased() ?? "" {
        case "utf-8", "us-ascii": return String(decoding: bytes, as: UTF8.self)
        case "iso-8859-1", "latin1": return String(String.UnicodeScalarView(bytes.map { Unicode.Scalar($0) }))
        default: return nil
        }
    }
}
