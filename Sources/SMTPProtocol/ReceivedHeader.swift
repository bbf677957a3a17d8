import NetAddress

/// The RFC 5321 §4.4 trace field we prepend to every accepted message.
public enum ReceivedHeader {
    /// Builds
    /// ```
    /// Received: from <helo> ([<peer literal>])
    /// 	by <hostname> (dualmta) with <protocol> id <queue id>
    /// 	for <rcpt>; <date>
    /// ```
    /// folded with CRLF TAB. `for` appears only with exactly one recipient (several would disclose Bcc, §7.2).
    /// - Parameters:
    ///   - heloName: the validated EHLO/HELO argument.
    ///   - clientAddress: the peer; an IPv4-mapped IPv6 address is written as IPv4.
    ///   - protocolName: RFC 3848 / RFC 6531 `with` value (`Transaction.protocolName`).
    ///   - date: an RFC 5322 date-time, supplied by the caller (no clock here).
    /// - Returns: the header field, ending with CRLF.
    public static func make(
        heloName: String, clientAddress: IPAddress, hostname: String, protocolName: String, queueID: String,
        recipients: [ForwardPath], date: String
    ) -> String {
        var text = "Received: from \(heloName) (\(clientAddress.unmapped.smtpLiteral))\r\n"
        text += "\tby \(hostname) (dualmta) with \(protocolName) id \(queueID)"
        if recipients.count == 1, let only = recipients.first {
            text += "\r\n\tfor <\(only)>; \(date)\r\n"
        } else {
            text += ";\r\n\t\(date)\r\n"
        }
        return text
    }
}
