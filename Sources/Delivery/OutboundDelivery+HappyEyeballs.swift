import Dispatch
import Foundation
import Logging
import NetAddress
import Routing
import SMTPProtocol
import Sockets
import Spool

/// What feeds `OutboundDelivery`'s attempt loop: one (attempt, result) at a time, in the order the loop must judge
/// them. `sequential` runs the plan's attempts one by one (RFC 3974). `happy-eyeballs` races each preference level
/// (`ConnectionRacer`), hands back the failed attempts first and then the result of the SMTP session on the winning
/// connection; if that session fails at the host level, the level's attempts not yet judged (the losers, closed
/// when the winner connected) race again. A level is left only when all of its addresses were judged.
struct AttemptFeed {
    struct Fed {
        var attempt: PlannedAttempt
        var outcome: DeliveryAttemptResult
        /// 1 for the plan's first preference level, 2 for the next... (`mx_rank`).
        var rank: Int
    }

    let strategy: ConnectStrategy
    let delay: Duration
    /// Per level, the attempts not yet judged (in Happy Eyeballs order for that strategy).
    private var levels: [(rank: Int, remaining: [PlannedAttempt])]
    private var levelIndex = 0
    private var buffered: [Fed] = []
    /// The family of the first attempt started in this run (for `dualmta_family_fallbacks_total`).
    private(set) var firstFamily: AddressFamily?

    init(plan: RoutePlan, configuration: OutboundConfiguration) {
        strategy = configuration.connectStrategy
        delay = configuration.connectionAttemptDelay
        switch strategy {
        case .sequential:
            levels = HappyEyeballsSchedule.levels(plan.attempts).enumerated().map { ($0.offset + 1, $0.element) }
        case .happyEyeballs:
            levels = HappyEyeballsSchedule(attempts: plan.attempts, delay: delay).levels.map { level in
                (level.rank, level.slots.map(\.attempt))
            }
        }
    }

    /// The next attempt to judge, nil when the plan is exhausted. Blocks while connects and sessions run.
    mutating func next(_ delivery: OutboundDelivery, envelope: Envelope, recipients: [String]) -> Fed? {
        while buffered.isEmpty {
            guard levelIndex < levels.count else { return nil }
            guard !levels[levelIndex].remaining.isEmpty else {
                levelIndex += 1
                continue
            }
            switch strategy {
            case .sequential:
                let attempt = levels[levelIndex].remaining.removeFirst()
                let rank = levels[levelIndex].rank
                firstFamily = firstFamily ?? attempt.family
                let outcome = delivery.attemptDelivery(envelope: envelope, attempt: attempt, recipients: recipients)
                let labels = DualMTAMetrics.labels(attempt.family, rank: rank)
                switch outcome.outcome {
                case .connectFailed(let error):
                    DualMTAMetrics.registry.increment(DualMTAMetrics.connectAttempts, labels)
                    DualMTAMetrics.registry.increment(
                        DualMTAMetrics.connectFailures,
                        labels.merging(["reason": DualMTAMetrics.failureReason(error.error)]) { $1 })
                case .session:
                    DualMTAMetrics.registry.increment(DualMTAMetrics.connectAttempts, labels)
                    DualMTAMetrics.registry.increment(DualMTAMetrics.connectSuccesses, labels)
                case .messageUnreadable:
                    break  // nothing was connected
                }
                buffered.append(Fed(attempt: attempt, outcome: outcome, rank: rank))
            case .happyEyeballs:
                raceLevel(delivery, envelope: envelope, recipients: recipients)
            }
        }
        return buffered.removeFirst()
    }

    /// Races the current level's remaining attempts, logs every started one, and buffers what the loop must judge.
    private mutating func raceLevel(_ delivery: OutboundDelivery, envelope: Envelope, recipients: [String]) {
        let rank = levels[levelIndex].rank
        let attempts = levels[levelIndex].remaining
        let candidates = attempts.map {
            ConnectionRacer.Candidate(attempt: $0, source: delivery.sourceAddress(for: $0.family))
        }
        let queue = DispatchQueue(label: "dualmta.outbound.race")
        let done = DispatchSemaphore(value: 0)
        let box = RaceBox()
        let started = ContinuousClock.now
        ConnectionRacer.race(
            candidates, delay: delay, connectTimeout: delivery.router.configuration.connectTimeout, queue: queue
        ) { outcome in
            box.outcome = outcome
            done.signal()
        }
        done.wait()
        guard let outcome = box.outcome else { return }

        var judged = Set<Int>()
        for report in outcome.reports {
            let attempt = attempts[report.index]
            firstFamily = firstFamily ?? attempt.family
            var metadata: Logger.Metadata = [
                "id": "\(envelope.id)", "mx": "\(attempt.mxHost)", "pref": "\(attempt.preference)",
                "addr": "\(attempt.address.bracketed)", "family": "\(attempt.family)",
                "result": "\(report.result.label)", "ms": "\(report.milliseconds)",
            ]
            let labels = DualMTAMetrics.labels(attempt.family, rank: rank)
            DualMTAMetrics.registry.increment(DualMTAMetrics.connectAttempts, labels)
            switch report.result {
            case .won:
                DualMTAMetrics.registry.increment(DualMTAMetrics.connectSuccesses, labels)
                judged.insert(report.index)
            case .lost:
                DualMTAMetrics.registry.increment(DualMTAMetrics.connectLost, labels)
            case .failed(let error):
                let connectError = ConnectError(
                    address: SocketAddress(ip: attempt.address, port: attempt.port), error: error)
                metadata["reason"] = "\(connectError.reason)"
                DualMTAMetrics.registry.increment(
                    DualMTAMetrics.connectFailures,
                    labels.merging(["reason": DualMTAMetrics.failureReason(error)]) { $1 })
                judged.insert(report.index)
                buffered.append(
                    Fed(
                        attempt: attempt,
                        outcome: DeliveryAttemptResult(
                            address: connectError.address, outcome: .connectFailed(connectError), localAddress: nil,
                            socketError: nil, elapsedMilliseconds: report.milliseconds),
                        rank: rank))
            }
            delivery.logger.info("connect", metadata: metadata)
        }
        levels[levelIndex].remaining = attempts.enumerated().filter { !judged.contains($0.offset) }.map(\.element)

        guard let winner = outcome.winner else { return }
        let attempt = attempts[winner.index]
        // The session's `ms` counts from the winner's own connect, not from the start of the race.
        let winnerStarted =
            outcome.reports.first { $0.index == winner.index }.map {
                ContinuousClock.now - .milliseconds($0.milliseconds)
            }
            ?? started
        let result = delivery.attemptDelivery(
            envelope: envelope, attempt: attempt, over: winner.connection, recipients: recipients,
            started: winnerStarted)
        buffered.append(Fed(attempt: attempt, outcome: result, rank: rank))
    }
}

/// Carries the race outcome from the race queue to the waiting worker thread; the semaphore orders the write before
/// the read.
private final class RaceBox: @unchecked Sendable {
    var outcome: ConnectionRacer.Outcome?
}

/// Same hand-over for a session run over an already connected winner.
private final class SessionBox: @unchecked Sendable {
    var value: DeliveryAttemptResult?
}

extension OutboundDelivery {
    /// `bind_address` / `bind_address6` for `family`, port 0.
    func sourceAddress(for family: AddressFamily) -> SocketAddress? {
        switch family {
        case .ipv4: return router.configuration.bindAddress.map { SocketAddress(ip: $0, port: 0) }
        case .ipv6: return router.configuration.bindAddress6.map { SocketAddress(ip: $0, port: 0) }
        }
    }

    /// RFC 5321 stage timeouts, capped by `smtp_reply_timeout`.
    var clientTimeouts: ClientTimeouts {
        var timeouts = ClientTimeouts()
        if let cap = router.configuration.replyTimeout { timeouts = timeouts.capped(at: cap) }
        return timeouts
    }

    /// Runs the SMTP session on the connection that won a race and waits for it.
    func attemptDelivery(
        envelope: Envelope, attempt: PlannedAttempt, over connection: Connection, recipients: [String],
        started: ContinuousClock.Instant
    ) -> DeliveryAttemptResult {
        let configuration = router.configuration
        let done = DispatchSemaphore(value: 0)
        let box = SessionBox()
        RemoteDelivery.deliver(
            over: connection, from: sourceAddress(for: attempt.family), connectTimeout: configuration.connectTimeout,
            timeouts: clientTimeouts, heloName: configuration.heloName, sender: envelope.sender,
            recipients: recipients, messageFile: spool.messagePath(envelope.id),
            bodyType: envelope.bodyType.flatMap(BodyType.init(rawValue:)), smtpUTF8: envelope.smtpUTF8,
            tlsPolicy: configuration.tlsPolicy(for: attempt, recipients: recipients),
            serverName: configuration.tlsServerName(for: attempt), started: started
        ) { result in
            box.value = result
            done.signal()
        }
        done.wait()
        return box.value
            ?? DeliveryAttemptResult(
                address: connection.peer, outcome: .messageUnreadable("no result"), localAddress: nil,
                socketError: nil, elapsedMilliseconds: 0)
    }

    /// The first accepted recipient of a destination run: delivery latency, and a family fallback when the
    /// message went over the other family than the run's first attempt.
    func recordDelivered(
        over family: AddressFamily, rank: Int, firstFamily: AddressFamily?, since started: ContinuousClock.Instant
    ) {
        let (seconds, attoseconds) = (ContinuousClock.now - started).components
        DualMTAMetrics.registry.observe(
            DualMTAMetrics.deliveryDuration, DualMTAMetrics.labels(family, rank: rank),
            Double(seconds) + Double(attoseconds) / 1e18)
        if let firstFamily, firstFamily != family {
            DualMTAMetrics.registry.increment(
                DualMTAMetrics.familyFallbacks, ["from": firstFamily.rawValue, "to": family.rawValue])
        }
    }
}
