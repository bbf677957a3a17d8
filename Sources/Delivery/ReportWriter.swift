import Foundation
import Logging
import Metrics
import SMTPProtocol
import Sockets
import Spool

/// Writes and queues the reports the delivery decisions ask for (RFC 3464, RFC 6522): a non-delivery report or a
/// delay notice to the sender (`MAIL FROM:<>`), or, when the failed message was itself a report, a double-bounce
/// notice to `double_bounce_recipient` from the internal sender `double-bounce@<hostname>` naming both queue ids.
/// Who gets what is decided in `RunDecisions.conclude`; this type only composes, commits, logs and counts.
/// A report is committed to the spool before the caller marks its recipients reported: a crash in between gives a
/// duplicate report, never a lost one.
struct ReportWriter: Sendable {
    let spool: Spool
    let logger: Logger
    let hostname: String
    let doubleBounceRecipient: String
    /// The decisions' policy: the give-up time a delay notice names is the one the queue applies.
    let policy: DeliveryPolicy

    var internalSender: String { "double-bounce@\(hostname)" }

    /// The address notices go to: `postmaster` means postmaster at our host name (local Maildir).
    var postmasterAddress: String {
        doubleBounceRecipient.contains("@") ? doubleBounceRecipient : "\(doubleBounceRecipient)@\(hostname)"
    }

    /// Writes and queues one report; returns its queue id. Throws when it could not be made durable (the caller
    /// then keeps the recipients as they are).
    /// `history`: the reporting run's journal buffer, so the `report` entry keeps its place among the run's events.
    func write(
        _ request: RunDecisions.ReportRequest, envelope: Envelope, now: Date, history: HistoryBuffer? = nil
    ) throws(SpoolError) -> QueueID {
        let kind: RecipientReport.Kind
        switch request.kind {
        case .failure: kind = .failed
        case .delay: kind = .delayed
        case .success: kind = .succeeded
        }
        let original = OriginalMessage(
            queueID: envelope.id.rawValue, sender: envelope.sender,
            arrival: Date(timeIntervalSince1970: Double(envelope.arrival)),
            receivedFromMTA: envelope.heloName.isEmpty ? nil : envelope.heloName, envelopeID: envelope.envelopeID,
            bytes: (try? spool.readMessage(envelope.id)) ?? [])
        let recipients = request.indices.map { recipientReport(kind, envelope: envelope, index: $0) }
        let seed = "\(envelope.id)-\(kind.seedLetter)-\(request.indices.map(String.init).joined(separator: "-"))"

        switch request.destination {
        case .postmaster:
            let notice = DeliveryReport.doubleBounceNotice(
                reportingMTA: hostname, postmaster: postmasterAddress, failed: original,
                originalQueueID: envelope.bounceOf?.rawValue, recipients: recipients, now: now, messageIDSeed: seed,
                international: envelope.smtpUTF8)
            let id = try enqueue(notice, sender: internalSender, recipient: postmasterAddress, bounceOf: envelope.id)
            DualMTAMetrics.registry.increment(DualMTAMetrics.doubleBounces)
            journal(envelope, "double-bounce", id, kind: kind, request, history)
            logger.warning(
                "double-bounce",
                metadata: [
                    "original": "\(envelope.bounceOf?.rawValue ?? "unknown")", "notice": "\(id)",
                    "rcpt": "<\(postmasterAddress)>",
                ])
            return id
        case .sender:
            // RFC 3461 §4.3: RET=HDRS returns the header section only, RET=FULL the whole message.
            let returnContent: ReturnContent
            switch envelope.dsnReturn {
            case .full: returnContent = .full
            case .headers: returnContent = .headers
            case nil: returnContent = .automatic
            }
            let report = DeliveryReport.compose(
                reportingMTA: hostname, original: original, recipients: recipients, returnContent: returnContent,
                now: now, messageIDSeed: seed, international: envelope.smtpUTF8)
            let id = try enqueue(report, sender: "", recipient: envelope.sender, bounceOf: envelope.id)
            if kind == .failed { DualMTAMetrics.registry.increment(DualMTAMetrics.bounces) }
            journal(envelope, "report", id, kind: kind, request, history)
            logger.info(
                "\(kind.logName)",
                metadata: [
                    "ndr": "\(id)", "rcpt": "<\(envelope.sender)>", "nrcpt": "\(request.indices.count)",
                ])
            return id
        }
    }

    /// The report in the journal of the message it reports on (`dualmta trace` follows the id).
    private func journal(
        _ envelope: Envelope, _ event: String, _ id: QueueID, kind: RecipientReport.Kind,
        _ request: RunDecisions.ReportRequest, _ history: HistoryBuffer?
    ) {
        let entry = HistoryEvent(
            time: Int64(Date().timeIntervalSince1970), event: event,
            fields: [
                .init("id", id.rawValue), .init("kind", kind.logName),
                .init("rcpts", request.indices.map { envelope.recipients[$0].address }.joined(separator: " ")),
            ])
        if let history {
            history.add([entry])
        } else {
            MessageHistory(stateDirectory: spool.stateDirectory).append(envelope.id, [entry])
        }
    }

    private func recipientReport(_ kind: RecipientReport.Kind, envelope: Envelope, index: Int) -> RecipientReport {
        let recipient = envelope.recipients[index]
        let status: String
        switch kind {
        case .failed: status = recipient.lastStatus?.description ?? "5.0.0"
        case .delayed: status = recipient.lastStatus?.description ?? "4.0.0"
        case .succeeded: status = recipient.lastStatus.flatMap { $0.classCode == 2 ? $0.description : nil } ?? "2.0.0"
        }
        // A success notice says `relayed` when a next hop (without DSN) took the message, `delivered` for Maildir.
        let action: ReportAction
        switch kind {
        case .failed: action = .failed
        case .delayed: action = .delayed
        case .succeeded: action = recipient.remoteMTA == nil ? .delivered : .relayed
        }
        let reason = recipient.lastReply ?? "no reason recorded"
        let lastAttempt = envelope.attempts.last { $0.recipients.contains(recipient.address) }
        // A remote SMTP reply starts with its three-digit code; anything else is our own finding.
        let isSMTPReply = reason.count >= 3 && reason.prefix(3).allSatisfy(\.isNumber)
        return RecipientReport(
            finalRecipient: recipient.address, originalRecipient: recipient.originalRecipient,
            action: action, status: status, remoteMTA: recipient.remoteMTA?.host,
            remoteAddress: recipient.remoteMTA.map { "[\($0.address)]" },
            diagnostic: isSMTPReply ? .smtp(reason) : .local(reason),
            explanation: explanation(kind, status: status, reason: reason),
            lastAttempt: lastAttempt.map { Date(timeIntervalSince1970: Double($0.time)) },
            willRetryUntil: kind == .delayed
                ? RunDecisions.expiryDate(envelope, policy: policy).map { Date(timeIntervalSince1970: Double($0)) }
                : nil)
    }

    private func explanation(_ kind: RecipientReport.Kind, status: String, reason: String) -> String {
        switch kind {
        case .delayed:
            return "The message could not be delivered yet and is still being retried: \(reason)"
        case .failed where status.hasPrefix("4."):
            return "The message stayed in the queue longer than allowed and was given up: \(reason)"
        case .failed:
            return "The message could not be delivered: \(reason)"
        case .succeeded:
            return "The message was passed on: \(reason)"
        }
    }

    /// Queues a generated message through the same commit protocol as received mail.
    private func enqueue(_ bytes: [UInt8], sender: String, recipient: String, bounceOf: QueueID) throws(SpoolError)
        -> QueueID
    {
        let message = try spool.begin()
        do throws(SpoolError) {
            try message.append(bytes)
            let envelope = Envelope(
                arriving: message.id, sender: sender, recipients: [RecipientRecord(address: recipient)],
                client: "local", heloName: hostname, protocolName: "LOCAL",
                bodyType: bytes.contains { $0 >= 0x80 } ? "8BITMIME" : nil,
                smtpUTF8: recipient.utf8.contains { $0 >= 0x80 },
                messageSize: message.size, now: Int64(Date().timeIntervalSince1970), bounceOf: bounceOf)
            try spool.commit(message, envelope: envelope)
            return message.id
        } catch {
            spool.abort(message)
            throw error
        }
    }
}

extension RecipientReport {
    enum Kind: Equatable {
        case failed
        case delayed
        case succeeded

        var seedLetter: String {
            switch self {
            case .failed: return "F"
            case .delayed: return "D"
            case .succeeded: return "S"
            }
        }

        var logName: String {
            switch self {
            case .failed: return "bounce"
            case .delayed: return "delay-notice"
            case .succeeded: return "success-notice"
            }
        }
    }
}
