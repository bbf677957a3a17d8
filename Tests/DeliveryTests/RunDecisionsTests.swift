import SMTPProtocol
import Spool
import Testing

@testable import Delivery

/// One row per rule of `RunDecisions` (the end of a delivery run): retries, expiry, reports, double bounces,
/// discards, delay notices, removal. The clock is a number; nothing waits.
@Suite struct RunDecisionsTests {
    static let id = QueueID("0M8ZK3Q1F2A7XQ")!
    static let arrival: Int64 = 1_800_000_000
    static let policy = DeliveryPolicy(
        retrySchedule: RetrySchedule([.seconds(60), .seconds(300), .seconds(900)]), localRetryDelay: 30,
        bounces: .init(
            maxQueueLifetime: 86_400, bounceQueueLifetime: 43_200, delayWarningAfter: 3_600,
            internalSender: "double-bounce@mta.test"),
        remoteDelivery: true)

    static func envelope(
        sender: String = "s@example.org", _ recipients: [RecipientRecord], failedRuns: Int = 0, warned: Bool = false,
        bounceOf: QueueID? = nil
    ) -> Envelope {
        Envelope(
            id: id, sender: sender, arrival: arrival, client: "local", heloName: "h", protocolName: "ESMTP",
            delayWarned: warned, failedRuns: failedRuns, bounceOf: bounceOf, recipients: recipients)
    }

    static func pending(_ status: EnhancedStatus? = nil, _ reply: String? = nil) -> RecipientRecord {
        RecipientRecord(address: "p@example.net", state: .pending, lastReply: reply, lastStatus: status)
    }
    static let failed = RecipientRecord(
        address: "f@example.net", state: .failed, lastReply: "550 5.1.1 unknown", lastStatus: EnhancedStatus(5, 1, 1))
    static let delivered = RecipientRecord(address: "d@example.net", state: .delivered)

    // MARK: retries

    @Test(arguments: [(0, 60), (1, 300), (2, 900), (3, 900), (40, 900)])
    func deferredRemoteRecipientsFollowTheScheduleAndTheLastValueRepeats(runsBefore: Int, wait: Int64) {
        var envelope = Self.envelope([Self.pending(EnhancedStatus(4, 4, 1))], failedRuns: runsBefore)
        let now = Self.arrival + 10
        let conclusion = RunDecisions.conclude(
            &envelope, summary: .init(remoteDeferred: true), policy: Self.policy, now: now)
        #expect(envelope.failedRuns == runsBefore + 1)
        #expect(conclusion.disposition == .keep(nextAttempt: now + wait))
        #expect(envelope.nextAttempt == now + wait)
        #expect(conclusion.effects == [.log(.deferred(nextAttempt: now + wait, failedRuns: runsBefore + 1))])
        #expect(conclusion.reports.isEmpty)
    }

    @Test func aTemporaryLocalFailureRetriesAfterTheLocalDelayWithoutCountingARun() {
        var envelope = Self.envelope([Self.pending(EnhancedStatus(4, 3, 0))])
        let conclusion = RunDecisions.conclude(
            &envelope, summary: .init(localRetry: true), policy: Self.policy, now: Self.arrival + 5)
        #expect(conclusion.disposition == .keep(nextAttempt: Self.arrival + 35))
        #expect(envelope.failedRuns == 0)
    }

    @Test func localAndRemoteRetriesTakeTheEarlier() {
        var envelope = Self.envelope([Self.pending(), Self.pending()])
        let conclusion = RunDecisions.conclude(
            &envelope, summary: .init(localRetry: true, remoteDeferred: true), policy: Self.policy, now: Self.arrival)
        #expect(conclusion.disposition == .keep(nextAttempt: Self.arrival + 30))
    }

    @Test func theNextRunNeverSleepsPastTheDelayWarningOrTheExpiry() {
        var policy = Self.policy
        policy.retrySchedule = RetrySchedule([.seconds(7_200)])
        var envelope = Self.envelope([Self.pending()])
        let early = RunDecisions.conclude(
            &envelope, summary: .init(remoteDeferred: true), policy: policy, now: Self.arrival + 100)
        #expect(early.disposition == .keep(nextAttempt: Self.arrival + 3_600))

        var warned = Self.envelope([Self.pending()], warned: true)
        let late = RunDecisions.conclude(
            &warned, summary: .init(remoteDeferred: true), policy: policy, now: Self.arrival + 86_000)
        #expect(late.disposition == .keep(nextAttempt: Self.arrival + 86_400))
    }

    @Test func withoutAnOutboundTransportRemoteRecipientsWaitUnscheduled() {
        var policy = Self.policy
        policy.remoteDelivery = false
        var envelope = Self.envelope([Self.pending()])
        let conclusion = RunDecisions.conclude(
            &envelope, summary: .init(remoteDeferred: true), policy: policy, now: Self.arrival)
        #expect(conclusion.disposition == .keep(nextAttempt: nil) && envelope.failedRuns == 0)
    }

    // MARK: expiry

    @Test(
        arguments: [
            (
                EnhancedStatus(4, 2, 2), "452 4.2.2 full", EnhancedStatus(4, 2, 2),
                "delivery time expired; last error: 452 4.2.2 full"
            ),
            (nil, nil, EnhancedStatus(4, 4, 7), "delivery time expired"),
            (EnhancedStatus(5, 0, 0), "odd", EnhancedStatus(4, 4, 7), "delivery time expired; last error: odd"),
        ] as [(EnhancedStatus?, String?, EnhancedStatus, String)])
    func pastTheLifetimePendingFailsWithTheLastTemporaryStatusElse447(
        last: EnhancedStatus?, reply: String?, status: EnhancedStatus, reason: String
    ) {
        var envelope = Self.envelope([Self.pending(last, reply)])
        let conclusion = RunDecisions.conclude(
            &envelope, summary: .init(remoteDeferred: true), policy: Self.policy, now: Self.arrival + 86_400)
        #expect(envelope.recipients[0].state == .failed)
        #expect(envelope.recipients[0].lastStatus == status)
        #expect(envelope.recipients[0].lastReply == reason)
        #expect(conclusion.effects.first == .log(.expired(index: 0, status: status)))
        #expect(conclusion.reports == [.init(kind: .failure, destination: .sender, indices: [0])])
        #expect(conclusion.disposition == .remove)
    }

    @Test func beforeTheLifetimeNothingExpires() {
        var envelope = Self.envelope([Self.pending(EnhancedStatus(4, 4, 1))])
        _ = RunDecisions.conclude(
            &envelope, summary: .init(remoteDeferred: true), policy: Self.policy, now: Self.arrival + 86_399)
        #expect(envelope.recipients[0].state == .pending)
    }

    /// Reports live `bounce_queue_lifetime` (43 200 s here), everything else `max_queue_lifetime` (86 400 s).
    @Test(arguments: [
        ("s@example.org", false, 86_400 as Int64),  // ordinary mail
        ("", false, 43_200),  // mail from <> (a report made elsewhere)
        ("", true, 43_200),  // our own report
        ("double-bounce@mta.test", true, 43_200),  // our double-bounce notice
    ])
    func reportsExpireAfterTheBounceLifetime(sender: String, isReport: Bool, lifetime: Int64) {
        let original = QueueID("0M8ZK3Q1F2A7XR")!
        let make = {
            Self.envelope(sender: sender, [Self.pending(EnhancedStatus(4, 4, 1))], bounceOf: isReport ? original : nil)
        }
        #expect(RunDecisions.expiryDate(make(), policy: Self.policy) == Self.arrival + lifetime)
        var before = make()
        _ = RunDecisions.conclude(
            &before, summary: .init(remoteDeferred: true), policy: Self.policy, now: Self.arrival + lifetime - 1)
        #expect(before.recipients[0].state == .pending)
        var after = make()
        let conclusion = RunDecisions.conclude(
            &after, summary: .init(remoteDeferred: true), policy: Self.policy, now: Self.arrival + lifetime)
        #expect(after.recipients[0].state == .failed)
        #expect(conclusion.effects.first == .log(.expired(index: 0, status: EnhancedStatus(4, 4, 1))))
    }

    // MARK: reports

    @Test func oneReportCoversEveryRecipientThatFailedInTheRun() {
        var envelope = Self.envelope([Self.failed, Self.delivered, Self.failed])
        let conclusion = RunDecisions.conclude(&envelope, summary: .init(), policy: Self.policy, now: Self.arrival)
        #expect(conclusion.reports == [.init(kind: .failure, destination: .sender, indices: [0, 2])])
        #expect(conclusion.disposition == .remove)
        #expect(conclusion.effects == [.log(.removed(delivered: 1, failed: 2))])
    }

    @Test func alreadyReportedRecipientsAreNotReportedAgain() {
        var reported = Self.failed
        reported.report = .queued(QueueID("0M8ZK3Q1F2A7XR")!)
        var envelope = Self.envelope([reported, Self.failed, Self.pending()])
        let conclusion = RunDecisions.conclude(
            &envelope, summary: .init(remoteDeferred: true), policy: Self.policy, now: Self.arrival)
        #expect(conclusion.reports == [.init(kind: .failure, destination: .sender, indices: [1])])
    }

    @Test func aFailedReportBecomesADoubleBounceToThePostmaster() {
        var envelope = Self.envelope(sender: "", [Self.failed])
        let conclusion = RunDecisions.conclude(&envelope, summary: .init(), policy: Self.policy, now: Self.arrival)
        #expect(conclusion.reports == [.init(kind: .failure, destination: .postmaster, indices: [0])])
    }

    @Test func aFailedDoubleBounceNoticeIsDiscardedAndLogged() {
        var envelope = Self.envelope(sender: "double-bounce@mta.test", [Self.failed])
        let conclusion = RunDecisions.conclude(&envelope, summary: .init(), policy: Self.policy, now: Self.arrival)
        #expect(conclusion.reports.isEmpty)
        #expect(envelope.recipients[0].report == .discarded)
        #expect(conclusion.effects.contains(.log(.discarded(recipients: 1))))
        #expect(conclusion.disposition == .remove)
    }

    @Test func withoutBounceSettingsFailuresAreMarkedAndNotReported() {
        var policy = Self.policy
        policy.bounces = nil
        var envelope = Self.envelope([Self.failed, Self.pending()])
        let conclusion = RunDecisions.conclude(
            &envelope, summary: .init(remoteDeferred: true), policy: policy, now: Self.arrival + 999_999)
        #expect(conclusion.reports.isEmpty)
        #expect(envelope.recipients[0].report == ReportMark.none)
        #expect(envelope.recipients[1].state == .pending)  // no lifetime without bounce settings
    }

    @Test func aQueuedReportMarksItsRecipients() {
        var envelope = Self.envelope([Self.failed, Self.failed])
        let report = QueueID("0M8ZK3Q1F2A7XR")!
        RunDecisions.recordReport(
            .init(kind: .failure, destination: .sender, indices: [0, 1]), id: report, envelope: &envelope)
        #expect(envelope.recipients.allSatisfy { $0.report == .queued(report) })
        RunDecisions.recordReport(
            .init(kind: .delay, destination: .sender, indices: [0]), id: report, envelope: &envelope)
        #expect(envelope.delayWarned)
    }

    @Test func aReportThatCannotBeQueuedRepeatsTheRunAfterTheLocalDelay() {
        var envelope = Self.envelope([Self.failed])
        let conclusion = RunDecisions.conclude(&envelope, summary: .init(), policy: Self.policy, now: Self.arrival)
        #expect(conclusion.retryAfterReportFailure == Self.arrival + 30)
    }

    // MARK: delay notices

    @Test func oneDelayNoticeOnceTheWarningTimeHasPassed() {
        var envelope = Self.envelope([Self.pending(), Self.delivered, Self.pending()])
        let due = RunDecisions.conclude(
            &envelope, summary: .init(remoteDeferred: true), policy: Self.policy, now: Self.arrival + 3_600)
        #expect(due.reports == [.init(kind: .delay, destination: .sender, indices: [0, 2])])

        var early = Self.envelope([Self.pending()])
        let notYet = RunDecisions.conclude(
            &early, summary: .init(remoteDeferred: true), policy: Self.policy, now: Self.arrival + 3_599)
        #expect(notYet.reports.isEmpty)
    }

    @Test(arguments: [
        ("s@example.org", true, 3_600 as Int64),  // already warned
        ("", false, 3_600),  // never to <>
        ("s@example.org", false, 0),  // delay_warning_after = 0 turns it off
    ])
    func noDelayNotice(sender: String, warned: Bool, after: Int64) {
        var policy = Self.policy
        policy.bounces?.delayWarningAfter = after
        var envelope = Self.envelope(sender: sender, [Self.pending()], warned: warned)
        let conclusion = RunDecisions.conclude(
            &envelope, summary: .init(remoteDeferred: true), policy: policy, now: Self.arrival + 7_200)
        #expect(conclusion.reports.isEmpty)
    }

    @Test func failureReportComesBeforeTheDelayNotice() {
        var envelope = Self.envelope([Self.failed, Self.pending()])
        let conclusion = RunDecisions.conclude(
            &envelope, summary: .init(remoteDeferred: true), policy: Self.policy, now: Self.arrival + 4_000)
        #expect(conclusion.reports.map(\.kind) == [.failure, .delay])
    }

    // MARK: DSN (RFC 3461 NOTIFY)

    static func withNotify(_ record: RecipientRecord, _ notify: DSNNotify?) -> RecipientRecord {
        var copy = record
        copy.notify = notify
        return copy
    }

    /// A failure report only for recipients whose NOTIFY has FAILURE or is absent; the others are marked `none`
    /// and logged.
    @Test(arguments: [
        (nil as DSNNotify?, true),
        (DSNNotify(failure: true), true),
        (DSNNotify(success: true, failure: true, delay: true), true),
        (DSNNotify.never, false),
        (DSNNotify(success: true, delay: true), false),
    ])
    func failureReportFollowsNotify(notify: DSNNotify?, reported: Bool) {
        var envelope = Self.envelope([Self.withNotify(Self.failed, notify)])
        let conclusion = RunDecisions.conclude(&envelope, summary: .init(), policy: Self.policy, now: Self.arrival)
        if reported {
            #expect(conclusion.reports == [.init(kind: .failure, destination: .sender, indices: [0])])
            #expect(envelope.recipients[0].report == nil)  // marked once the report is queued
        } else {
            #expect(conclusion.reports.isEmpty)
            #expect(envelope.recipients[0].report == ReportMark.none)
            #expect(conclusion.effects.contains(.log(.noReport(index: 0, kind: .failure))))
        }
        #expect(conclusion.disposition == .remove)
    }

    @Test func notifyNeverOnAMessageFromTheNullSenderStillTellsThePostmaster() {
        var envelope = Self.envelope(sender: "", [Self.withNotify(Self.failed, .never)])
        let conclusion = RunDecisions.conclude(&envelope, summary: .init(), policy: Self.policy, now: Self.arrival)
        #expect(conclusion.reports == [.init(kind: .failure, destination: .postmaster, indices: [0])])
    }

    /// A delay notice covers the recipients whose NOTIFY has DELAY or is absent; none left → no notice, warned.
    @Test func delayNoticeFollowsNotify() {
        var envelope = Self.envelope([
            Self.withNotify(Self.pending(), nil), Self.withNotify(Self.pending(), DSNNotify(failure: true)),
            Self.withNotify(Self.pending(), DSNNotify(delay: true)), Self.withNotify(Self.pending(), .never),
        ])
        let due = RunDecisions.conclude(
            &envelope, summary: .init(remoteDeferred: true), policy: Self.policy, now: Self.arrival + 3_600)
        #expect(due.reports == [.init(kind: .delay, destination: .sender, indices: [0, 2])])

        var nobody = Self.envelope([Self.withNotify(Self.pending(), DSNNotify(failure: true))])
        let none = RunDecisions.conclude(
            &nobody, summary: .init(remoteDeferred: true), policy: Self.policy, now: Self.arrival + 3_600)
        #expect(none.reports.isEmpty)
        #expect(nobody.delayWarned)
    }

    /// NOTIFY=SUCCESS: one success notice for the delivered recipients not yet reported (a DSN next hop marked
    /// its recipients `none` already); never to `<>` or for our own notices; recorded like a failure report.
    @Test(arguments: [
        ("s@example.org", nil as ReportMark?, DSNNotify(success: true) as DSNNotify?, true),
        ("s@example.org", nil, DSNNotify(success: true, failure: true), true),
        ("s@example.org", ReportMark.none, DSNNotify(success: true), false),  // passed on to a DSN next hop
        ("s@example.org", nil, nil, false),  // not asked
        ("s@example.org", nil, DSNNotify(failure: true, delay: true), false),
        ("", nil, DSNNotify(success: true), false),  // never to <>
        ("double-bounce@mta.test", nil, DSNNotify(success: true), false),
    ])
    func successNotice(sender: String, mark: ReportMark?, notify: DSNNotify?, expected: Bool) {
        var delivered = Self.withNotify(Self.delivered, notify)
        delivered.report = mark
        var envelope = Self.envelope(sender: sender, [delivered])
        let conclusion = RunDecisions.conclude(&envelope, summary: .init(), policy: Self.policy, now: Self.arrival)
        #expect(conclusion.reports == (expected ? [.init(kind: .success, destination: .sender, indices: [0])] : []))
        if expected {
            let notice = QueueID("0M8ZK3Q1F2A7XR")!
            RunDecisions.recordReport(conclusion.reports[0], id: notice, envelope: &envelope)
            #expect(envelope.recipients[0].report == .queued(notice))
            let again = RunDecisions.conclude(&envelope, summary: .init(), policy: Self.policy, now: Self.arrival)
            #expect(again.reports.isEmpty)
        }
    }

    // MARK: local outcomes

    @Test(arguments: [
        (LocalOutcome.delivered, RecipientState.delivered, EnhancedStatus(2, 0, 0), false),
        (.temporaryFailure("disk full"), .pending, EnhancedStatus(4, 3, 0), true),
        (.permanentFailure("mailbox name", status: EnhancedStatus(5, 1, 1)), .failed, EnhancedStatus(5, 1, 1), false),
    ])
    func localOutcomes(outcome: LocalOutcome, state: RecipientState, status: EnhancedStatus, retry: Bool) {
        var envelope = Self.envelope([Self.pending()])
        let judged = RunDecisions.judgeLocal(outcome, index: 0, envelope: &envelope, now: Self.arrival)
        #expect(envelope.recipients[0].state == state && envelope.recipients[0].lastStatus == status)
        #expect(judged.retryLocally == retry && envelope.recipients[0].attempts == 1)
        #expect(envelope.recipients[0].remoteMTA == nil)
    }

    @Test func anInvalidStoredRecipientFailsWith511() {
        var envelope = Self.envelope([Self.pending()])
        _ = RunDecisions.judgeInvalid(reason: "does not parse", index: 0, envelope: &envelope, now: Self.arrival)
        #expect(envelope.recipients[0].state == .failed && envelope.recipients[0].lastStatus == EnhancedStatus(5, 1, 1))
    }
}
