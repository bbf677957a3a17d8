import NetAddress

/// The TLS parameters of a session, for the Received header and the logs.
public struct TLSDescription: Equatable, Sendable {
    /// "TLSv1.3", "TLSv1.2"
    public var protocolVersion: String
    /// OpenSSL's suite name, e.g. "TLS_AES_256_GCM_SHA384".
    public var cipher: String
    /// Secret bits of the cipher (256 for AES-256), when known.
    public var bits: Int?

    public init(protocolVersion: String, cipher: String, bits: Int?) {
        self.protocolVersion = protocolVersion
        self.cipher = cipher
        self.bits = bits
    }

    /// `using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)`, as Postfix writes it.
    public var comment: String {
        var text = "using \(protocolVersion) with cipher \(cipher)"
        if let bits { text += " (\(bits)/\(bits) bits)" }
        return text
    }
}

/// The RFC 5321 §4.4 trace field we prepend to every accepted message.
public enum ReceivedHeader {
    /// Builds
    /// ```
    /// Received: from <helo> ([<peer literal>])
    /// 	(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))     when encrypted
    /// 	(authenticated user alice)                                           after AUTH
    /// 	by <hostname> (dualmta) with <protocol> id <queue id>
    /// 	for <rcpt>; <date>
    /// ```
    /// folded with CRLF TAB. `for` appears only with exactly one recipient (several would disclose Bcc, RFC 5321 §7.2).
    /// The comments sit between the `from` and `by` clauses, where Postfix puts them (RFC 5321 allows CFWS there).
    /// - Parameters:
    ///   - heloName: the validated EHLO/HELO argument.
    ///   - clientAddress: the peer; an IPv4-mapped IPv6 address is written as IPv4.
    ///   - protocolName: RFC 3848 / RFC 6531 `with` value (`Transaction.protocolName`).
    ///   - date: an RFC 5322 date-time, supplied by the caller (no clock here).
    ///   - tls: the session's TLS parameters, if it was encrypted.
    ///   - authenticatedUser: the AUTH user name, if any; left out unless it is plain printable ASCII (it comes from
    ///     our own users file, but a header must never carry a line break or an unbalanced parenthesis).
    /// - Returns: the header field, ending with CRLF.
    public static func make(
        heloName: String, clientAddress: IPAddress, hostname: String, protocolName: String, queueID: String,
        recipients: [ForwardPath], date: String, tls: TLSDescription? = nil, authenticatedUser: String? = nil
    ) -> String {
        var text = "Received: from \(heloName) (\(clientAddress.unmapped.smtpLiteral))\r\n"
        if let tls { text += "\t(\(tls.comment))\r\n" }
        if let authenticatedUser, LogText.isPlainUser(authenticatedUser) {
            text += "\t(authenticated user \(authenticatedUser))\r\n"
        }
        text += "\tby \(hostname) (dualmta) with \(protocolName) id \(queueID)"
        if recipients.count == 1, let only = recipients.first {
            text += "\r\n\tfor <\(only)>; \(date)\r\n"
        } else {
            text += ";\r\n\t\(date)\r\n"
        }
        return text
    }
}
