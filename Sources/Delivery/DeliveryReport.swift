import Foundation

// Delivery status notifications (RFC 3464 inside RFC 6522 multipart/report): the bounce or delay
// notice to the original sender, and the postmaster notice for a double bounce. Pure: the clock and the
// Message-ID seed are parameters, the output is the complete message (CRLF line ends) ready for the spool with
// envelope sender <> (RFC 5321 §4.5.5). Deciding *whether* to send one (NOTIFY, null sender) is the caller's job.

/// What happened to one recipient (RFC 3464 §2.3.3). `expanded` is not produced by this MTA.
public enum ReportAction: String, Sendable {
    case failed, delayed, delivered, relayed
}

/// The Diagnostic-Code of a recipient: a remote SMTP reply, or a local cause in our own `x-dualmta` type.
public enum Diagnostic: Sendable, Hashable {
    /// The remote reply, all lines joined, e.g. "550 5.1.1 <bob@site-c.example>: Recipient address rejected".
    case smtp(String)
    /// A local cause, e.g. "connect to [2001:db8::1]:25: No route to host".
    case local(String)

    var type: String {
        switch self {
        case .smtp: return "smtp"
        case .local: return "x-dualmta"
        }
    }

    var text: String {
        switch self {
        case .smtp(let text), .local(let text): return text
        }
    }
}

/// One recipient group of a report.
public struct RecipientReport: Sendable, Hashable {
    /// The address as we tried it, e.g. "bob@site-c.example".
    public var finalRecipient: String
    /// The ORCPT address when the client gave one; a leading `rfc822;` is accepted and not doubled.
    public var originalRecipient: String?
    public var action: ReportAction
    /// RFC 3463 code, e.g. "5.1.1"; a malformed value is reported as the action's generic code (5.0.0, 4.0.0, 2.0.0).
    public var status: String
    /// The MX host name that was involved (goes into Remote-MTA).
    public var remoteMTA: String?
    /// The address we talked to, e.g. "[2001:db8::1]": human text only, as RFC 3464 wants a host name in Remote-MTA.
    public var remoteAddress: String?
    public var diagnostic: Diagnostic?
    /// Plain words from the planner or engine, for the human part.
    public var explanation: String
    public var lastAttempt: Date?
    /// Only reported with `.delayed`.
    public var willRetryUntil: Date?

    public init(
        finalRecipient: String, originalRecipient: String? = nil, action: ReportAction, status: String,
        remoteMTA: String? = nil, remoteAddress: String? = nil, diagnostic: Diagnostic? = nil,
        explanation: String = "", lastAttempt: Date? = nil, willRetryUntil: Date? = nil
    ) {
        self.finalRecipient = finalRecipient
        self.originalRecipient = originalRecipient
        self.action = action
        self.status = status
        self.remoteMTA = remoteMTA
        self.remoteAddress = remoteAddress
        self.diagnostic = diagnostic
        self.explanation = explanation
        self.lastAttempt = lastAttempt
        self.willRetryUntil = willRetryUntil
    }
}

/// The message a report is about, as stored in the spool.
public struct OriginalMessage: Sendable {
    public var queueID: String
    /// The envelope sender; "" is the null reverse-path.
    public var sender: String
    public var arrival: Date
    /// The EHLO name of the client that gave us the message.
    public var receivedFromMTA: String?
    /// The ENVID, already xtext-decoded.
    public var envelopeID: String?
    /// The stored message (CRLF line ends; bare CR or LF are repaired when attached).
    public var bytes: [UInt8]

    public init(
        queueID: String, sender: String, arrival: Date, receivedFromMTA: String? = nil, envelopeID: String? = nil,
        bytes: [UInt8]
    ) {
        self.queueID = queueID
        self.sender = sender
        self.arrival = arrival
        self.receivedFromMTA = receivedFromMTA
        self.envelopeID = envelopeID
        self.bytes = bytes
    }
}

/// What part 3 carries (RFC 3461 RET).
public enum ReturnContent: Sendable {
    /// RET=FULL: the whole message (message/rfc822).
    case full
    /// RET=HDRS: the header section only (text/rfc822-headers).
    case headers
    /// No RET: the whole message up to the size limit, otherwise headers (Postfix bounce_size_limit).
    case automatic
}

public enum DeliveryReport {
    /// Postfix's `bounce_size_limit` default.
    public static let defaultSizeLimit = 50_000

    /// The bounce / delay / success notice to the original sender (RFC 3464, RFC 6522), one recipient group per
    /// entry of `recipients`.
    ///
    /// Part 3 is the whole message only when some recipient failed, `returnContent` allows it and no line of the
    /// message passes 998 octets; otherwise it is the header section (notices that report no failure always carry
    /// headers only, RFC 3461 §6.2).
    /// - Parameters:
    ///   - reportingMTA: our host name (Reporting-MTA, From, Message-ID).
    ///   - original: the message the report is about; its sender must not be null (RFC 5321 §6.1: the caller
    ///     sends a double-bounce notice instead). If it is, the To field becomes `undisclosed-recipients:;`.
    ///   - now: the Date field. - messageIDSeed: unique per report (e.g. the new queue id): the Message-ID and the
    ///     MIME boundary derive from it, so equal inputs give equal bytes.
    ///   - sizeLimit: the `.automatic` limit in octets.
    /// - Returns: the message, CRLF line ends, every line ≤ 998 octets; 8-bit only if the attached original is.
    public static func compose(
        reportingMTA: String, original: OriginalMessage, recipients: [RecipientReport],
        returnContent: ReturnContent, now: Date, messageIDSeed: String, sizeLimit: Int = defaultSizeLimit,
        international: Bool = false
    ) -> [UInt8] {
        let host = ReportFormat.hostName(reportingMTA)
        let actions = Set(recipients.map(\.action))
        let failed = actions.contains(.failed)
        let subject: String
        if failed {
            subject = "Undelivered Mail Returned to Sender"
        } else if actions.contains(.delayed) {
            subject = "Delayed Mail (still being retried)"
        } else {
            subject = "Successful Mail Delivery Report"
        }
        let sender = ReportFormat.singleLine(original.sender).trimmingCharacters(in: .whitespaces)
        let to = sender.isEmpty ? "undisclosed-recipients:;" : "<\(sender)>"

        let normalized = ReportFormat.normalizedLines(original.bytes)
        let wantsFull: Bool
        switch returnContent {
        case .full: wantsFull = true
        case .headers: wantsFull = false
        case .automatic: wantsFull = normalized.bytes.count <= sizeLimit
        }
        let attachFull = failed && wantsFull && normalized.longestLine <= ReportFormat.maxLineOctets
        let attachment: ReportMessage.Attachment =
            attachFull
            ? .message(normalized.bytes) : .headers(ReportFormat.headerSection(normalized.bytes))

        var human: [String] = ["This is the mail delivery system at \(host).", ""]
        if failed {
            human += ReportFormat.wrap(
                "Your message could not be delivered to one or more of its recipients. This is a permanent "
                    + "error: the mail system has given up on the recipients marked \"delivery failed\" below.")
            human.append("")
        }
        if actions.contains(.delayed) {
            let untils = Set(recipients.filter { $0.action == .delayed }.compactMap(\.willRetryUntil))
            var text =
                "Your message has not yet been delivered to the recipients marked \"delivery delayed\" below. "
                + "This is only a warning: you do not need to send the message again. The mail system keeps trying"
            if untils.count == 1, let until = untils.first {
                text += " until \(ReportFormat.rfc5322Date(until))."
            } else {
                text += " until the time shown for each recipient."
            }
            human += ReportFormat.wrap(text)
            human.append("")
        }
        if actions.contains(.delivered) || actions.contains(.relayed) {
            human += ReportFormat.wrap(
                "Your message was delivered to the recipients marked \"delivered\" below; for those marked "
                    + "\"relayed\" it was passed on to a system that does not send delivery reports, so you may get "
                    + "no further notice about them.")
            human.append("")
        }
        for recipient in recipients {
            human += humanLines(for: recipient)
            human.append("")
        }
        human += ReportFormat.wrap(
            "Your message was received on \(ReportFormat.rfc5322Date(original.arrival)) (queue id "
                + "\(ReportFormat.singleLine(original.queueID))). "
                + (attachFull ? "It is attached below." : "Its header section is attached below."))

        var report = ReportMessage(
            topHeaders: [
                ("From", "Mail Delivery System <MAILER-DAEMON@\(host)>"),
                ("To", to),
                ("Subject", subject),
                ("Date", ReportFormat.rfc5322Date(now)),
                ("Message-ID", messageID(seed: messageIDSeed, now: now, host: host)),
                // RFC 3834 §5: keeps auto-responders from answering the bounce.
                ("Auto-Submitted", "auto-replied"),
            ],
            human: human,
            perMessage: perMessageFields(reportingMTA: reportingMTA, message: original),
            groups: recipients.map { groupFields(for: $0, queueID: original.queueID) },
            attachment: attachment,
            attachmentDescription: attachFull ? "Undelivered message" : "Undelivered message headers",
            boundarySeed: ReportFormat.fnv1a([messageIDSeed, original.queueID, ReportFormat.compactStamp(now)])
        )
        report.global = international
        return report.render()
    }

    /// The postmaster notice for a double bounce (RFC 5321 §4.5.5): a message with null sender
    /// (usually our own bounce) that could not be delivered. It has the same multipart/report structure, comes
    /// from the internal `double-bounce@host` sender (whose failures end the chain), names both queue ids and
    /// attaches the failed message's header section (or the whole message, when `attach` is `.full`).
    /// - Parameters:
    ///   - postmaster: the recipient; a bare local part such as "postmaster" gets `@reportingMTA`.
    ///   - failed: the undeliverable null-sender message. - originalQueueID: the message it was a bounce of.
    public static func doubleBounceNotice(
        reportingMTA: String, postmaster: String, failed: OriginalMessage, originalQueueID: String?,
        recipients: [RecipientReport], now: Date, messageIDSeed: String, attach: ReturnContent = .headers,
        sizeLimit: Int = defaultSizeLimit, international: Bool = false
    ) -> [UInt8] {
        let host = ReportFormat.hostName(reportingMTA)
        var postmasterAddress = ReportFormat.singleLine(postmaster).trimmingCharacters(in: .whitespaces)
        if postmasterAddress.isEmpty { postmasterAddress = "postmaster" }
        if !postmasterAddress.contains("@") { postmasterAddress += "@\(host)" }
        let failedID = ReportFormat.singleLine(failed.queueID)
        let originalID = originalQueueID.map(ReportFormat.singleLine)

        let normalized = ReportFormat.normalizedLines(failed.bytes)
        let wantsFull: Bool
        switch attach {
        case .full: wantsFull = true
        case .headers: wantsFull = false
        case .automatic: wantsFull = normalized.bytes.count <= sizeLimit
        }
        let attachFull = wantsFull && normalized.longestLine <= ReportFormat.maxLineOctets
        let attachment: ReportMessage.Attachment =
            attachFull
            ? .message(normalized.bytes) : .headers(ReportFormat.headerSection(normalized.bytes))

        let sender = ReportFormat.singleLine(failed.sender)
        var human: [String] = ["This is the mail delivery system at \(host).", ""]
        human += ReportFormat.wrap(
            "A message with a null sender (normally a delivery status notification, a bounce) could not be "
                + "delivered. A null-sender message is never bounced, so nobody else is told: this notice goes to "
                + "the postmaster instead.")
        human.append("")
        human.append("Undeliverable message: queue id \(failedID)")
        human.append("Original message:      " + (originalID.map { "queue id \($0)" } ?? "not known"))
        human.append("Its sender:            <\(sender)>" + (sender.isEmpty ? " (null)" : ""))
        human.append("Received:              \(ReportFormat.rfc5322Date(failed.arrival))")
        human.append("")
        for recipient in recipients {
            human += humanLines(for: recipient)
            human.append("")
        }
        human += ReportFormat.wrap(
            attachFull
                ? "The undeliverable message is attached below."
                : "The header section of the undeliverable message is attached below.")

        var subject = "Undeliverable bounce: queue id \(failedID)"
        if let originalID { subject += " (bounce of \(originalID))" }
        var perMessage = perMessageFields(reportingMTA: reportingMTA, message: failed)
        if let originalID {
            // RFC 3464 §3: extension fields start with "X-".
            perMessage.append(("X-Dualmta-Original-Log-ID", ReportFormat.ascii(originalID)))
        }
        var report = ReportMessage(
            topHeaders: [
                ("From", "Mail Delivery System <double-bounce@\(host)>"),
                ("To", "<\(postmasterAddress)>"),
                ("Subject", ReportFormat.ascii(subject)),
                ("Date", ReportFormat.rfc5322Date(now)),
                ("Message-ID", messageID(seed: messageIDSeed, now: now, host: host)),
                ("Auto-Submitted", "auto-generated"),
            ],
            human: human,
            perMessage: perMessage,
            groups: recipients.map { groupFields(for: $0, queueID: failed.queueID) },
            attachment: attachment,
            attachmentDescription: attachFull ? "Undeliverable message" : "Undeliverable message headers",
            boundarySeed: ReportFormat.fnv1a([messageIDSeed, failed.queueID, ReportFormat.compactStamp(now)])
        )
        report.global = international
        return report.render()
    }

    // MARK: Parts

    static func messageID(seed: String, now: Date, host: String) -> String {
        "<\(ReportFormat.compactStamp(now)).\(ReportFormat.idToken(seed))@\(host)>"
    }

    /// Per-message fields (RFC 3464 §2.2), ASCII only.
    static func perMessageFields(reportingMTA: String, message: OriginalMessage) -> [(String, String)] {
        var fields: [(String, String)] = []
        if let envelopeID = message.envelopeID {
            fields.append(("Original-Envelope-Id", ReportFormat.ascii(envelopeID)))
        }
        fields.append(("Reporting-MTA", "dns; " + ReportFormat.ascii(reportingMTA)))
        if let client = message.receivedFromMTA, !client.isEmpty {
            fields.append(("Received-From-MTA", "dns; " + ReportFormat.ascii(client)))
        }
        fields.append(("Arrival-Date", ReportFormat.rfc5322Date(message.arrival)))
        return fields
    }

    /// Per-recipient fields (RFC 3464 §2.3), ASCII only.
    static func groupFields(for recipient: RecipientReport, queueID: String) -> [(String, String)] {
        var fields: [(String, String)] = []
        if let original = recipient.originalRecipient, !original.isEmpty {
            fields.append(("Original-Recipient", ReportFormat.originalRecipient(original)))
        }
        fields.append(("Final-Recipient", ReportFormat.typedAddress(recipient.finalRecipient)))
        fields.append(("Action", recipient.action.rawValue))
        fields.append(("Status", ReportFormat.status(recipient.status, action: recipient.action)))
        if let mta = recipient.remoteMTA, !mta.isEmpty {
            fields.append(("Remote-MTA", "dns; " + ReportFormat.ascii(mta)))
        }
        if let diagnostic = recipient.diagnostic {
            fields.append(("Diagnostic-Code", diagnostic.type + "; " + ReportFormat.ascii(diagnostic.text)))
        }
        if let last = recipient.lastAttempt {
            fields.append(("Last-Attempt-Date", ReportFormat.rfc5322Date(last)))
        }
        if recipient.action == .delayed, let until = recipient.willRetryUntil {
            fields.append(("Will-Retry-Until", ReportFormat.rfc5322Date(until)))
        }
        fields.append(("Final-Log-ID", ReportFormat.ascii(queueID)))
        return fields
    }

    /// The human description of one recipient (part 1; may contain UTF-8, encoded later).
    static func humanLines(for recipient: RecipientReport) -> [String] {
        let address = ReportFormat.singleLine(recipient.finalRecipient)
        let outcome: String
        switch recipient.action {
        case .failed: outcome = "delivery failed"
        case .delayed: outcome = "delivery delayed, still trying"
        case .delivered: outcome = "delivered"
        case .relayed: outcome = "relayed"
        }
        var lines = ["<\(address)>: \(outcome)"]
        let indent = "    "
        func field(_ label: String, _ value: String) {
            lines += ReportFormat.wrap(value, firstPrefix: indent + label + ": ", indent: indent + "    ")
        }
        if let original = recipient.originalRecipient, !original.isEmpty {
            // The human text shows the address without its ORCPT "type;" prefix.
            let shown = ReportFormat.originalRecipient(original).split(separator: ";", maxSplits: 1).last
            field("Originally addressed to", shown.map { $0.trimmingCharacters(in: .whitespaces) } ?? original)
        }
        let status = ReportFormat.status(recipient.status, action: recipient.action)
        let kind: String
        switch status.first {
        case "2": kind = "success"
        case "4": kind = "temporary failure"
        default: kind = "permanent failure"
        }
        field("Status", "\(status) (\(kind))")
        switch (recipient.remoteMTA, recipient.remoteAddress) {
        case (let name?, let address?): field("Remote host", name.hasPrefix("[") ? name : "\(name) \(address)")
        case (let name?, nil): field("Remote host", name)
        case (nil, let address?): field("Remote host", address)
        case (nil, nil): break
        }
        switch recipient.diagnostic {
        case .smtp(let text)?: field("The remote server said", text)
        case .local(let text)?: field("This server decided", text)
        case nil: break
        }
        if !recipient.explanation.isEmpty {
            field("Reason", recipient.explanation)
        }
        if let last = recipient.lastAttempt {
            field("Last attempt", ReportFormat.rfc5322Date(last))
        }
        if recipient.action == .delayed, let until = recipient.willRetryUntil {
            field("Retrying until", ReportFormat.rfc5322Date(until))
        }
        return lines
    }
}

/// The multipart/report skeleton shared by both notices.
struct ReportMessage {
    enum Attachment {
        case message([UInt8])
        case headers([UInt8])
    }

    var topHeaders: [(String, String)]
    var human: [String]
    var perMessage: [(String, String)]
    var groups: [[(String, String)]]
    var attachment: Attachment
    var attachmentDescription: String
    var boundarySeed: UInt64
    /// RFC 6533: the report is about an SMTPUTF8 message, so its parts are `message/global-delivery-status` and
    /// `message/global` / `message/global-headers` (which may carry UTF-8 headers).
    var global = false

    func render() -> [UInt8] {
        let crlf: [UInt8] = [13, 10]
        let humanIsASCII = human.allSatisfy { $0.unicodeScalars.allSatisfy(\.isASCII) }
        var part1: [UInt8] = []
        for line in humanIsASCII ? human : ReportFormat.quotedPrintable(human) {
            part1 += Array(line.utf8) + crlf
        }

        var part2: [UInt8] = []
        // Groups are separated by one empty line; none after the last, or parsers see an empty extra group.
        for (index, group) in ([perMessage] + groups).enumerated() {
            if index > 0 { part2 += crlf }
            for (name, value) in group {
                for line in ReportFormat.fold(name, value) { part2 += Array(line.utf8) + crlf }
            }
        }

        let part3: [UInt8]
        let part3Type: String
        switch attachment {
        case .message(let bytes):
            part3 = bytes
            part3Type = global ? "message/global" : "message/rfc822"
        case .headers(let bytes):
            part3 = bytes
            part3Type = global ? "message/global-headers" : "text/rfc822-headers"
        }
        // message/rfc822 may not be QP/base64-encoded (RFC 2046 §5.2.1): 8-bit content is declared as such.
        let eightBit = part3.contains { $0 >= 0x80 }

        let boundary = chooseBoundary(avoiding: [part1, part2, part3])

        var out: [UInt8] = []
        func header(_ name: String, _ value: String) {
            for line in ReportFormat.fold(name, ReportFormat.singleLine(value)) { out += Array(line.utf8) + crlf }
        }
        for (name, value) in topHeaders { header(name, value) }
        header("MIME-Version", "1.0")
        out += Array("Content-Type: multipart/report; report-type=delivery-status;".utf8) + crlf
        out += Array("\tboundary=\"\(boundary)\"".utf8) + crlf
        if eightBit { header("Content-Transfer-Encoding", "8bit") }
        out += crlf
        out += Array("This is a MIME-encapsulated delivery status notification.".utf8) + crlf
        out += crlf

        let dash = Array("--\(boundary)".utf8)
        out += dash + crlf
        header("Content-Description", "Notification")
        if humanIsASCII {
            header("Content-Type", "text/plain; charset=us-ascii")
        } else {
            header("Content-Type", "text/plain; charset=utf-8")
            header("Content-Transfer-Encoding", "quoted-printable")
        }
        out += crlf + part1 + crlf

        out += dash + crlf
        header("Content-Description", "Delivery report")
        header("Content-Type", global ? "message/global-delivery-status" : "message/delivery-status")
        out += crlf + part2 + crlf

        out += dash + crlf
        header("Content-Description", attachmentDescription)
        header("Content-Type", part3Type)
        if eightBit { header("Content-Transfer-Encoding", "8bit") }
        out += crlf + part3 + crlf
        out += dash + Array("--".utf8) + crlf
        return out
    }

    /// A boundary that occurs nowhere in the parts (RFC 2046 §5.1.1), derived from the seed so output is
    /// deterministic; on the (unlikely) clash a counter is appended.
    private func chooseBoundary(avoiding parts: [[UInt8]]) -> String {
        let base = "=_dualmta_" + String(boundarySeed, radix: 16, uppercase: true)
        var candidate = base
        var counter = 0
        while parts.contains(where: { ReportFormat.contains($0, Array(candidate.utf8)) }) {
            counter += 1
            candidate = base + "." + String(counter)
        }
        return candidate
    }
}
