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
/// transaction per address for the recipients still open. What each attempt means for the recipients is decided by
/// `DestinationRun.judge` (Decisions/AttemptDecisions.swift, which also lists the rules); this shell runs the
/// attempts and executes the effects: log lines, metrics, transport cache.
struct OutboundDelivery: Sendable {
    let configuration: OutboundConfiguration
    let router: Router
    let logger: Logger
    let spool: Spool
    let work: BlockingWork

    /// Delivers the recipients at `indices` (all pending and remote) and returns the updated envelope.
    func deliver(_ envelope: Envelope, indices: [Int]) async -> Envelope {
        var envelope = envelope
        let effects = EffectExecutor(logger: logger, router: router)
        for group in Self.destinations(of: envelope, indices: indices) {
            guard let destination = group.destination else {
                let now = Int64(Date().timeIntervalSince1970)
                for index in group.indices {
                    effects.execute(
                        envelope.settle(
                            index, .failed, EnhancedStatus(5, 1, 3), "recipient domain does not parse", remote: nil,
                            now: now),
                        envelope: envelope)
                }
                continue
            }
            envelope = await deliver(envelope, to: destination, indices: group.indices)
        }
        return envelope
    }

    /// The recipients grouped by destination, in the order they first appear.
    static func destinations(of envelope: Envelope, indices: [Int]) -> [(destination: Destination?, indices: [Int])] {
        var groups: [(key: String, destination: Destination?, indices: [Int])] = []
        for index in indices {
            let address = envelope.recipients[index].address
            let destination = Destination(parsing: address)
            let key = destination?.description ?? address
            if let position = groups.firstIndex(where: { $0.key == key }) {
                groups[position].indices.append(index)
            } else {
                groups.append((key, destination, [index]))
            }
        }
        return groups.map { ($0.destination, $0.indices) }
    }

    private func deliver(_ envelope: Envelope, to destination: Destination, indices: [Int]) async -> Envelope {
        var envelope = envelope
        let effects = EffectExecutor(logger: logger, router: router)
        let plan = await work.run { [router] in router.plan(destination, now: Date()) }
        effects.execute(DestinationRun.notes(of: plan), envelope: envelope)
        var run = DestinationRun(destination: destination.description, recipients: indices)
        if let verdictEffects = run.judge(
            verdict: plan.verdict, envelope: &envelope, now: Int64(Date().timeIntervalSince1970))
        {
            effects.execute(verdictEffects, envelope: envelope)
            return envelope
        }
        var feed = AttemptFeed(plan: plan, configuration: configuration)
        let started = ContinuousClock.now
        while !run.isDone,
            let fed = await feed.next(
                self, envelope: envelope, recipients: run.open.map { envelope.recipients[$0].address })
        {
            var outcome = fed.outcome
            outcome.tlsPolicy = configuration.tlsPolicy(
                for: fed.attempt, recipients: run.open.map { envelope.recipients[$0].address })
            let judged = run.judge(
                outcome, attempt: fed.attempt, rank: fed.rank, firstFamily: feed.firstFamily,
                envelope: &envelope, now: Int64(Date().timeIntervalSince1970))
            // Once per accepted recipient: the peer has it, the envelope does not say so yet.
            for effect in judged where effect.isCacheSuccess { CrashPoint.hit("outbound.remote-accepted") }
            effects.execute(judged, envelope: envelope, destinationStarted: started)
        }
        effects.execute(
            run.exhausted(envelope: &envelope, now: Int64(Date().timeIntervalSince1970)), envelope: envelope)
        return envelope
    }

    /// Runs one attempt over a new connection; the run is suspended until the attempt ends.
    func attemptDelivery(envelope: Envelope, attempt: PlannedAttempt, recipients: [String]) async
        -> DeliveryAttemptResult
    {
        var request = self.request(envelope: envelope, attempt: attempt, recipients: recipients)
        let connectFault = connectFault(attempt, sender: envelope.sender, recipients: recipients)
        request.connectFault = connectFault?.injection
        let faults = request.faults
        return await withCheckedContinuation { continuation in
            RemoteDelivery.deliver(
                to: SocketAddress(ip: attempt.address, port: attempt.port), request,
                queue: DispatchQueue(label: "dualmta.outbound")
            ) { result in
                var result = result
                result.fault = faults?.fired ?? connectFault?.id
                continuation.resume(returning: result)
            }
        }
    }

    /// What an attempt sends, and how, for the open recipients of `envelope`: the TLS policy of the destination
    /// (`smtp_tls_policy`, else `smtp_tls`) and the MX name for SNI.
    func request(envelope: Envelope, attempt: PlannedAttempt, recipients: [String]) -> AttemptRequest {
        var timeouts = ClientTimeouts()
        if let cap = configuration.replyTimeout { timeouts = timeouts.capped(at: cap) }
        var request = AttemptRequest(
            source: sourceAddress(for: attempt.family), connectTimeout: configuration.connectTimeout,
            timeouts: timeouts,
            heloName: configuration.heloName, sender: envelope.sender, recipients: recipients,
            messageFile: spool.messagePath(envelope.id), bodyType: envelope.bodyType.flatMap(BodyType.init(rawValue:)),
            smtpUTF8: envelope.smtpUTF8, tlsPolicy: configuration.tlsPolicy(for: attempt, recipients: recipients),
            serverName: configuration.tlsServerName(for: attempt))
        request.faults = sessionFaults(attempt, sender: envelope.sender, recipients: recipients)
        return request
    }
}

extension DeliveryEffect {
    var isCacheSuccess: Bool {
        if case .cache(.success) = self { return true }
        return false
    }
}

extension DestinationRun {
    /// The plan's notes for the log: what was skipped and why, and remarks on planned addresses.
    static func notes(of plan: RoutePlan) -> [DeliveryEffect] {
        plan.skipped.map { .log(.skipped(subject: $0.subject, reason: $0.reason)) }
            + plan.attempts.compactMap { attempt in
                attempt.note.map {
                    .log(.routeNote(mx: attempt.mxHost, address: attempt.address.description, note: $0))
                }
            }
    }
}

extension IPAddress {
    /// `[2001:db8::1]` / `[192.0.2.1]`, the form log lines use for addresses.
    var bracketed: String { "[\(self)]" }
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
