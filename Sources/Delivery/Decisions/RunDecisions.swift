import SMTPProtocol
import Spool

/// The decisions of one delivery run that are not about a single attempt: what a local delivery's outcome means,
/// and, once every recipient due in this run has been tried, what happens to the message. Pure: the envelope, the
/// policy and the clock value in; the new envelope and the effects out.
///
/// The rules, one row each in the table tests (`RunDecisionsTests`):
/// | situation | decision |
/// |---|---|
/// | local delivery worked | delivered, 2.0.0 |
/// | local delivery failed for a temporary reason | stays pending (4.3.0), retry after the local retry delay |
/// | the stored recipient is no longer valid | failed, 5.1.1 |
/// | remote recipients deferred | failed-run count + 1, next attempt from `retry_schedule` (the last value repeats) |
/// | `max_queue_lifetime` passed | pending → failed, with the last temporary status, else 4.4.7 |
/// | a report (sender `<>`, or a notice we made) past `bounce_queue_lifetime` | the same, after the shorter time |
/// | recipients failed and not reported yet | one report covering all of them, to the sender |
/// | ... and their NOTIFY is NEVER or lacks FAILURE | no report: marked `none`, logged (`no-report`) |
/// | ... and the sender is `<>` (the failed message is a report) | a double-bounce notice to the postmaster instead |
/// | ... and the message is a double-bounce notice | no report: logged (`discarded`) and dropped |
/// | ... and no bounce settings | marked as reported by nothing |
/// | `delay_warning_after` passed, recipients pending, not warned | one delay notice (never to `<>`) |
/// | ... for the recipients whose NOTIFY has DELAY or is absent | only those; none left → no notice |
/// | recipients delivered with NOTIFY=SUCCESS, not passed on to a DSN next hop | one `delivered`/`relayed` notice |
/// | nothing pending | the message is removed |
/// | still pending | next attempt = the earliest of the retry time, the expiry and the delay-notice time |
enum RunDecisions {
    /// Where a local delivery left the recipient.
    static func judgeLocal(_ outcome: LocalOutcome, index: Int, envelope: inout Envelope, now: Int64)
        -> (effects: [DeliveryEffect], retryLocally: Bool)
    {
        envelope.recipients[index].attempts += 1
        switch outcome {
        case .delivered:
            return (
                envelope.settle(
                    index, .delivered, EnhancedStatus(2, 0, 0), "delivered to Maildir", remote: nil, now: now), false
            )
        case .temporaryFailure(let reason):
            return (envelope.settle(index, .pending, EnhancedStatus(4, 3, 0), reason, remote: nil, now: now), true)
        case .permanentFailure(let reason, let status):
            return (envelope.settle(index, .failed, status, reason, remote: nil, now: now), false)
        }
    }

    /// A stored recipient that no longer parses or is now refused by the recipient policy.
    static func judgeInvalid(reason: String, index: Int, envelope: inout Envelope, now: Int64) -> [DeliveryEffect] {
        envelope.settle(index, .failed, EnhancedStatus(5, 1, 1), reason, remote: nil, now: now)
    }

    /// What this run's deliveries left behind, for `conclude`.
    struct RunSummary: Equatable, Sendable {
        /// A local delivery failed for a temporary reason.
        var localRetry = false
        /// Remote recipients were deferred.
        var remoteDeferred = false
    }

    /// A report the shell must write and queue.
    struct ReportRequest: Equatable, Sendable {
        enum Kind: Equatable, Sendable {
            case failure
            case delay
            /// NOTIFY=SUCCESS: `delivered` (local Maildir) or `relayed` (a next hop without DSN).
            case success
        }
        enum Destination: Equatable, Sendable {
            /// A non-delivery report or delay notice to the sender, from `<>`.
            case sender
            /// The failed message was itself a report: a double-bounce notice to the postmaster.
            case postmaster
        }
        var kind: Kind
        var destination: Destination
        /// The recipients it covers.
        var indices: [Int]
    }

    /// What becomes of the message after the run.
    enum Disposition: Equatable, Sendable {
        /// Nothing pending: remove it from the queue.
        case remove
        /// Still pending: write the envelope; run again at `nextAttempt` (unix seconds), or when woken if nil.
        case keep(nextAttempt: Int64?)
    }

    struct Conclusion: Equatable, Sendable {
        var effects: [DeliveryEffect]
        /// In order: the failure report first, then the delay notice.
        var reports: [ReportRequest]
        var disposition: Disposition
        /// When a failure report cannot be queued, nothing of this run is written and the run is repeated then:
        /// the recipients delivered meanwhile may be delivered again (a duplicate, never a loss).
        var retryAfterReportFailure: Int64
    }

    /// Decides the end of a run. `now` is the clock at the end of the run (retry intervals count from there, so a
    /// slow run does not make the next one overdue at once).
    static func conclude(_ envelope: inout Envelope, summary: RunSummary, policy: DeliveryPolicy, now: Int64)
        -> Conclusion
    {
        var effects = expire(&envelope, policy: policy, now: now)
        var reports: [ReportRequest] = []

        let unreported = envelope.recipients.indices.filter {
            envelope.recipients[$0].state == .failed && envelope.recipients[$0].report == nil
        }
        if !unreported.isEmpty {
            if let bounces = policy.bounces {
                if envelope.sender == bounces.internalSender {
                    // A double-bounce notice that failed: nobody is left to tell (a "triple bounce").
                    for index in unreported { envelope.recipients[index].report = .discarded }
                    effects.append(.log(.discarded(recipients: unreported.count)))
                } else if envelope.sender.isEmpty {
                    // Never a report to <> (RFC 5321 §6.1): the postmaster hears of it instead.
                    reports.append(ReportRequest(kind: .failure, destination: .postmaster, indices: unreported))
                } else {
                    // RFC 3461 §5.2: NOTIFY=NEVER, or a NOTIFY list without FAILURE, means no failure report.
                    let wanted = unreported.filter { Self.wants(envelope.recipients[$0].notify, \.failure) }
                    for index in unreported where !wanted.contains(index) {
                        envelope.recipients[index].report = ReportMark.none
                        effects.append(.log(.noReport(index: index, kind: .failure)))
                    }
                    if !wanted.isEmpty {
                        reports.append(ReportRequest(kind: .failure, destination: .sender, indices: wanted))
                    }
                }
            } else {
                for index in unreported { envelope.recipients[index].report = ReportMark.none }
            }
        }
        if policy.bounces != nil, !envelope.sender.isEmpty, envelope.sender != policy.bounces?.internalSender {
            // NOTIFY=SUCCESS: a `delivered` or `relayed` notice, unless a DSN-capable next hop took the request
            // over (the attempt then marked the recipient).
            let succeeded = envelope.recipients.indices.filter {
                envelope.recipients[$0].state == .delivered && envelope.recipients[$0].report == nil
                    && envelope.recipients[$0].notify?.success == true
            }
            if !succeeded.isEmpty {
                reports.append(ReportRequest(kind: .success, destination: .sender, indices: succeeded))
            }
        }
        if let due = delayWarningDate(envelope, policy: policy), now >= due {
            // RFC 3461 §5.2: a delay notice when DELAY was asked for or NOTIFY was not given.
            let pending = envelope.recipients.indices.filter {
                envelope.recipients[$0].state == .pending && Self.wants(envelope.recipients[$0].notify, \.delay)
            }
            if envelope.sender == policy.bounces?.internalSender || pending.isEmpty {
                envelope.delayWarned = true  // nobody to warn: the postmaster's own notices, or nobody asked
            } else {
                reports.append(ReportRequest(kind: .delay, destination: .sender, indices: pending))
            }
        }

        let retryAfterReportFailure = now + policy.localRetryDelay
        if envelope.isFinished {
            let delivered = envelope.recipients.filter { $0.state == .delivered }.count
            let failed = envelope.recipients.filter { $0.state == .failed }.count
            effects.append(.log(.removed(delivered: delivered, failed: failed)))
            return Conclusion(
                effects: effects, reports: reports, disposition: .remove,
                retryAfterReportFailure: retryAfterReportFailure)
        }

        var retryAt: Int64? = summary.localRetry ? now + policy.localRetryDelay : nil
        if summary.remoteDeferred, policy.remoteDelivery {
            // RFC 5321 §4.5.4.1: keep it and try again later, on the configured schedule.
            envelope.failedRuns += 1
            let next = policy.retrySchedule.nextAttempt(afterFailedRuns: envelope.failedRuns, now: now)
            retryAt = retryAt.map { min($0, next) } ?? next
        }
        guard let retryAt else {
            return Conclusion(
                effects: effects, reports: reports, disposition: .keep(nextAttempt: nil),
                retryAfterReportFailure: retryAfterReportFailure)
        }
        // Never sleep past the expiry or the delay warning: both are decided in a run.
        let deadlines = [expiryDate(envelope, policy: policy), delayWarningDate(envelope, policy: policy)]
            .compactMap { $0 }.filter { $0 > now }
        let wake = ([retryAt] + deadlines).min() ?? retryAt
        envelope.nextAttempt = wake
        effects.append(.log(.deferred(nextAttempt: wake, failedRuns: envelope.failedRuns)))
        return Conclusion(
            effects: effects, reports: reports, disposition: .keep(nextAttempt: wake),
            retryAfterReportFailure: retryAfterReportFailure)
    }

    /// Records a queued report in the envelope: the failed recipients it covers are reported, a delay notice is
    /// sent once. `id` is nil when the report writer dropped it.
    static func recordReport(_ request: ReportRequest, id: QueueID?, envelope: inout Envelope) {
        switch request.kind {
        case .failure:
            for index in request.indices { envelope.recipients[index].report = id.map(ReportMark.queued) ?? .discarded }
        case .delay:
            envelope.delayWarned = true
        case .success:
            for index in request.indices { envelope.recipients[index].report = id.map(ReportMark.queued) ?? .discarded }
        }
    }

    /// Past `max_queue_lifetime`, what is still pending fails with its last temporary status (else 4.4.7).
    static func expire(_ envelope: inout Envelope, policy: DeliveryPolicy, now: Int64) -> [DeliveryEffect] {
        guard let expiry = expiryDate(envelope, policy: policy), now >= expiry else { return [] }
        var effects: [DeliveryEffect] = []
        for index in envelope.recipients.indices where envelope.recipients[index].state == .pending {
            let last = envelope.recipients[index].lastStatus
            let status = last.flatMap { $0.classCode == 4 ? $0 : nil } ?? EnhancedStatus(4, 4, 7)
            let reason = envelope.recipients[index].lastReply.map { "; last error: \($0)" } ?? ""
            envelope.recipients[index].state = .failed
            envelope.recipients[index].lastStatus = status
            envelope.recipients[index].lastReply = "delivery time expired\(reason)"
            effects.append(.log(.expired(index: index, status: status)))
        }
        return effects
    }

    /// When the queue gives up: reports (and anything else from `<>`) live `bounce_queue_lifetime`, the rest
    /// `max_queue_lifetime`.
    /// Whether a recipient's NOTIFY asks for this kind of notice; absent NOTIFY means FAILURE,DELAY (RFC 3461 §5.1).
    static func wants(_ notify: DSNNotify?, _ condition: KeyPath<DSNNotify, Bool>) -> Bool {
        notify.map { $0[keyPath: condition] } ?? true
    }

    static func expiryDate(_ envelope: Envelope, policy: DeliveryPolicy) -> Int64? {
        guard let bounces = policy.bounces else { return nil }
        let isReport = envelope.sender.isEmpty || envelope.bounceOf != nil || envelope.sender == bounces.internalSender
        return envelope.arrival + (isReport ? bounces.bounceQueueLifetime : bounces.maxQueueLifetime)
    }

    static func delayWarningDate(_ envelope: Envelope, policy: DeliveryPolicy) -> Int64? {
        guard let bounces = policy.bounces, bounces.delayWarningAfter > 0, !envelope.delayWarned,
            !envelope.sender.isEmpty
        else { return nil }
        return envelope.arrival + bounces.delayWarningAfter
    }
}
