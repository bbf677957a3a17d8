/// An RFC 3463 enhanced status code (`class.subject.detail`, e.g. `5.1.1`), sent after the reply code on every
/// line once ENHANCEDSTATUSCODES is advertised (RFC 2034).
public struct EnhancedStatus: Hashable, Sendable, CustomStringConvertible {
    /// 2 success, 4 transient failure, 5 permanent failure; equals the first digit of the reply code.
    public var classCode: Int
    public var subject: Int
    public var detail: Int

    public init(_ classCode: Int, _ subject: Int, _ detail: Int) {
        self.classCode = classCode
        self.subject = subject
        self.detail = detail
    }

    /// Parses `c.s.d` with c in 2, 4, 5 and s, d of one to three digits.
    public init?(_ text: String) {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3,
            parts.allSatisfy({ !$0.isEmpty && $0.count <= 3 && $0.allSatisfy { $0.isASCII && $0.isNumber } }),
            let c = Int(parts[0]), let s = Int(parts[1]), let d = Int(parts[2]), [2, 4, 5].contains(c)
        else { return nil }
        self.init(c, s, d)
    }

    public var description: String { "\(classCode).\(subject).\(detail)" }
}

/// One SMTP reply (RFC 5321 §4.2): a code, an optional enhanced status and one or more text lines.
/// It is also an `Error`, so policy checks can return `Result<_, Reply>` carrying the rejection as sent.
public struct Reply: Hashable, Sendable, Error {
    public var code: Int
    public var status: EnhancedStatus?
    public var lines: [String]

    /// - Parameters:
    ///   - code: the three-digit reply code.
    ///   - status: the enhanced status put in front of every line, or nil (greeting, EHLO/HELO replies).
    ///   - text: one entry per reply line; the text must not contain CR or LF.
    public init(_ code: Int, _ status: EnhancedStatus?, _ text: String...) {
        self.init(code, status, lines: text)
    }

    public init(_ code: Int, _ status: EnhancedStatus?, lines: [String]) {
        self.code = code
        self.status = status
        self.lines = lines
    }

    /// The spool has no room for the message (at MAIL, or after the end of data).
    public static let insufficientStorage = Reply(452, EnhancedStatus(4, 3, 1), "Insufficient system storage")
    /// Any other failure to make the message durable.
    public static let queueWriteError = Reply(451, EnhancedStatus(4, 3, 0), "Error: queue file write error")

    /// True for 4yz and 5yz replies.
    public var isFailure: Bool { code >= 400 }

    /// Wire form: `250-first\r\n250 last\r\n`, the enhanced status repeated on every line.
    public var encoded: [UInt8] {
        var out: [UInt8] = []
        encode(into: &out)
        return out
    }

    /// Appends the wire form to `out` (lets the session coalesce several replies into one write).
    public func encode(into out: inout [UInt8]) {
        let texts = lines.isEmpty ? [""] : lines
        let codeText = String(code)
        let statusText = status.map { "\($0) " } ?? ""
        for (index, text) in texts.enumerated() {
            out.append(contentsOf: codeText.utf8)
            out.append(index == texts.count - 1 ? UInt8(ascii: " ") : UInt8(ascii: "-"))
            out.append(contentsOf: statusText.utf8)
            out.append(contentsOf: text.utf8)
            out.append(contentsOf: [13, 10])
        }
    }
}
