import SMTPProtocol

/// Delivery state of one recipient. `delivered` and `failed` are final; a message leaves the queue when no recipient
/// is `pending` (the mark is written before the message is removed).
public enum RecipientState: String, Sendable, Codable, CaseIterable {
    case pending
    case delivered
    case failed
}

/// The host that gave a recipient's final answer: the MX name (or `[literal]` for a static route) and its address,
/// as the report's `Remote-MTA` field names them.
public struct RemoteMTA: Hashable, Sendable {
    public var host: String
    /// The IP address as text, without brackets.
    public var address: String

    public init(host: String, address: String) {
        self.host = host
        self.address = address
    }
}

/// What became of a failed recipient's report. Every failed recipient gets exactly one mark, written in the same
/// envelope update that follows the report's commit, so a crash in between repeats the report, never loses it.
public enum ReportMark: Hashable, Sendable {
    /// A report (or a double-bounce notice) with this queue id covers the recipient.
    case queued(QueueID)
    /// No report exists because none was wanted (no bounce settings, or the sender asked for none).
    case none
    /// The report would have gone to nobody who can take it (a failed double-bounce notice): logged and dropped.
    case discarded
}

/// One envelope recipient and what happened to it last. `address` is the validated wire text, e.g.
/// `alice@example.test` or `"john smith"@lab.example`.
public struct RecipientRecord: Hashable, Sendable {
    public var address: String
    public var state: RecipientState
    /// The last reply or diagnostic text (a peer's reply starts with its three-digit code; our own findings do not).
    public var lastReply: String?
    /// Enhanced status code of the last outcome, e.g. 5.1.1.
    public var lastStatus: EnhancedStatus?
    /// Unix seconds of the last change.
    public var updated: Int64?
    /// The host that gave the final answer, when a remote host did.
    public var remoteMTA: RemoteMTA?
    /// Delivery attempts made for this recipient (one per address tried, local ones included).
    public var attempts: Int
    /// Set once the failure has been reported (or deliberately not reported); nil while none is due.
    public var report: ReportMark?
    /// RFC 3461 parameters given at RCPT: `NOTIFY=` and `ORCPT=` (kept as `addr-type;address`, decoded).
    public var notify: DSNNotify?
    public var originalRecipient: String?

    public init(
        address: String, state: RecipientState = .pending, lastReply: String? = nil,
        lastStatus: EnhancedStatus? = nil, updated: Int64? = nil, remoteMTA: RemoteMTA? = nil, attempts: Int = 0,
        report: ReportMark? = nil, notify: DSNNotify? = nil, originalRecipient: String? = nil
    ) {
        self.address = address
        self.state = state
        self.lastReply = lastReply
        self.lastStatus = lastStatus
        self.updated = updated
        self.remoteMTA = remoteMTA
        self.attempts = attempts
        self.report = report
        self.notify = notify
        self.originalRecipient = originalRecipient
    }
}

/// One delivery attempt to one address of one MX, as `dualmta queue show` prints it.
public struct AttemptRecord: Hashable, Sendable {
    /// Unix seconds.
    public var time: Int64
    public var recipients: [String]
    public var mx: String
    public var preference: Int
    public var address: String
    /// "ipv4" or "ipv6".
    public var family: String
    /// e.g. "sent", "deferred", "failed", "connect-failed".
    public var result: String
    public var reply: String
    public var milliseconds: Int

    public init(
        time: Int64, recipients: [String], mx: String, preference: Int, address: String, family: String,
        result: String, reply: String, milliseconds: Int
    ) {
        self.time = time
        self.recipients = recipients
        self.mx = mx
        self.preference = preference
        self.address = address
        self.family = family
        self.result = result
        self.reply = reply
        self.milliseconds = milliseconds
    }
}

/// Everything the queue knows about a message besides its bytes. Stored in `queue/<id>.env` (see EnvelopeCodec).
public struct Envelope: Hashable, Sendable {
    public var id: QueueID
    /// Reverse path as wire text; "" for the null sender `<>`.
    public var sender: String
    /// Unix seconds when the message was committed.
    public var arrival: Int64
    /// The client, e.g. "[2001:db8::1]:50022"; free text for the spool.
    public var client: String
    public var heloName: String
    /// "SMTP", "ESMTP", "ESMTPS", "ESMTPSA", "local", ...
    public var protocolName: String
    /// BODY= parameter ("7BIT", "8BITMIME") when given.
    public var bodyType: String?
    public var smtpUTF8: Bool
    /// Size of `queue/<id>.msg`; `commit` sets it, `envelope(_:)` checks it.
    public var messageSize: Int64
    /// Unix seconds; 0 means "now".
    public var nextAttempt: Int64
    public var held: Bool
    public var delayWarned: Bool
    /// Delivery runs that ended with recipients deferred; picks the wait from `retry_schedule`.
    public var failedRuns: Int
    /// Set on a report (bounce, delay notice, double-bounce notice): the queue id of the message it reports on.
    public var bounceOf: QueueID?
    /// RFC 3461 `RET=` and `ENVID=` given at MAIL (ENVID decoded from xtext).
    public var dsnReturn: DSNReturn?
    public var envelopeID: String?
    public var recipients: [RecipientRecord]
    public var attempts: [AttemptRecord]
    /// Fields this version does not know (written by a later one), kept as they were. Keys: `[A-Za-z0-9._:-]+`.
    public var extra: [String: String]

    public init(
        id: QueueID, sender: String, arrival: Int64, client: String, heloName: String, protocolName: String,
        bodyType: String? = nil, smtpUTF8: Bool = false, messageSize: Int64 = 0, nextAttempt: Int64 = 0,
        held: Bool = false, delayWarned: Bool = false, failedRuns: Int = 0, bounceOf: QueueID? = nil,
        dsnReturn: DSNReturn? = nil, envelopeID: String? = nil, recipients: [RecipientRecord],
        attempts: [AttemptRecord] = [], extra: [String: String] = [:]
    ) {
        self.id = id
        self.sender = sender
        self.arrival = arrival
        self.client = client
        self.heloName = heloName
        self.protocolName = protocolName
        self.bodyType = bodyType
        self.smtpUTF8 = smtpUTF8
        self.messageSize = messageSize
        self.nextAttempt = nextAttempt
        self.held = held
        self.delayWarned = delayWarned
        self.failedRuns = failedRuns
        self.bounceOf = bounceOf
        self.dsnReturn = dsnReturn
        self.envelopeID = envelopeID
        self.recipients = recipients
        self.attempts = attempts
        self.extra = extra
    }

    /// True when no recipient is still pending: the queue runner may remove the message.
    public var isFinished: Bool { !recipients.contains { $0.state == .pending } }

    /// The rules both the writer and the reader apply, so the spool never writes a file it would later call corrupt.
    /// It checks only what keeps files and logs sane (no control characters in addresses, at least one recipient);
    /// address syntax was validated by the SMTP layer before the message was accepted.
    func validationFailure() -> String? {
        if recipients.isEmpty { return "no recipients" }
        if Self.hasControl(sender) { return "control character in sender" }
        for recipient in recipients {
            if recipient.address.isEmpty { return "empty recipient" }
            if Self.hasControl(recipient.address) { return "control character in recipient" }
        }
        if messageSize < 0 { return "negative message size" }
        if failedRuns < 0 || recipients.contains(where: { $0.attempts < 0 }) { return "negative count" }
        if let envelopeID, Self.hasControl(envelopeID) { return "control character in ENVID" }
        for key in extra.keys where !Self.isExtraKey(key) { return "bad extra key \(key.debugDescription)" }
        return nil
    }

    static func hasControl(_ text: String) -> Bool {
        text.unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x7F || (0x80..<0xA0).contains($0.value) }
    }

    static func isExtraKey(_ key: String) -> Bool {
        !key.isEmpty && key.utf8.count <= 64
            && key.utf8.allSatisfy { byte in
                QueueID.isIDByte(byte) || (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte)
                    || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "_") || byte == UInt8(ascii: ":")
                    || byte == UInt8(ascii: "-")
            }
    }
}

extension Envelope {
    /// The envelope of a message entering the queue: every recipient pending, due at once. SMTP, `dualmta send` and
    /// generated reports all create their envelopes here, so a new field gets its initial value in one place.
    public init(
        arriving id: QueueID, sender: String, recipients: [RecipientRecord], client: String, heloName: String,
        protocolName: String, bodyType: String?, smtpUTF8: Bool, messageSize: Int64, now: Int64,
        dsnReturn: DSNReturn? = nil, envelopeID: String? = nil, bounceOf: QueueID? = nil
    ) {
        self.init(
            id: id, sender: sender, arrival: now, client: client, heloName: heloName, protocolName: protocolName,
            bodyType: bodyType, smtpUTF8: smtpUTF8, messageSize: messageSize, nextAttempt: now, bounceOf: bounceOf,
            dsnReturn: dsnReturn, envelopeID: envelopeID,
            recipients: recipients.map {
                RecipientRecord(
                    address: $0.address, notify: $0.notify, originalRecipient: $0.originalRecipient)
            })
    }
}
