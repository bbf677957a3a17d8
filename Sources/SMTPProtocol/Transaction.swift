/// The MAIL `BODY=` parameter (RFC 6152).
public enum BodyType: String, Sendable {
    case sevenBit = "7BIT"
    case eightBitMIME = "8BITMIME"
}

/// Where an accepted recipient goes: a local Maildir (directory names already lowercased and checked) or relay.
public enum RecipientDisposition: Hashable, Sendable {
    case local(domain: String, user: String)
    case relay
}

public struct AcceptedRecipient: Hashable, Sendable {
    public var path: ForwardPath
    public var disposition: RecipientDisposition
    /// RFC 3461 `NOTIFY=` and `ORCPT=` (`addr-type;address`, decoded), when given.
    public var notify: DSNNotify?
    public var originalRecipient: String?

    public init(
        path: ForwardPath, disposition: RecipientDisposition, notify: DSNNotify? = nil,
        originalRecipient: String? = nil
    ) {
        self.path = path
        self.disposition = disposition
        self.notify = notify
        self.originalRecipient = originalRecipient
    }
}

/// One mail transaction's envelope (MAIL, RCPT…): what RSET, EHLO and the end of DATA drop.
public struct Transaction: Hashable, Sendable {
    public var reversePath: ReversePath
    public var recipients: [AcceptedRecipient]
    public var bodyType: BodyType?
    public var smtpUTF8: Bool
    /// The MAIL `SIZE=` value, if the client declared one.
    public var declaredSize: Int?
    /// The validated EHLO/HELO argument.
    public var heloName: String
    /// RFC 3848 / RFC 6531 `with` value for the Received header: SMTP, ESMTP, ESMTPS, UTF8SMTP, UTF8SMTPS.
    public var protocolName: String
    /// Set when `sender_return_check = warn` found that bounces could not reach the sender; the driver adds it to
    /// the message as a header.
    public var returnPathWarning: String? = nil
    /// RFC 3461 `RET=` and `ENVID=` (decoded), when given.
    public var dsnReturn: DSNReturn? = nil
    public var envelopeID: String? = nil

    public init(
        reversePath: ReversePath, recipients: [AcceptedRecipient] = [], bodyType: BodyType? = nil,
        smtpUTF8: Bool = false, declaredSize: Int? = nil, heloName: String, protocolName: String
    ) {
        self.reversePath = reversePath
        self.recipients = recipients
        self.bodyType = bodyType
        self.smtpUTF8 = smtpUTF8
        self.declaredSize = declaredSize
        self.heloName = heloName
        self.protocolName = protocolName
    }
}
