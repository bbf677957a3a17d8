import Foundation
import SMTPProtocol

/// Text helpers for building delivery reports: dates (through `MailDate`), header folding, ASCII escaping for
/// message/delivery-status, quoted-printable for the human part, line-end repair of the returned message.
/// Everything is pure and deterministic (no locale, no time zone, no randomised hashing).
enum ReportFormat {
    /// RFC 5322 §2.1.1: 998 octets per line, excluding CRLF.
    static let maxLineOctets = 998
    /// Where we try to fold and wrap (RFC 5322 §2.1.1 SHOULD: 78).
    static let preferredLineOctets = 78

    // MARK: Dates

    /// "Tue, 14 May 2024 09:58:02 +0000" (RFC 5322 §3.3), always UTC.
    static func rfc5322Date(_ date: Date) -> String { MailDate.rfc5322(unixSeconds(date)) }

    /// "20240514095802", used inside Message-IDs.
    static func compactStamp(_ date: Date) -> String { MailDate.compact(unixSeconds(date)) }

    /// Whole seconds, rounded down; NaN counts as 0 and infinities as the ends of the formatter's range.
    static func unixSeconds(_ date: Date) -> Int64 {
        let interval = date.timeIntervalSince1970
        if interval.isNaN { return 0 }
        return Int64(min(max(interval, Double(MailDate.earliest)), Double(MailDate.latest)).rounded(.down))
    }

    // MARK: Escaping

    /// A header value that cannot break the header: CR, LF, TAB and other controls become spaces, so text from the
    /// network (a remote reply, an EHLO name) can never inject a field or end the header section.
    static func singleLine(_ text: String) -> String {
        var out = String.UnicodeScalarView()
        for scalar in text.unicodeScalars {
            out.append(scalar.value < 0x20 || scalar.value == 0x7F ? " " : scalar)
        }
        return String(out)
    }

    /// ASCII-only form for message/delivery-status (RFC 3464 fields are ASCII; UTF-8 needs RFC 6533's
    /// message/global-delivery-status, which we do not send): controls become spaces, non-ASCII becomes the
    /// RFC 6533 EmbeddedUnicodeChar form `\x{HEX}`.
    static func ascii(_ text: String) -> String {
        var out = ""
        for scalar in singleLine(text).unicodeScalars {
            if scalar.isASCII {
                out.unicodeScalars.append(scalar)
            } else {
                out += "\\x{" + String(scalar.value, radix: 16, uppercase: true) + "}"
            }
        }
        return out
    }

    /// `rfc822; addr` for an ASCII address; `utf-8; ...` in RFC 6533 utf-8-addr-xtext form otherwise (every
    /// character outside QCHAR, i.e. non-ASCII, controls, SP, `\`, `+`, `=`, as `\x{HEX}`).
    static func typedAddress(_ address: String) -> String {
        let clean = singleLine(address).trimmingCharacters(in: .whitespaces)
        if clean.unicodeScalars.allSatisfy(\.isASCII) {
            return "rfc822; " + clean
        }
        var out = ""
        for scalar in clean.unicodeScalars {
            let v = scalar.value
            let isQChar = v >= 0x21 && v <= 0x7E && v != 0x5C && v != 0x2B && v != 0x3D
            if isQChar {
                out.unicodeScalars.append(scalar)
            } else {
                out += "\\x{" + String(v, radix: 16, uppercase: true) + "}"
            }
        }
        return "utf-8; " + out
    }

    /// Original-Recipient value: the caller passes the ORCPT address, with or without its `type;` prefix.
    static func originalRecipient(_ value: String) -> String {
        let clean = singleLine(value).trimmingCharacters(in: .whitespaces)
        if let semicolon = clean.firstIndex(of: ";") {
            let type = clean[..<semicolon].trimmingCharacters(in: .whitespaces)
            let address = clean[clean.index(after: semicolon)...].trimmingCharacters(in: .whitespaces)
            let isAtom = !type.isEmpty && type.unicodeScalars.allSatisfy { $0.isASCII && isTypeCharacter($0) }
            if isAtom {
                if type.lowercased() == "rfc822" || type.lowercased() == "utf-8" {
                    return typedAddress(address)
                }
                return type.lowercased() + "; " + ascii(address)
            }
        }
        return typedAddress(clean)
    }

    private static func isTypeCharacter(_ scalar: Unicode.Scalar) -> Bool {
        CharacterSet.alphanumerics.contains(scalar) || scalar == "-"
    }

    /// A Status value is `class.subject.detail` (RFC 3463); anything else is replaced by the generic code of the
    /// action, so the report always parses.
    static func status(_ value: String, action: ReportAction) -> String {
        let parts = value.trimmingCharacters(in: .whitespaces).split(separator: ".", omittingEmptySubsequences: false)
        let valid =
            parts.count == 3 && ["2", "4", "5"].contains(parts[0])
            && parts[1].count >= 1 && parts[1].count <= 3 && parts[2].count >= 1 && parts[2].count <= 3
            && parts.allSatisfy { $0.allSatisfy { $0.isASCII && $0.isNumber } }
        if valid { return parts.joined(separator: ".") }
        switch action {
        case .failed: return "5.0.0"
        case .delayed: return "4.0.0"
        case .delivered, .relayed: return "2.0.0"
        }
    }

    /// Message-ID local part from a seed: letters, digits, `-` and `_` stay, every other byte becomes `=XX`, so
    /// the mapping is injective and the result is a valid dot-atom-text.
    static func idToken(_ seed: String) -> String {
        var out = ""
        for byte in seed.utf8 {
            let c = Character(Unicode.Scalar(byte))
            if byte < 0x80 && (c.isLetter || c.isNumber || c == "-" || c == "_") {
                out.append(c)
            } else {
                out += "=" + hex2(byte)
            }
        }
        return out.isEmpty ? "0" : out
    }

    /// A host name safe for From/Message-ID: letters, digits, `-`, `.`, `_`; never empty.
    static func hostName(_ host: String) -> String {
        let kept = host.unicodeScalars.filter {
            $0.isASCII && (CharacterSet.alphanumerics.contains($0) || $0 == "-" || $0 == "." || $0 == "_")
        }
        let name = String(String.UnicodeScalarView(kept)).trimmingCharacters(in: CharacterSet(charactersIn: "."))
        return name.isEmpty ? "localhost.invalid" : name
    }

    static func hex2(_ byte: UInt8) -> String {
        let digits = Array("0123456789ABCDEF")
        return String([digits[Int(byte >> 4)], digits[Int(byte & 0x0F)]])
    }

    /// FNV-1a 64: a stable hash (Swift's Hasher is seeded per process, which would break determinism).
    static func fnv1a(_ parts: [String]) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for part in parts {
            for byte in part.utf8 + [0] {
                hash ^= UInt64(byte)
                hash = hash &* 0x0000_0100_0000_01B3
            }
        }
        return hash
    }

    // MARK: Folding and wrapping

    /// `Name: value` as one or more lines (without CRLF), folded at spaces before `preferredLineOctets` where
    /// possible (RFC 5322 §2.2.3: the fold is CRLF before an existing space, so unfolding restores the value).
    /// A run without spaces longer than the hard limit is cut, which inserts one space on unfolding: the only way
    /// to keep every line within 998 octets.
    static func fold(_ name: String, _ value: String) -> [String] {
        let words = value.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
        var lines: [String] = []
        var current = name + ":"
        var currentHasText = false
        for (index, word) in words.enumerated() {
            let piece = " " + word
            if currentHasText && !word.isEmpty
                && current.utf8.count + piece.utf8.count > preferredLineOctets
            {
                lines.append(current)
                current = piece
            } else if index == 0 && word.isEmpty {
                current += " "
                continue
            } else {
                current += piece
            }
            currentHasText = currentHasText || !word.isEmpty
        }
        lines.append(current)
        return lines.flatMap { hardSplit($0, continuation: " ") }
    }

    /// Cuts a line longer than the hard limit into pieces (at character boundaries), each continuation line
    /// starting with `continuation`.
    static func hardSplit(_ line: String, continuation: String) -> [String] {
        let limit = maxLineOctets - 8
        guard line.utf8.count > maxLineOctets else { return [line] }
        var pieces: [String] = []
        var current = ""
        var count = 0
        for character in line {
            let size = character.utf8.count
            if count + size > limit {
                pieces.append(current)
                current = continuation
                count = continuation.utf8.count
            }
            current.append(character)
            count += size
        }
        pieces.append(current)
        return pieces
    }

    /// Word-wraps human text to `width` columns (counted in characters), continuation lines indented by
    /// `indent`; words longer than the width are kept whole unless they pass the hard line limit.
    static func wrap(_ text: String, width: Int = 76, firstPrefix: String = "", indent: String = "") -> [String] {
        let words = singleLine(text).split(separator: " ").map(String.init)
        var lines: [String] = []
        var current = firstPrefix
        var hasWord = false
        for word in words {
            if hasWord && current.count + 1 + word.count > width {
                lines.append(current)
                current = indent + word
            } else {
                current += (hasWord ? " " : "") + word
            }
            hasWord = true
        }
        lines.append(current)
        return lines.flatMap { hardSplit($0, continuation: indent) }
    }

    // MARK: Quoted-printable (RFC 2045 §6.7) for a human part that contains UTF-8

    static func quotedPrintable(_ lines: [String]) -> [String] {
        var out: [String] = []
        for line in lines {
            let bytes = Array(line.utf8)
            var current = ""
            for (index, byte) in bytes.enumerated() {
                let isLast = index == bytes.count - 1
                let literal =
                    (byte >= 33 && byte <= 126 && byte != 61) || (byte == 32 && !isLast) || (byte == 9 && !isLast)
                let token = literal ? String(UnicodeScalar(byte)) : "=" + hex2(byte)
                // Soft line break "=" keeps encoded lines at 76 characters.
                if current.utf8.count + token.utf8.count > 75 {
                    out.append(current + "=")
                    current = ""
                }
                current += token
            }
            out.append(current)
        }
        return out
    }

    // MARK: The returned message

    /// The stored message with every line ending as CRLF (a bare CR or LF is repaired) and a final CRLF.
    /// Returns also the longest line, so the caller can decide whether the body may be attached whole.
    static func normalizedLines(_ bytes: [UInt8]) -> (bytes: [UInt8], longestLine: Int) {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count + 2)
        var longest = 0
        var lineLength = 0
        var index = 0
        while index < bytes.count {
            let byte = bytes[index]
            if byte == 13 || byte == 10 {
                out += [13, 10]
                longest = max(longest, lineLength)
                lineLength = 0
                // CRLF counts once.
                index += (byte == 13 && index + 1 < bytes.count && bytes[index + 1] == 10) ? 2 : 1
                continue
            }
            out.append(byte)
            lineLength += 1
            index += 1
        }
        if lineLength > 0 {
            out += [13, 10]
            longest = max(longest, lineLength)
        }
        return (out, longest)
    }

    /// The header section of a normalized message (up to, not including, the empty line), each line within the
    /// hard limit: longer header lines are cut with CRLF SP (a fold), never at a UTF-8 continuation byte.
    static func headerSection(_ normalized: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        var lineStart = 0
        var index = 0
        while index + 1 < normalized.count {
            guard normalized[index] == 13 && normalized[index + 1] == 10 else {
                index += 1
                continue
            }
            let line = Array(normalized[lineStart..<index])
            if line.isEmpty { break }
            out += cutLongLine(line)
            out += [13, 10]
            index += 2
            lineStart = index
        }
        return out
    }

    private static func cutLongLine(_ line: [UInt8]) -> [UInt8] {
        guard line.count > maxLineOctets else { return line }
        var out: [UInt8] = []
        var start = 0
        var first = true
        while start < line.count {
            let room = maxLineOctets - 8 - (first ? 0 : 1)
            var end = min(start + room, line.count)
            // Do not cut inside a UTF-8 sequence.
            while end < line.count && end > start + 1 && (line[end] & 0xC0) == 0x80 { end -= 1 }
            if !first { out += [13, 10, 32] }
            out += line[start..<end]
            start = end
            first = false
        }
        return out
    }

    static func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
        guard !needle.isEmpty, haystack.count >= needle.count else { return false }
        let first = needle[0]
        var index = 0
        let last = haystack.count - needle.count
        while index <= last {
            if haystack[index] == first && haystack[index..<(index + needle.count)].elementsEqual(needle) {
                return true
            }
            index += 1
        }
        return false
    }
}
