/// Why a byte stream from an SMTP server is not a valid sequence of replies (RFC 5321 §4.2). Any of these ends
/// the session: the client can no longer tell which reply answers which command.
public enum ReplyParseError: Error, Hashable, Sendable, CustomStringConvertible {
    /// A line is longer than 512 octets including CRLF (RFC 5321 §4.5.3.1.5).
    case lineTooLong
    /// The line does not start with three digits, the first 2–5, followed by SP, `-` or CRLF (e.g. `2x0 ok`).
    case malformedLine
    /// A line ends in a bare LF, or holds a CR or NUL that is not part of its CRLF.
    case badLineEnding
    /// A continuation line carries another code than the first line of the reply.
    case mixedCodes(first: Int, then: Int)
    /// More than `ReplyParser.maximumLines` lines in one reply.
    case tooManyLines

    public var description: String {
        switch self {
        case .lineTooLong: return "reply line longer than 512 octets"
        case .malformedLine: return "malformed reply line"
        case .badLineEnding: return "reply line not terminated by CRLF"
        case .mixedCodes(let first, let then): return "multiline reply mixes codes \(first) and \(then)"
        case .tooManyLines: return "reply has more than \(ReplyParser.maximumLines) lines"
        }
    }
}

/// Incremental, strict parser for server replies: bytes go in as they arrive, whole replies come out.
///
/// Strict on purpose: every line must end in CRLF (a line without CRLF before the connection closes is
/// incomplete, never a reply), every line of a multiline reply carries the same code, and the first digit must
/// be 2–5. Memory is bounded: at most one 512-octet partial line plus the lines of one reply (≤ 1000).
public struct ReplyParser: Sendable {
    /// RFC 5321 §4.5.3.1.5: reply line including the code and CRLF.
    public static let maximumLineLength = 512
    /// A reply with more lines than this is treated as hostile (EHLO replies have a few dozen at most).
    public static let maximumLines = 1000

    private var buffer: [UInt8] = []
    /// Start of the unparsed bytes in `buffer`; consumed bytes are dropped lazily.
    private var start = 0
    /// Lines of the reply being assembled: the code and the raw text after the separator.
    private var pendingCode: Int?
    private var pendingLines: [String] = []
    private var failed: ReplyParseError?

    public init() {}

    /// True if bytes are buffered that are not yet part of a returned reply (a partial line or a partial
    /// multiline reply). The client session uses it to detect replies sent before the command they answer.
    public var hasBufferedInput: Bool { start < buffer.count || pendingCode != nil }

    /// Adds received bytes; call `nextReply()` until it returns nil.
    public mutating func append(_ bytes: some Sequence<UInt8>) {
        buffer.append(contentsOf: bytes)
    }

    /// The next complete reply, or nil if more bytes are needed.
    ///
    /// - Throws: `ReplyParseError` on a protocol violation; the parser then stays failed (the caller must close).
    public mutating func nextReply() throws(ReplyParseError) -> Reply? {
        if let failed { throw failed }
        do throws(ReplyParseError) {
            return try parseNext()
        } catch {
            failed = error
            throw error
        }
    }

    private mutating func parseNext() throws(ReplyParseError) -> Reply? {
        while true {
            guard let lf = buffer[start...].firstIndex(of: 10) else {
                // No complete line: refuse to buffer more than one line's worth.
                if buffer.count - start > Self.maximumLineLength { throw .lineTooLong }
                compact()
                return nil
            }
            let lineEnd = lf + 1
            if lineEnd - start > Self.maximumLineLength { throw .lineTooLong }
            guard lf > start, buffer[lf - 1] == 13 else { throw .badLineEnding }
            let line = buffer[start..<(lf - 1)]
            start = lineEnd
            let (code, isLast, text) = try Self.parseLine(line)
            if let pendingCode, pendingCode != code { throw .mixedCodes(first: pendingCode, then: code) }
            pendingCode = code
            pendingLines.append(text)
            if pendingLines.count > Self.maximumLines { throw .tooManyLines }
            if isLast {
                let lines = pendingLines
                pendingCode = nil
                pendingLines = []
                compact()
                return Self.makeReply(code: code, rawLines: lines)
            }
        }
    }

    private mutating func compact() {
        if start == buffer.count {
            buffer.removeAll(keepingCapacity: true)
            start = 0
        } else if start > 4096 {
            buffer.removeFirst(start)
            start = 0
        }
    }

    /// `NNN`, `NNN text` or `NNN-text`, CRLF already removed.
    private static func parseLine(_ line: ArraySlice<UInt8>) throws(ReplyParseError) -> (Int, Bool, String) {
        guard line.count >= 3 else { throw .malformedLine }
        let digits = Array(line.prefix(3))
        guard digits.allSatisfy({ $0 >= 48 && $0 <= 57 }), digits[0] >= 50, digits[0] <= 53 else {
            throw .malformedLine
        }
        let code = Int(digits[0] - 48) * 100 + Int(digits[1] - 48) * 10 + Int(digits[2] - 48)
        if line.count == 3 { return (code, true, "") }
        let separator = line[line.startIndex + 3]
        guard separator == UInt8(ascii: " ") || separator == UInt8(ascii: "-") else { throw .malformedLine }
        let textBytes = line[(line.startIndex + 4)...]
        // A CR inside a line (bare CR) or a NUL could hide a second line from a less strict reader.
        if textBytes.contains(13) || textBytes.contains(0) { throw .badLineEnding }
        return (code, separator == UInt8(ascii: " "), String(decoding: textBytes, as: UTF8.self))
    }

    /// Splits off the RFC 2034 enhanced status when the first line starts with one whose class matches the
    /// code, and removes it from every line that repeats it.
    static func makeReply(code: Int, rawLines: [String]) -> Reply {
        guard let first = rawLines.first, let status = leadingStatus(of: first, code: code) else {
            return Reply(code, nil, lines: rawLines)
        }
        // Compared as octets, never as Characters: a space followed by a combining mark is one Character, so
        // `hasPrefix("5.1.1 ")` would miss it and the reply would not survive a round trip (found by FuzzReply).
        let prefix = Array(status.description.utf8)
        let lines = rawLines.map { line -> String in
            let bytes = Array(line.utf8)
            if bytes == prefix { return "" }
            if bytes.count > prefix.count, bytes.starts(with: prefix), bytes[prefix.count] == UInt8(ascii: " ") {
                return String(decoding: bytes[(prefix.count + 1)...], as: UTF8.self)
            }
            return line
        }
        return Reply(code, status, lines: lines)
    }

    private static func leadingStatus(of text: String, code: Int) -> EnhancedStatus? {
        let token = text.utf8.prefix { $0 != UInt8(ascii: " ") }
        guard let status = EnhancedStatus(String(decoding: token, as: UTF8.self)), status.classCode == code / 100
        else { return nil }
        return status
    }
}

extension Reply {
    /// The enhanced status to act on and report: the one the server sent, or `c.0.0` from the first digit
    /// (RFC 3463 §2, §3.1: a reply without an enhanced code counts as the generic status of its class).
    public var effectiveStatus: EnhancedStatus {
        if let status { return status }
        return EnhancedStatus(code / 100, 0, 0)
    }
}
