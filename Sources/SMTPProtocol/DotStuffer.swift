/// Dot-stuffing for sending DATA (RFC 5321 §4.5.2), the mirror of the server's un-stuffing.
public enum DotStuffer {
    /// Doubles a leading "." on every line and appends the terminator ".\r\n".
    /// - Parameter body: CRLF text; a final line without CRLF gets one, so the terminator always starts a line.
    /// - Returns: the bytes to send after the 354.
    public static func stuff(_ body: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(body.count + body.count / 64 + 5)
        var atLineStart = true
        var runStart = 0
        for index in body.indices {
            let byte = body[index]
            if atLineStart && byte == UInt8(ascii: ".") {
                out.append(contentsOf: body[runStart..<index])
                out.append(UInt8(ascii: "."))
                runStart = index
            }
            atLineStart = byte == 10 && index > 0 && body[index - 1] == 13
        }
        out.append(contentsOf: body[runStart...])
        if !body.isEmpty && !(body.count >= 2 && body[body.count - 2] == 13 && body[body.count - 1] == 10) {
            out.append(contentsOf: [13, 10])
        }
        out.append(contentsOf: [UInt8(ascii: "."), 13, 10])
        return out
    }
}
