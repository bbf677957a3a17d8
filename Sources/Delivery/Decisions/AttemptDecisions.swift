import NetAddress
import Routing
import SMTPProtocol
import Spool

/// What one destination's attempt loop has decided so far: the recipients still open (indices into the envelope)
/// and the temporary status they get if no address is left.
///
/// The rules (RFC 5321 §4.5.4, RFC 3974), applied to each attempt in plan order by `judge`:
/// | outcome of the attempt | the recipients |
/// |---|---|
/// | connect failed (refused, unreachable, timeout) | stay open, next address; the cache skips the address a while |
/// | 4xx/5xx greeting, EHLO refused, connection lost, timeout, protocol error, TLS failure | stay open, next address |
/// | a recipient refused with 5xx before the session broke | that recipient fails; no other MX is tried for it |
/// | 2xx at the end of data | delivered; the cache remembers the MX address |
/// | ... and the peer offers DSN and NOTIFY has SUCCESS | no success notice here: the peer reports (marked `none`) |
/// | 5xx to MAIL, RCPT or DATA | failed, with the peer's reply and the peer as Remote-MTA |
/// | refused by our own check before MAIL (8BITMIME, SMTPUTF8, SIZE) | failed, our reason, no Remote-MTA |
/// | 4xx to MAIL, RCPT or DATA | stays open, next address; that reply is the status if nothing better comes |
/// | the queued message cannot be read, or the session was aborted by us | every open recipient deferred (4.3.0), stop |
/// | no address left | every open recipient deferred with the last temporary status (4.4.1 when none was tried) |
///
/// A parked connection that was dead when taken (closed, reset or 421 before any other reply) never reaches this
/// table: it is not an attempt, and the same address is tried at once on a new connection
/// (`ConnectionReuse.afterReusedSession`, `AttemptMaker.attemptOnParked`). Anything later on a reused connection is
/// judged here like any other attempt.
struct DestinationRun: Equatable, Sendable {
    /// The destination (domain or literal) as the transport cache keys it.
    let destination: String
    private(set) var open: [Int]
    private(set) var lastStatus = EnhancedStatus(4, 4, 1)
    private(set) var lastReason = "no address could be tried"
    private(set) var deliveredOnce = false
    /// Set when the loop must end before the plan is exhausted.
    private(set) var stopped = false

    init(destination: String, recipients: [Int]) {
        self.destination = destination
        self.open = recipients
    }

    var isDone: Bool { stopped || open.isEmpty }

    /// Judges one attempt for the open recipients (the session tried them in `open` order). `now` stamps the
    /// attempt records and recipient updates; `firstFamily` is the family the run's first attempt used.
    mutating func judge(
        _ result: DeliveryAttemptResult, attempt: PlannedAttempt, rank: Int, firstFamily: AddressFamily?,
        envelope: inout Envelope, now: Int64
    ) -> [DeliveryEffect] {
        var effects: [DeliveryEffect] = []
        let tls = result.tls.map { TLSNote(protocolVersion: $0.protocolVersion, cipher: $0.cipher) }
        var connection: String?
        if case .session(let session) = result.outcome { connection = session.reused ? "reused" : "new" }
        func line(_ index: Int, _ outcome: String, _ detail: AttemptLine.Detail) {
            effects.append(
                .log(
                    .attempt(
                        AttemptLine(
                            index: index, attempt: attempt, result: outcome, detail: detail,
                            milliseconds: result.elapsedMilliseconds, tls: tls,
                            tlsFallback: result.plaintextRetryReason,
                            tlsPolicy: result.tlsPolicy?.rawValue, fault: result.fault, connection: connection
                        ))))
            if outcome != "failed" && outcome != "refused" {
                effects.append(.metric(.remoteRecipient(family: attempt.family, rank: rank, result: outcome)))
            }
        }
        func record(_ outcome: String, _ reply: String, for indices: [Int]) {
            envelope.attempts.append(
                AttemptRecord(
                    time: now, recipients: indices.map { envelope.recipients[$0].address }, mx: attempt.mxHost,
                    preference: Int(attempt.preference), address: attempt.address.description,
                    family: attempt.family.rawValue, result: outcome, reply: reply,
                    milliseconds: result.elapsedMilliseconds))
        }
        var tlsFailed = result.plaintextRetryReason != nil
        if case .session(let session) = result.outcome, case .hostFailed(.tls) = session.kind { tlsFailed = true }
        if tlsFailed { effects.append(.metric(.tlsFailure(family: attempt.family, rank: rank))) }
        let remote = RemoteMTA(host: attempt.mxHost, address: attempt.address.description)

        switch result.outcome {
        case .connectFailed(let error):
            // Connect-level failures are about the address: the next messages skip it for a while.
            effects.append(.cache(.failure(endpoint: attempt.endpoint, reason: error.reason)))
            for index in open {
                envelope.recipients[index].attempts += 1
                line(index, "failed", .reason(error.reason))
            }
            record("failed", error.description, for: open)
            lastStatus = EnhancedStatus(4, 4, 1)
            lastReason = error.description
        case .messageUnreadable(let why):
            // Our own problem, not the host's: stop and retry the whole message later.
            effects += deferRecipients(
                open, status: EnhancedStatus(4, 3, 0), "cannot read the queued message: \(why)", &envelope, now)
            stopped = true
        case .session(let session):
            switch session.kind {
            case .aborted: break  // our own failure, not an attempt on the recipients
            case .completed, .hostFailed: for index in open { envelope.recipients[index].attempts += 1 }
            }
            switch session.kind {
            case .hostFailed(let failure):
                // A recipient refused with 5xx before the session broke is refused for good; the others move on.
                var stillOpen: [Int] = []
                for (position, index) in open.enumerated() {
                    if position < session.recipients.count,
                        case .permanent(let reply) = session.recipients[position].outcome
                    {
                        let text = ClientSession.summary(reply)
                        line(index, "rejected", .reply(text))
                        effects += envelope.settle(
                            index, .failed, reply.effectiveStatus, text, remote: remote, now: now)
                    } else {
                        line(index, "failed", .reason(failure.description))
                        stillOpen.append(index)
                    }
                }
                record("failed", failure.description, for: stillOpen)
                open = stillOpen
                (lastStatus, lastReason) = Self.temporaryStatus(of: failure, at: attempt)
                if session.possibleDuplicate {
                    effects.append(.log(.possibleDuplicate(address: attempt.address.description, explained: true)))
                }
            case .aborted(let why):
                effects += deferRecipients(open, status: EnhancedStatus(4, 3, 0), why, &envelope, now)
                stopped = true
            case .completed:
                var stillOpen: [Int] = []
                for (position, index) in open.enumerated() {
                    guard position < session.recipients.count else {
                        stillOpen.append(index)
                        continue
                    }
                    let reply = session.recipients[position].outcome.reply
                    let text = ClientSession.summary(reply)
                    switch session.recipients[position].outcome {
                    case .delivered:
                        line(index, "sent", .reply(text))
                        if !deliveredOnce {
                            deliveredOnce = true
                            let fallback = firstFamily.flatMap { $0 == attempt.family ? nil : $0 }
                            effects.append(
                                .metric(.firstDelivery(family: attempt.family, rank: rank, fallbackFrom: fallback)))
                        }
                        effects.append(
                            .cache(
                                .success(
                                    destination: destination, mxHost: attempt.mxHost, endpoint: attempt.endpoint)))
                        effects += envelope.settle(
                            index, .delivered, reply.effectiveStatus, text, remote: remote, now: now)
                        if session.capabilities?.dsn == true, envelope.recipients[index].notify?.success == true {
                            // RFC 3461 §6.2: the next hop got NOTIFY and reports success itself.
                            envelope.recipients[index].report = ReportMark.none
                        }
                    case .permanent where session.recipients[position].decidedLocally:
                        // Our own refusal (the peer never saw the recipient): no Remote-MTA, no quoted reply.
                        let reason = Self.localDecision(reply, at: attempt)
                        line(index, "refused", .reason(reason))
                        effects += envelope.settle(
                            index, .failed, reply.effectiveStatus, reason, remote: nil, now: now)
                    case .permanent:
                        line(index, "rejected", .reply(text))
                        effects += envelope.settle(
                            index, .failed, reply.effectiveStatus, text, remote: remote, now: now)
                    case .temporary:
                        line(index, "deferred", .reply(text))
                        stillOpen.append(index)
                        lastStatus = reply.effectiveStatus
                        lastReason = "\(attempt.mxHost)[\(attempt.address)] said: \(text)"
                    }
                }
                for (position, index) in open.enumerated() where position < session.recipients.count {
                    let entry = session.recipients[position]
                    let outcome: String
                    switch entry.outcome {
                    case .delivered: outcome = "sent"
                    case .permanent: outcome = entry.decidedLocally ? "refused" : "rejected"
                    case .temporary: outcome = "deferred"
                    }
                    record(outcome, ClientSession.summary(entry.outcome.reply), for: [index])
                }
                if session.possibleDuplicate {
                    effects.append(.log(.possibleDuplicate(address: attempt.address.description, explained: false)))
                }
                open = stillOpen
            }
        }
        return effects
    }

    /// No address is left (or the plan had none): what is still open is deferred with the last temporary status.
    mutating func exhausted(envelope: inout Envelope, now: Int64) -> [DeliveryEffect] {
        let effects = deferRecipients(open, status: lastStatus, lastReason, &envelope, now)
        open = []
        return effects
    }

    /// A verdict that ends the destination without attempts (null MX, unroutable, DNS failure, a route back to us).
    /// Returns nil for `.deliver`: the attempts decide.
    mutating func judge(verdict: RouteVerdict, envelope: inout Envelope, now: Int64) -> [DeliveryEffect]? {
        var effects: [DeliveryEffect] = []
        switch verdict {
        case .deliver:
            return nil
        case .permanentFailure(let status, let reason):
            let status = EnhancedStatus(status) ?? EnhancedStatus(5, 0, 0)
            for index in open { effects += envelope.settle(index, .failed, status, reason, remote: nil, now: now) }
        case .temporaryFailure(let status, let reason):
            effects = deferRecipients(
                open, status: EnhancedStatus(status) ?? EnhancedStatus(4, 0, 0), reason, &envelope, now)
        case .deliverLocally:
            effects = deferRecipients(
                open, status: EnhancedStatus(4, 4, 6), "the route leads back to this host", &envelope, now)
        }
        open = []
        stopped = true
        return effects
    }

    private mutating func deferRecipients(
        _ indices: [Int], status: EnhancedStatus, _ reason: String, _ envelope: inout Envelope, _ now: Int64
    ) -> [DeliveryEffect] {
        var effects: [DeliveryEffect] = []
        for index in indices { effects += envelope.settle(index, .pending, status, reason, remote: nil, now: now) }
        open.removeAll { indices.contains($0) }
        return effects
    }

    /// The reason of a refusal we made before MAIL, naming the host whose offer decided it, e.g. "the message needs
    /// SMTPUTF8 and mx.example.test[192.0.2.1] does not support it". Never starts with a reply code, so reports show
    /// it as our own finding (`x-dualmta`), not as the peer's words.
    static func localDecision(_ reply: Reply, at attempt: PlannedAttempt) -> String {
        let whereText = attempt.mxHost.hasPrefix("[") ? attempt.mxHost : "\(attempt.mxHost)[\(attempt.address)]"
        return "refused before sending to \(whereText): \(reply.lines.joined(separator: " "))"
    }

    /// The temporary status a host-level failure leaves behind: a refused greeting or EHLO keeps the peer's 4xx
    /// status, but a 5xx from a host that did not take the recipient is no verdict on the recipient (4.4.0);
    /// a lost connection or a timeout is 4.4.2.
    static func temporaryStatus(of failure: HostFailure, at attempt: PlannedAttempt) -> (EnhancedStatus, String) {
        // A literal or static route is named by its address already: "[192.0.2.7]", not "[192.0.2.7][192.0.2.7]".
        let whereText = attempt.mxHost.hasPrefix("[") ? attempt.mxHost : "\(attempt.mxHost)[\(attempt.address)]"
        switch failure {
        case .greeting(let reply), .hello(let reply), .closing(let reply), .tls(let reply):
            let status = reply.code >= 500 ? EnhancedStatus(4, 4, 0) : reply.effectiveStatus
            return (status, "\(whereText): \(failure)")
        case .connectionLost, .protocolError, .timedOut:
            return (EnhancedStatus(4, 4, 2), "\(whereText): \(failure)")
        }
    }
}

extension Envelope {
    /// Records a recipient's new state (and, for a final answer from a peer, the peer) and says so in the log.
    mutating func settle(
        _ index: Int, _ state: RecipientState, _ status: EnhancedStatus, _ reason: String, remote: RemoteMTA?,
        now: Int64
    ) -> [DeliveryEffect] {
        recipients[index].state = state
        recipients[index].lastStatus = status
        recipients[index].lastReply = reason
        recipients[index].updated = now
        if let remote { recipients[index].remoteMTA = remote }
        let result: RecipientResult
        switch state {
        case .delivered: result = .delivered
        case .failed: result = .failed
        case .pending: result = .deferred
        }
        return [.log(.recipient(index: index, result: result, status: status, reason: reason))]
    }
}

extension Reply {
    /// The enhanced status code of the reply, or `c.0.0` from its first digit (RFC 3463).
    var effectiveStatus: EnhancedStatus { status ?? EnhancedStatus(code / 100, 0, 0) }
}
