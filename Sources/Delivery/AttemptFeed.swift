import Dispatch
import Foundation
import Logging
import Metrics
import NetAddress
import Routing
import SMTPProtocol
import Sockets
import Spool

/// What feeds `OutboundDelivery`'s attempt loop: one (attempt, result) at a time, in the order the loop must judge
/// them; `AttemptMaker` makes the attempts. `sequential` runs the plan's attempts one by one (RFC 3974). `happy-eyeballs` races each preference level
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
    /// Runs the attempts the feed decides to make; the `connect` lines of a race go to `logger` and, for the
    /// console's time line, to the run's journal.
    let maker: AttemptMaker
    let logger: Logger
    var history: HistoryBuffer? = nil
    /// Per level, the attempts not yet judged (in Happy Eyeballs order for that strategy).
    private var levels: [(rank: Int, remaining: [PlannedAttempt])]
    private var levelIndex = 0
    private var buffered: [Fed] = []
    /// The family of the first attempt started in this run (for `dualmta_family_fallbacks_total`).
    private(set) var firstFamily: AddressFamily?

    init(plan: RoutePlan, maker: AttemptMaker, logger: Logger) {
        self.maker = maker
        self.logger = logger
        strategy = maker.configuration.connectStrategy
        delay = maker.configuration.connectionAttemptDelay
        switch strategy {
        case .sequential:
            levels = HappyEyeballsSchedule.levels(plan.attempts).enumerated().map { ($0.offset + 1, $0.element) }
        case .happyEyeballs:
            levels = HappyEyeballsSchedule(attempts: plan.attempts, delay: delay).levels.map { level in
                (level.rank, level.slots.map(\.attempt))
            }
        }
    }

    /// The next attempt to judge, nil when the plan is exhausted. Suspends while connects and sessions run.
    mutating func next(envelope: Envelope, recipients: [String]) async -> Fed? {
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
                // A parked connection to this very address goes first (no connect); the plan's order is kept.
                let outcome: DeliveryAttemptResult
                if let reused = await maker.attemptOnParked(
                    envelope: envelope, attempt: attempt, recipients: recipients)
                {
                    outcome = reused
                } else {
                    outcome = await maker.attemptDelivery(envelope: envelope, attempt: attempt, recipients: recipients)
                }
                Self.countConnect(outcome, DualMTAMetrics.labels(attempt.family, rank: rank))
                buffered.append(Fed(attempt: attempt, outcome: outcome, rank: rank))
            case .happyEyeballs:
                await raceLevel(envelope: envelope, recipients: recipients)
            }
        }
        return buffered.removeFirst()
    }

    /// The connect metrics of an attempt made without a race: none when it ran on a parked connection.
    private static func countConnect(_ outcome: DeliveryAttemptResult, _ labels: [String: String]) {
        switch outcome.outcome {
        case .connectFailed(let error):
            DualMTAMetrics.registry.increment(DualMTAMetrics.connectAttempts, labels)
            DualMTAMetrics.registry.increment(
                DualMTAMetrics.connectFailures,
                labels.merging(["reason": error.error.metricReason]) { $1 })
        case .session(let session) where !session.reused:
            DualMTAMetrics.registry.increment(DualMTAMetrics.connectAttempts, labels)
            DualMTAMetrics.registry.increment(DualMTAMetrics.connectSuccesses, labels)
        case .session, .messageUnreadable:
            break  // nothing was connected
        }
    }

    /// Races the current level's remaining attempts, logs every started one, and buffers what the loop must judge.
    /// A parked connection to one of them (first in the level's order) wins without a race: nothing to connect.
    private mutating func raceLevel(envelope: Envelope, recipients: [String]) async {
        let rank = levels[levelIndex].rank
        let attempts = levels[levelIndex].remaining
        for (position, attempt) in attempts.enumerated() {
            guard
                let outcome = await maker.attemptOnParked(
                    envelope: envelope, attempt: attempt, recipients: recipients)
            else { continue }
            firstFamily = firstFamily ?? attempt.family
            Self.countConnect(outcome, DualMTAMetrics.labels(attempt.family, rank: rank))
            levels[levelIndex].remaining.remove(at: position)
            buffered.append(Fed(attempt: attempt, outcome: outcome, rank: rank))
            return
        }
        // Connect fault rules are asked once per candidate when the race starts (a candidate the race never starts
        // still counts as a match for first=/every=).
        let candidates = attempts.map {
            ConnectionRacer.Candidate(
                attempt: $0, source: maker.sourceAddress(for: $0.family),
                fault: maker.connectFault($0, sender: envelope.sender, recipients: recipients))
        }
        let started = ContinuousClock.now
        let connectTimeout = maker.configuration.connectTimeout
        let outcome = await withCheckedContinuation { continuation in
            ConnectionRacer.race(
                candidates, delay: delay, connectTimeout: connectTimeout,
                queue: DispatchQueue(label: "dualmta.outbound.race")
            ) { outcome in
                continuation.resume(returning: outcome)
            }
        }

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
            let fault = candidates[report.index].fault?.id
            if let fault { metadata["fault"] = "\(fault)" }
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
                    labels.merging(["reason": error.metricReason]) { $1 })
                judged.insert(report.index)
                buffered.append(
                    Fed(
                        attempt: attempt,
                        outcome: DeliveryAttemptResult(
                            address: connectError.address, outcome: .connectFailed(connectError), localAddress: nil,
                            socketError: nil, elapsedMilliseconds: report.milliseconds, fault: fault),
                        rank: rank))
            }
            logger.info("connect", metadata: metadata)
            var fields = [
                HistoryEvent.Field("mx", attempt.mxHost), HistoryEvent.Field("pref", "\(attempt.preference)"),
                HistoryEvent.Field("addr", attempt.address.description),
                HistoryEvent.Field("family", attempt.family.rawValue),
                HistoryEvent.Field("result", report.result.label), HistoryEvent.Field("ms", "\(report.milliseconds)"),
            ]
            if let reason = metadata["reason"] { fields.append(HistoryEvent.Field("reason", "\(reason)")) }
            if let fault { fields.append(HistoryEvent.Field("fault", fault)) }
            history?.add([HistoryEvent(time: Int64(Date().timeIntervalSince1970), event: "connect", fields: fields)])
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
        var result = await maker.attemptDelivery(
            envelope: envelope, attempt: attempt, over: winner.connection, recipients: recipients,
            started: winnerStarted)
        result.fault = result.fault ?? candidates[winner.index].fault?.id
        buffered.append(Fed(attempt: attempt, outcome: result, rank: rank))
    }
}
