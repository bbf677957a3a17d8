import Dispatch
import Foundation
import Logging
import NetAddress
import Routing
import SMTPProtocol
import Sockets
import Spool

/// Executes route plans: for each destination domain of a message, asks the `Router` for the plan (the same one
/// `dualmta route` prints), then tries the planned addresses strictly in order (RFC 3974 / RFC 5321 §5.1), one SMTP
/// transaction per address for the recipients still open. Every attempt is logged (one line per recipient) and
/// recorded in the envelope; the transport cache learns what worked and what refused.
///
/// What moves on to the next address (standards.md §1.2 step 8): connection errors, 4xx/5xx greetings, EHLO
/// failures, lost connections, timeouts, and 4xx replies. What stops: 5xx to MAIL/RCPT/DATA (the recipient fails,
/// no other MX is tried) and 2xx (delivered). When every address was tried, the recipients still open are deferred
/// with the most informative temporary status seen.
struct OutboundDelivery: Sendable {
    let router: Router
    let logger: Logger
    let spool: Spool

    /// Per-recipient decisions of one run; the runner stores them and turns failures into bounces.
    struct RunResult {
        var delivered: [Int] = []
        var failed: [Int] = []
        var deferred: [Int] = []
    }

    /// Delivers the recipients at `indices` (all pending and remote). Blocks until every attempt has ended: call it
    /// from a worker thread, never from a connection's queue.
    func deliver(_ envelope: inout Envelope, indices: [Int], now: Date) -> RunResult {
        var result = RunResult()
        var groups: [(destination: Destination?, key: String, indices: [Int])] = []
        for index in indices {
            let address = envelope.recipients[index].address
            let destination = Destination(parsing: address)
            let key = destination?.description ?? address
            if let position = groups.firstIndex(where: { $0.key == key }) {
                groups[position].indices.append(index)
            } else {
                groups.append((destination, key, [index]))
            }
        }
        for group in groups {
            guard let destination = group.destination else {
                for index in group.indices {
                    finish(&envelope, index, state: .failed, status: "5.1.3", reason: "recipient domain does not parse")
                    result.failed.append(index)
                }
                continue
            }
            deliver(&envelope, to: destination, indices: group.indices, now: now, into: &result)
        }
        return result
    }

    private func deliver(
        _ envelope: inout Envelope, to destination: Destination, indices: [Int], now: Date, into result: inout RunResult
    ) {
        let plan = router.plan(destination, now: now)
        for skipped in plan.skipped {
            logger.info(
                "skipped",
                metadata: ["id": "\(envelope.id)", "subject": "\(skipped.subject)", "reason": "\(skipped.reason)"])
        }
        for attempt in plan.attempts {
            if let note = attempt.note {
                logger.info(
                    "route",
                    metadata: [
                        "id": "\(envelope.id)", "mx": "\(attempt.mxHost)", "addr": "\(attempt.address.bracketed)",
                        "note": "\(note)",
                    ])
            }
        }
        switch plan.verdict {
        case .permanentFailure(let status, let reason):
            for index in indices {
                finish(&envelope, index, state: .failed, status: status, reason: reason)
                result.failed.append(index)
            }
            return
        case .temporaryFailure(let status, let reason):
            for index in indices {
                finish(&envelope, index, state: .pending, status: status, reason: reason)
                result.deferred.append(index)
            }
            return
        case .deliverLocally:
            for index in indices {
                finish(&envelope, index, state: .pending, status: "4.4.6", reason: "the route leads back to this host")
                result.deferred.append(index)
            }
            return
        case .deliver:
            break
        }

        var open = indices
        var lastStatus = "4.4.1"
        var lastReason = "no address could be tried"
        var feed = AttemptFeed(plan: plan, configuration: router.configuration)
        let runStarted = ContinuousClock.now
        var deliveredOnce = false
        while !open.isEmpty,
            let fed = feed.next(self, envelope: envelope, recipients: open.map { envelope.recipients[$0].address })
        {
            let attempt = fed.attempt
            let outcome = fed.outcome
            let recipients = open.map { envelope.recipients[$0].address }
            let metricLabels = DualMTAMetrics.labels(attempt.family, rank: fed.rank)
            var tlsFailed = outcome.plaintextRetryReason != nil
            if case .session(let session) = outcome.outcome, case .hostFailed(.tls) = session.kind { tlsFailed = true }
            if tlsFailed {
                DualMTAMetrics.registry.increment(
                    DualMTAMetrics.connectFailures, metricLabels.merging(["reason": "tls"]) { $1 })
            }
            let when = Int64(Date().timeIntervalSince1970)
            func log(_ index: Int, result: String, _ detail: (key: String, value: String), status: String? = nil) {
                var metadata: Logger.Metadata = [
                    "id": "\(envelope.id)", "rcpt": "<\(envelope.recipients[index].address)>",
                    "mx": "\(attempt.mxHost)",
                    "pref": "\(attempt.preference)", "addr": "\(attempt.address.bracketed)",
                    "family": "\(attempt.family)",
                    "result": "\(result)", "ms": "\(outcome.elapsedMilliseconds)",
                ]
                metadata[detail.key] = "\(detail.value)"
                if let status { metadata["status"] = "\(status)" }
                if let tls = outcome.tls {
                    metadata["tls"] = "\(tls.protocolVersion)"
                    metadata["cipher"] = "\(tls.cipher)"
                }
                if let reason = outcome.plaintextRetryReason { metadata["tls_fallback"] = "\(reason)" }
                metadata["tls_policy"] = "\(router.configuration.tlsPolicy(for: attempt, recipients: recipients))"
                logger.info("delivery", metadata: metadata)
                if result == "sent" || result == "rejected" || result == "deferred" {
                    DualMTAMetrics.registry.increment(
                        DualMTAMetrics.remoteRecipients, metricLabels.merging(["result": result]) { $1 })
                }
            }
            func record(_ result: String, _ reply: String, for addresses: [String]) {
                envelope.attempts.append(
                    AttemptRecord(
                        time: when, recipients: addresses, mx: attempt.mxHost, preference: Int(attempt.preference),
                        address: attempt.address.description, family: attempt.family.rawValue, result: result,
                        reply: reply, milliseconds: outcome.elapsedMilliseconds))
            }

            switch outcome.outcome {
            case .connectFailed(let error):
                // Connect-level failures are about the address: remember them so the next messages skip it.
                router.recordFailure(endpoint: attempt.endpoint, reason: error.reason, now: Date())
                for index in open { log(index, result: "failed", ("reason", error.reason)) }
                record("failed", error.description, for: recipients)
                lastStatus = "4.4.1"
                lastReason = error.description
            case .messageUnreadable(let why):
                // Our own problem, not the host's: stop and retry the whole message later.
                for index in open {
                    finish(
                        &envelope, index, state: .pending, status: "4.3.0",
                        reason: "cannot read the queued message: \(why)")
                    result.deferred.append(index)
                }
                return
            case .session(let session):
                switch session.kind {
                case .hostFailed(let failure):
                    // A recipient refused with 5xx before the session broke is refused for good (§1.2 step 8);
                    // the others move on to the next address.
                    var stillOpen: [Int] = []
                    for (position, index) in open.enumerated() {
                        if position < session.recipients.count,
                            case .permanent(let reply) = session.recipients[position].outcome
                        {
                            let text = ClientSession.summary(reply)
                            log(index, result: "rejected", ("reply", text))
                            finish(
                                &envelope, index, state: .failed, status: reply.effectiveStatusText, reason: text,
                                remote: attempt)
                            result.failed.append(index)
                        } else {
                            log(index, result: "failed", ("reason", failure.description))
                            stillOpen.append(index)
                        }
                    }
                    record("failed", failure.description, for: stillOpen.map { envelope.recipients[$0].address })
                    open = stillOpen
                    (lastStatus, lastReason) = Self.temporaryStatus(of: failure, address: attempt)
                    if session.possibleDuplicate {
                        logger.warning(
                            "possible-duplicate",
                            metadata: [
                                "id": "\(envelope.id)", "addr": "\(attempt.address.bracketed)",
                                "reason": "no reply after the end of data: the message may be delivered twice",
                            ])
                    }
                case .aborted(let why):
                    for index in open {
                        finish(&envelope, index, state: .pending, status: "4.3.0", reason: why)
                        result.deferred.append(index)
                    }
                    return
                case .completed:
                    var stillOpen: [Int] = []
                    for (position, index) in open.enumerated() {
                        guard position < session.recipients.count else {
                            stillOpen.append(index)
                            continue
                        }
                        let reply = session.recipients[position].outcome.reply
                        let text = ClientSession.summary(reply)
                        let status = reply.effectiveStatusText
                        switch session.recipients[position].outcome {
                        case .delivered:
                            log(index, result: "sent", ("reply", text))
                            if !deliveredOnce {
                                deliveredOnce = true
                                recordDelivered(
                                    over: attempt.family, rank: fed.rank, firstFamily: feed.firstFamily,
                                    since: runStarted)
                            }
                            CrashPoint.hit("outbound.remote-accepted")
                            router.recordSuccess(
                                destination: destination.description, mxHost: attempt.mxHost,
                                endpoint: attempt.endpoint, now: Date())
                            finish(&envelope, index, state: .delivered, status: status, reason: text, remote: attempt)
                            result.delivered.append(index)
                        case .permanent:
                            log(index, result: "rejected", ("reply", text))
                            finish(&envelope, index, state: .failed, status: status, reason: text, remote: attempt)
                            result.failed.append(index)
                        case .temporary:
                            log(index, result: "deferred", ("reply", text))
                            stillOpen.append(index)
                            lastStatus = status
                            lastReason = "\(attempt.mxHost)[\(attempt.address)] said: \(text)"
                        }
                    }
                    for (position, index) in open.enumerated() where position < session.recipients.count {
                        let entry = session.recipients[position]
                        let outcome: String
                        switch entry.outcome {
                        case .delivered: outcome = "sent"
                        case .permanent: outcome = "rejected"
                        case .temporary: outcome = "deferred"
                        }
                        record(
                            outcome, ClientSession.summary(entry.outcome.reply),
                            for: [envelope.recipients[index].address])
                    }
                    if session.possibleDuplicate {
                        logger.warning(
                            "possible-duplicate",
                            metadata: ["id": "\(envelope.id)", "addr": "\(attempt.address.bracketed)"])
                    }
                    open = stillOpen
                }
            }
        }
        for index in open {
            finish(&envelope, index, state: .pending, status: lastStatus, reason: lastReason)
            result.deferred.append(index)
        }
    }

    /// Runs one attempt and waits for it (the worker thread blocks; the connection runs on its own queue).
    func attemptDelivery(envelope: Envelope, attempt: PlannedAttempt, recipients: [String])
        -> DeliveryAttemptResult
    {
        let configuration = router.configuration
        let source = sourceAddress(for: attempt.family)
        let timeouts = clientTimeouts
        let queue = DispatchQueue(label: "dualmta.outbound")
        let done = DispatchSemaphore(value: 0)
        let box = ResultBox()
        RemoteDelivery.deliver(
            to: SocketAddress(ip: attempt.address, port: attempt.port), from: source,
            connectTimeout: configuration.connectTimeout, timeouts: timeouts, heloName: configuration.heloName,
            sender: envelope.sender, recipients: recipients, messageFile: spool.messagePath(envelope.id),
            bodyType: envelope.bodyType.flatMap(BodyType.init(rawValue:)), smtpUTF8: envelope.smtpUTF8,
            tlsPolicy: configuration.tlsPolicy(for: attempt, recipients: recipients),
            serverName: configuration.tlsServerName(for: attempt), queue: queue
        ) { result in
            box.value = result
            done.signal()
        }
        done.wait()
        return box.value!
    }

    /// Records a recipient's state and logs its line for this run.
    private func finish(
        _ envelope: inout Envelope, _ index: Int, state: RecipientState, status: String, reason: String,
        remote: PlannedAttempt? = nil
    ) {
        envelope.recipients[index].state = state
        envelope.recipients[index].lastStatus = status
        envelope.recipients[index].lastReply = reason
        envelope.recipients[index].updated = Int64(Date().timeIntervalSince1970)
        if let remote {
            envelope.extra["rcpt.\(index).remote"] = "\(remote.mxHost) \(remote.address.bracketed)"
        }
        let result: String
        switch state {
        case .delivered: result = "delivered"
        case .failed: result = "failed"
        case .pending: result = "deferred"
        }
        logger.info(
            "recipient",
            metadata: [
                "id": "\(envelope.id)", "rcpt": "<\(envelope.recipients[index].address)>", "result": "\(result)",
                "status": "\(status)", "reason": "\(reason)",
            ])
    }

    /// The temporary status a host-level failure leaves behind (standards.md §1.5).
    static func temporaryStatus(of failure: HostFailure, address: PlannedAttempt) -> (String, String) {
        // A literal or static route is named by its address already: "[192.0.2.7]", not "[192.0.2.7][192.0.2.7]".
        let whereText = address.mxHost.hasPrefix("[") ? address.mxHost : "\(address.mxHost)[\(address.address)]"
        switch failure {
        case .greeting(let reply), .hello(let reply), .closing(let reply), .tls(let reply):
            let status = reply.code >= 500 ? "4.4.0" : reply.effectiveStatusText
            return (status, "\(whereText): \(failure)")
        case .connectionLost, .protocolError:
            return ("4.4.2", "\(whereText): \(failure)")
        case .timedOut:
            return ("4.4.2", "\(whereText): \(failure)")
        }
    }
}

/// Carries the attempt result from the connection's queue to the waiting worker thread; the semaphore orders
/// the write before the read.
private final class ResultBox: @unchecked Sendable {
    var value: DeliveryAttemptResult?
}

extension IPAddress {
    /// `[2001:db8::1]` / `[192.0.2.1]`, the form log lines use for addresses.
    var bracketed: String { "[\(self)]" }
}

extension Reply {
    /// The enhanced status code of the reply, or `c.0.0` from its first digit (RFC 3463).
    var effectiveStatusText: String {
        if let status { return status.description }
        return "\(code / 100).0.0"
    }
}

extension ClientTimeouts {
    /// Every stage at most `cap` (lab and test setups shorten them all).
    func capped(at cap: Duration) -> ClientTimeouts {
        var copy = self
        copy.greeting = min(greeting, cap)
        copy.ehlo = min(ehlo, cap)
        copy.mail = min(mail, cap)
        copy.rcpt = min(rcpt, cap)
        copy.dataInit = min(dataInit, cap)
        copy.dataBlock = min(dataBlock, cap)
        copy.dataDone = min(dataDone, cap)
        copy.quit = min(quit, cap)
        return copy
    }
}
