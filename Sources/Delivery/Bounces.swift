import Foundation
import Logging
import SMTPProtocol
import Sockets
import Spool

/// Where failures go (RFC 5321 §3.6.2, §4.5.5, §6.1; standards.md §4.5). Every failed or expired recipient ends in
/// exactly one of:
/// - a non-delivery report to the sender (`MAIL FROM:<>`), queued like any message;
/// - when the sender is `<>` (the failed message is itself a bounce): no report — a double-bounce notice to
///   `double_bounce_recipient`, from the internal sender `double-bounce@<hostname>`;
/// - when the failed message is such a notice: a log line and nothing else ("triple bounce", discarded).
/// Reports are committed to the spool before the original's recipients are marked done (reliability.md R4): a crash
/// in between gives a duplicate report, never a lost one.
struct Bouncer: Sendable {
    let spool: Spool
    let logger: Logger
    let hostname: String
    let doubleBounceRecipient: String
    let maxQueueLifetime: Duration

    var internalSender: String { "double-bounce@\(hostname)" }

    /// The address notices go to: `postmaster` means postmaster at our host name (local Maildir).
    var postmasterAddress: String {
        doubleBounceRecipient.contains("@") ? doubleBounceRecipient : "\(doubleBounceRecipient)@\(hostname)"
    }

    enum Kind: Equatable {
        case failed
        case delayed
    }

    /// Reports `indices` of `envelope`. Returns the queued report's id (nil when the notice was discarded);
    /// throws when the report could not be made durable (the caller then keeps the recipients as they are).
    func report(_ kind: Kind, envelope: Envelope, indices: [Int], now: Date) throws(SpoolError) -> QueueID? {
        guard !indices.isEmpty else { return nil }
        let original = OriginalMessage(
            queueID: envelope.id.rawValue, sender: envelope.sender,
            arrival: Date(timeIntervalSince1970: Double(envelope.arrival)),
            receivedFromMTA: envelope.heloName.isEmpty ? nil : envelope.heloName, envelopeID: nil,
            bytes: (try? spool.readMessage(envelope.id)) ?? [])
        let recipients = indices.map { recipientReport(kind, envelope: envelope, index: $0) }
        let seed = "\(envelope.id)-\(kind == .failed ? "F" : "D")-\(indices.map(String.init).joined(separator: "-"))"

        if envelope.sender == internalSender {
            logger.error(
                "discarded",
                metadata: [
                    "id": "\(envelope.id)", "nrcpt": "\(indices.count)",
                    "reason": "an undeliverable double-bounce notice is logged and dropped (triple bounce)",
                ])
            return nil
        }
        if envelope.sender.isEmpty {
            guard kind == .failed else { return nil }  // no delay notices for <> (RFC 3461 §4.3)
            let notice = DeliveryReport.doubleBounceNotice(
                reportingMTA: hostname, postmaster: postmasterAddress, failed: original,
                originalQueueID: envelope.extra["bounce-of"], recipients: recipients, now: now, messageIDSeed: seed)
            let id = try enqueue(notice, sender: internalSender, recipient: postmasterAddress, bounceOf: envelope.id)
            DualMTAMetrics.registry.increment(DualMTAMetrics.doubleBounces)
            logger.warning(
                "double-bounce",
                metadata: [
                    "id": "\(envelope.id)", "original": "\(envelope.extra["bounce-of"] ?? "unknown")",
                    "notice": "\(id)", "rcpt": "<\(postmasterAddress)>",
                ])
            return id
        }
        let report = DeliveryReport.compose(
            reportingMTA: hostname, original: original, recipients: recipients, returnContent: .automatic, now: now,
            messageIDSeed: seed)
        let id = try enqueue(report, sender: "", recipient: envelope.sender, bounceOf: envelope.id)
        if kind == .failed { DualMTAMetrics.registry.increment(DualMTAMetrics.bounces) }
        logger.info(
            kind == .failed ? "bounce" : "delay-notice",
            metadata: [
                "id": "\(envelope.id)", "ndr": "\(id)", "rcpt": "<\(envelope.sender)>", "nrcpt": "\(indices.count)",
            ])
        return id
    }

    private func recipientReport(_ kind: Kind, envelope: Envelope, index: Int) -> RecipientReport {
        let recipient = envelope.recipients[index]
        let status = recipient.lastStatus ?? (kind == .failed ? "5.0.0" : "4.0.0")
        let reason = recipient.lastReply ?? "no reason recorded"
        let remote = envelope.extra["rcpt.\(index).remote"]?.split(separator: " ", maxSplits: 1).map(String.init)
        let lastAttempt = envelope.attempts.last { $0.recipients.contains(recipient.address) }
        // A remote SMTP reply starts with its three-digit code; anything else is our own finding.
        let isSMTPReply = reason.count >= 3 && reason.prefix(3).allSatisfy(\.isNumber)
        return RecipientReport(
            finalRecipient: recipient.address, originalRecipient: nil,
            action: kind == .failed ? .failed : .delayed, status: status, remoteMTA: remote?.first,
            remoteAddress: remote?.dropFirst().first,
            diagnostic: isSMTPReply ? .smtp(reason) : .local(reason),
            explanation: explanation(kind, status: status, reason: reason),
            lastAttempt: lastAttempt.map { Date(timeIntervalSince1970: Double($0.time)) },
            willRetryUntil: kind == .delayed
                ? Date(timeIntervalSince1970: Double(envelope.arrival) + maxQueueLifetime.seconds) : nil)
    }

    private func explanation(_ kind: Kind, status: String, reason: String) -> String {
        switch kind {
        case .delayed:
            return "The message could not be delivered yet and is still being retried: \(reason)"
        case .failed where status.hasPrefix("4."):
            return "The message stayed in the queue longer than allowed and was given up: \(reason)"
        case .failed:
            return "The message could not be delivered: \(reason)"
        }
    }

    /// Queues a generated message through the same commit protocol as received mail.
    private func enqueue(_ bytes: [UInt8], sender: String, recipient: String, bounceOf: QueueID) throws(SpoolError)
        -> QueueID
    {
        let message = try spool.begin()
        do throws(SpoolError) {
            try message.append(bytes)
            let now = Int64(Date().timeIntervalSince1970)
            let envelope = Envelope(
                id: message.id, sender: sender, arrival: now, client: "local", heloName: hostname,
                protocolName: "LOCAL", bodyType: bytes.contains { $0 >= 0x80 } ? "8BITMIME" : nil, smtpUTF8: false,
                messageSize: message.size, nextAttempt: now, held: false, delayWarned: false,
                recipients: [RecipientRecord(address: recipient, state: .pending)], attempts: [],
                extra: ["bounce-of": bounceOf.rawValue])
            try spool.commit(message, envelope: envelope)
            return message.id
        } catch {
            spool.abort(message)
            throw error
        }
    }
}
