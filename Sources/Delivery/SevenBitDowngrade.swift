/// Converts an 8-bit MIME message to 7 bit for a next hop without 8BITMIME (RFC 6152 §3 leaves the choice between
/// converting and refusing to the relay; RFC 2045 §6 gives the encodings). Pure: bytes in (CRLF line ends, as the
/// spool keeps them), bytes out.
///
/// | content | result |
/// |---|---|
/// | a part whose body has 8-bit bytes, `text/*` | the body quoted-printable, `Content-Transfer-Encoding` replaced |
/// | ... any other type | the body base64 |
/// | `multipart/*` | each part converted on its own, boundaries and 7-bit parts untouched |
/// | `message/rfc822` with 8-bit content | the inner message converted the same way |
/// | a 7-bit part | untouched, byte for byte |
/// | 8-bit bytes in a header section | refused: a header cannot be encoded without changing what it says |
/// | 8-bit bytes and no `MIME-Version` | refused: not MIME, so there is no part to declare an encoding for |
/// | `binary`, `base64` or `quoted-printable` parts with 8-bit bytes, 8-bit text outside the parts | refused |
enum SevenBitDowngrade {
    enum Failure: Error, Equatable, CustomStringConvertible {
        case eightBitHeader
        case notMIME
        case unconvertible(String)

        var description: String {
            switch self {
            case .eightBitHeader: return "8-bit bytes in a header section cannot be converted to 7 bit"
            case .notMIME: return "8-bit content in a message that is not MIME cannot be converted to 7 bit"
            case .unconvertible(let why): return "the message cannot be converted to 7 bit: \(why)"
            }
        }
    }

    static func convert(_ message: [UInt8]) -> Result<[UInt8], Failure> {
        let entity = Entity(message)
        if entity.header.contains(where: { $0 >= 0x80 }) { return .failure(.eightBitHeader) }
        guard entity.field("mime-version") != nil else {
            return message.contains { $0 >= 0x80 } ? .failure(.notMIME) : .success(message)
        }
        return convertEntity(entity, defaultType: "text/plain")
    }

    private static func convertEntity(_ entity: Entity, defaultType: String) -> Result<[UInt8], Failure> {
        if entity.header.contains(where: { $0 >= 0x80 }) { return .failure(.eightBitHeader) }
        guard entity.body.contains(where: { $0 >= 0x80 }) else { return .success(entity.bytes) }
        let contentType = entity.field("content-type").map(ContentType.init) ?? ContentType(defaultType)
        let encoding = entity.field("content-transfer-encoding").map { $0.trimmed.lowercased() } ?? "7bit"
        if contentType.type == "multipart" {
            guard let boundary = contentType.parameters["boundary"], !boundary.isEmpty else {
                return .failure(.unconvertible("a multipart part without a boundary"))
            }
            let childType = contentType.subtype == "digest" ? "message/rfc822" : "text/plain"
            return convertMultipart(entity, boundary: boundary, childType: childType)
        }
        guard encoding == "8bit" || encoding == "7bit" else {
            return .failure(.unconvertible("8-bit bytes in a part declared \(encoding)"))
        }
        if contentType.type == "message" && (contentType.subtype == "rfc822" || contentType.subtype == "global") {
            let inner = Entity(entity.body)
            return convertEntity(inner, defaultType: "text/plain").map { entity.headerBytes + $0 }
        }
        let encoded: [UInt8]
        let name: String
        if contentType.type == "text" {
            encoded = quotedPrintable(entity.body)
            name = "quoted-printable"
        } else {
            encoded = base64(entity.body)
            name = "base64"
        }
        return .success(entity.headerReplacingEncoding(with: name) + encoded)
    }

    private static func convertMultipart(_ entity: Entity, boundary: String, childType: String)
        -> Result<[UInt8], Failure>
    {
        let delimiter = Array("--\(boundary)".utf8)
        let lines = splitLines(entity.body)
        var out = entity.headerBytes
        var part: [UInt8]? = nil  // nil: in the preamble or the epilogue
        var closed = false
        func flush() -> Failure? {
            guard let current = part else { return nil }
            // The CRLF before a delimiter belongs to the delimiter (RFC 2046 §5.1.1).
            var content = current
            if content.suffix(2) == [13, 10] { content.removeLast(2) }
            switch convertEntity(Entity(content), defaultType: childType) {
            case .success(let converted): out += converted + [13, 10]
            case .failure(let failure): return failure
            }
            return nil
        }
        for line in lines {
            let text = line.suffix(2) == [13, 10] ? Array(line.dropLast(2)) : line
            let trimmed = Array(text.reversed().drop { $0 == 32 || $0 == 9 }.reversed())
            if !closed, trimmed.starts(with: delimiter) {
                let rest = trimmed.dropFirst(delimiter.count)
                if rest.isEmpty || Array(rest) == Array("--".utf8) {
                    if let failure = flush() { return .failure(failure) }
                    out += line
                    if rest.isEmpty { part = [] } else { part = nil; closed = true }
                    continue
                }
            }
            if part != nil {
                part! += line
            } else {
                if line.contains(where: { $0 >= 0x80 }) {
                    return .failure(.unconvertible("8-bit text outside the MIME parts"))
                }
                out += line
            }
        }
        if let failure = flush() { return .failure(failure) }
        return .success(out)
    }

    /// Lines including their CRLF (the last one may lack it).
    static func splitLines(_ bytes: [UInt8]) -> [[UInt8]] {
        var lines: [[UInt8]] = []
        var start = 0
        var index = 0
        while index < bytes.count {
            if bytes[index] == 10 {
                lines.append(Array(bytes[start...index]))
                start = index + 1
            }
            index += 1
        }
        if start < bytes.count { lines.append(Array(bytes[start...])) }
        return lines
    }

    /// RFC 2045 §6.7: printable ASCII as itself, `=` and 8-bit bytes as `=XX`, trailing blanks encoded, lines of
    /// at most 76 characters with soft breaks; the hard line breaks stay CRLF.
    static func quotedPrintable(_ body: [UInt8]) -> [UInt8] {
        let hex = Array("0123456789ABCDEF".utf8)
        var out: [UInt8] = []
        for line in splitLines(body) {
            let hasBreak = line.suffix(2) == [13, 10]
            let content = hasBreak ? Array(line.dropLast(2)) : line.filter { $0 != 10 }
            var column = 0
            for (position, byte) in content.enumerated() {
                let last = position == content.count - 1
                let plain = (byte >= 33 && byte <= 126 && byte != 61) || ((byte == 32 || byte == 9) && !last)
                let token: [UInt8] = plain ? [byte] : [61, hex[Int(byte >> 4)], hex[Int(byte & 15)]]
                if column + token.count > 75 {
                    out += [61, 13, 10]
                    column = 0
                }
                out += token
                column += token.count
            }
            if hasBreak { out += [13, 10] }
        }
        if out.suffix(2) != [13, 10] { out += [61, 13, 10] }  // a soft break: no line end is invented
        return out
    }

    /// RFC 2045 §6.8, 76 characters a line.
    static func base64(_ body: [UInt8]) -> [UInt8] {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
        var out: [UInt8] = []
        var column = 0
        var index = 0
        while index < body.count {
            let chunk = Array(body[index..<min(index + 3, body.count)])
            let value =
                (UInt32(chunk[0]) << 16) | (UInt32(chunk.count > 1 ? chunk[1] : 0) << 8)
                | UInt32(chunk.count > 2 ? chunk[2] : 0)
            out.append(alphabet[Int((value >> 18) & 63)])
            out.append(alphabet[Int((value >> 12) & 63)])
            out.append(chunk.count > 1 ? alphabet[Int((value >> 6) & 63)] : 61)
            out.append(chunk.count > 2 ? alphabet[Int(value & 63)] : 61)
            column += 4
            if column >= 76 {
                out += [13, 10]
                column = 0
            }
            index += 3
        }
        if column > 0 { out += [13, 10] }
        return out
    }
}

/// A MIME entity: the header section (with its empty line) and the body.
private struct Entity {
    let bytes: [UInt8]
    /// The header section without the empty line that ends it.
    let header: [UInt8]
    /// The header section including the empty line (empty when there is none).
    let headerBytes: [UInt8]
    let body: [UInt8]

    init(_ bytes: [UInt8]) {
        self.bytes = bytes
        if bytes.starts(with: [13, 10]) {
            header = []
            headerBytes = [13, 10]
            body = Array(bytes.dropFirst(2))
            return
        }
        var index = 0
        while index + 3 < bytes.count {
            if bytes[index] == 13, bytes[index + 1] == 10, bytes[index + 2] == 13, bytes[index + 3] == 10 {
                header = Array(bytes[..<(index + 2)])
                headerBytes = Array(bytes[..<(index + 4)])
                body = Array(bytes[(index + 4)...])
                return
            }
            index += 1
        }
        header = bytes
        headerBytes = bytes
        body = []
    }

    /// Header fields as (lower-cased name, raw field lines including continuations).
    var fields: [(name: String, raw: [UInt8])] {
        var result: [(String, [UInt8])] = []
        for line in SevenBitDowngrade.splitLines(header) {
            if let first = line.first, first == 32 || first == 9, !result.isEmpty {
                result[result.count - 1].1 += line
                continue
            }
            let colon = line.firstIndex(of: 58) ?? line.count
            let name = String(decoding: line[..<colon], as: UTF8.self).trimmed.lowercased()
            result.append((name, line))
        }
        return result
    }

    /// The unfolded value of the first field with this (lower-case) name.
    func field(_ name: String) -> String? {
        guard let raw = fields.first(where: { $0.name == name })?.raw else { return nil }
        let text = String(decoding: raw, as: UTF8.self)
        guard let colon = text.firstIndex(of: ":") else { return nil }
        return text[text.index(after: colon)...].replacingCRLF
    }

    func headerReplacingEncoding(with encoding: String) -> [UInt8] {
        var out: [UInt8] = []
        for field in fields where field.name != "content-transfer-encoding" {
            out += field.raw
            if out.suffix(2) != [13, 10] { out += [13, 10] }
        }
        out += Array("Content-Transfer-Encoding: \(encoding)\r\n\r\n".utf8)
        return out
    }
}

/// `type/subtype; name=value; ...`, names lower-cased, quoted values unquoted.
private struct ContentType {
    var type: String
    var subtype: String
    var parameters: [String: String] = [:]

    init(_ value: String) {
        let pieces = value.split(separator: ";", omittingEmptySubsequences: false).map { String($0).trimmed }
        let full = (pieces.first ?? "").lowercased()
        let halves = full.split(separator: "/", maxSplits: 1).map(String.init)
        type = halves.first ?? "text"
        subtype = halves.count > 1 ? halves[1] : "plain"
        for piece in pieces.dropFirst() {
            guard let equals = piece.firstIndex(of: "=") else { continue }
            let name = piece[..<equals].trimmed.lowercased()
            var raw = piece[piece.index(after: equals)...].trimmed
            if raw.count >= 2, raw.hasPrefix("\""), raw.hasSuffix("\"") { raw = String(raw.dropFirst().dropLast()) }
            parameters[name] = raw
        }
    }
}

extension StringProtocol {
    fileprivate var trimmed: String {
        String(self.drop { $0 == " " || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\t" }.reversed())
    }

    fileprivate var replacingCRLF: String {
        // Unicode scalars: "\r\n" is one Character, so a Character filter would keep it.
        var scalars = String.UnicodeScalarView()
        scalars.append(contentsOf: self.unicodeScalars.filter { $0 != "\r" && $0 != "\n" })
        return String(scalars)
    }
}
