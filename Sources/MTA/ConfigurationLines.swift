/// Splits a config file into numbered lines as bytes. In Swift "\r\n" is a single Character, so splitting a String on
/// "\n" never finds the end of a CRLF line and a whole Windows-edited file would read as one (commented-out) line.
/// Here LF ends a line, a CR right before it is dropped, a last line without a newline still counts, and a UTF-8
/// byte-order mark at the very start is skipped.
enum ConfigurationLines {
    struct Line: Equatable {
        let number: Int
        /// The line without its comment (from the first `#`) and without the line end; valid UTF-8, no controls.
        let content: String
    }

    struct Problem: Error, Equatable {
        let line: Int
        let message: String
    }

    static let byteOrderMark: [UInt8] = [0xEF, 0xBB, 0xBF]

    /// The lines of `bytes`, or the first line whose content (before any `#`) holds invalid UTF-8 or a control
    /// character other than tab; the message shows the offending text escaped.
    static func split(_ bytes: [UInt8]) -> Result<[Line], Problem> {
        var start = bytes.starts(with: byteOrderMark) ? byteOrderMark.count : 0
        var lines: [Line] = []
        var number = 0
        while start < bytes.count {
            number += 1
            let newline = bytes[start...].firstIndex(of: 0x0A) ?? bytes.count
            var end = newline
            if end > start && bytes[end - 1] == 0x0D { end -= 1 }
            var content = bytes[start..<end]
            if let hash = content.firstIndex(of: UInt8(ascii: "#")) { content = content[..<hash] }
            if content.contains(where: { ($0 < 0x20 && $0 != 0x09) || $0 == 0x7F }) {
                return .failure(Problem(line: number, message: "control character in \"\(escaped(content))\""))
            }
            guard let text = String(validating: content, as: UTF8.self) else {
                return .failure(Problem(line: number, message: "invalid UTF-8 in \"\(escaped(content))\""))
            }
            lines.append(Line(number: number, content: text))
            start = newline + 1
        }
        return .success(lines)
    }

    /// Printable ASCII as is, every other byte as `\xNN`, so an error message never carries raw control bytes.
    static func escaped(_ bytes: some Collection<UInt8>) -> String {
        let hex = Array("0123456789abcdef")
        var out = ""
        for byte in bytes {
            if byte >= 0x20 && byte < 0x7F {
                out.append(Character(Unicode.Scalar(byte)))
            } else {
                out += "\\x\(hex[Int(byte >> 4)])\(hex[Int(byte & 0xF)])"
            }
        }
        return out
    }
}
