import Logging
import SMTPProtocol
import Spool

/// Where one stored recipient goes, decided again at delivery time with the current policy (as Postfix's
/// trivial-rewrite does), from the address text the server validated and stored.
enum RecipientTarget: Equatable {
    case local(domain: String, user: String)
    case remote
    case invalid(String)

    static func classify(_ address: String, policy: RecipientPolicy) -> RecipientTarget {
        let path: ForwardPath
        if address.lowercased() == "postmaster" {
            path = .postmaster
        } else if let mailbox = Mailbox(parsing: Substring(address), allowUTF8: true) {
            path = .mailbox(mailbox)
        } else {
            return .invalid("stored recipient address does not parse")
        }
        switch policy.evaluate(path, clientMayRelay: true) {
        case .success(.local(let domain, let user)): return .local(domain: domain, user: user)
        case .success(.relay): return .remote
        case .failure(let reply): return .invalid(reply.lines.joined(separator: " "))
        }
    }
}

enum LocalOutcome: Equatable {
    case delivered
    case temporaryFailure(String)
    case permanentFailure(String, status: EnhancedStatus)
}

/// Final delivery into Maildir: adds the Return-Path line (RFC 5321 §4.4: only at final delivery) and the
/// Delivered-To line (the envelope recipient, as Postfix and Dovecot write it), turns CRLF into LF, and writes
/// through tmp/ → fsync → rename into new/.
struct LocalDelivery: Sendable {
    let spool: Spool
    let logger: Logger
    let maildir: MaildirWriter

    init(spool: Spool, logger: Logger) {
        self.spool = spool
        self.logger = logger
        self.maildir = MaildirWriter(root: spool.directory + "/mailboxes")
    }

    func deliver(envelope: Envelope, recipientIndex: Int, domain: String, user: String) -> LocalOutcome {
        let recipient = envelope.recipients[recipientIndex].address
        let started = ContinuousClock.now
        do throws(SpoolError) {
            let path = try maildir.deliver(
                prefix: Array("Return-Path: <\(envelope.sender)>\nDelivered-To: \(recipient)\n".utf8),
                messageFile: spool.messagePath(envelope.id), domain: domain, user: user,
                fixedName: "\(envelope.arrival).\(envelope.id).R\(recipientIndex)")
            CrashPoint.hit("local.delivered")
            logger.info(
                "delivery",
                metadata: [
                    "id": "\(envelope.id)", "rcpt": "<\(recipient)>", "result": "delivered", "mailbox": "\(path)",
                    "ms": "\(milliseconds(since: started))",
                ])
            return .delivered
        } catch {
            logger.error(
                "delivery",
                metadata: [
                    "id": "\(envelope.id)", "rcpt": "<\(recipient)>", "result": "deferred", "reason": "\(error)",
                    "ms": "\(milliseconds(since: started))",
                ])
            return .temporaryFailure("local delivery failed: \(error)")
        }
    }
}

func milliseconds(since start: ContinuousClock.Instant) -> Int64 {
    let elapsed = ContinuousClock.now - start
    return elapsed.components.seconds * 1000 + elapsed.components.attoseconds / 1_000_000_000_000_000
}
