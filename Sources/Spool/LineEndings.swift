/// The spool keeps messages as they travel (CRLF, RFC 5321); a Maildir holds them as local files, with LF line ends
/// as Postfix, Exim, OpenSMTPD and Dovecot write them, so `grep '^X: y$'` and mail readers see plain lines.
/// Converts CRLF to LF across chunk boundaries; any other CR is kept.
public struct CRLFToLF: Sendable {
    /// A CR at the end of the previous chunk, not yet known to be followed by LF.
    private var pendingCR = false

    public init() {}

    public mutating func convert(_ chunk: some Collection<UInt8>) -> [UInt8] {
        var output: [UInt8] = []
        output.reserveCapacity(chunk.count + 1)
        for byte in chunk {
            if pendingCR {
                pendingCR = false
                if byte != UInt8(ascii: "\n") { output.append(UInt8(ascii: "\r")) }
            }
            if byte == UInt8(ascii: "\r") {
                pendingCR = true
            } else {
                output.append(byte)
            }
        }
        return output
    }

    /// What is still held back at the end of the input (a final CR without LF).
    public mutating func finish() -> [UInt8] {
        defer { pendingCR = false }
        return pendingCR ? [UInt8(ascii: "\r")] : []
    }
}
