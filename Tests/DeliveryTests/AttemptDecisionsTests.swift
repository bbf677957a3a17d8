import Glibc
import NetAddress
import Routing
import SMTPProtocol
import Sockets
import Spool
import Testing

@testable import Delivery

/// One row per rule of `DestinationRun` (the attempt loop's decisions): what an attempt's outcome does to the open
/// recipients, the transport cache, the attempt records and the log.
@Suite struct AttemptDecisionsTests {
    static let id = QueueID("0M8ZK3Q1F2A7XQ")!
    static let now: Int64 = 1_800_000_000
    static let mx10v6 = PlannedAttempt(
        mxHost: "mx10.example.test", preference: 10, endpoint: Endpoint(address: IPAddress("2001:db8::10")!, port: 25))
    static let mx10v4 = PlannedAttempt(
        mxHost: "mx10.example.test", preference: 10, endpoint: Endpoint(address: IPAddress("192.0.2.10")!, port: 25))

    static func envelope(_ recipients: [String] = ["a@example.test", "b@example.test"]) -> Envelope {
        Envelope(
            id: id, sender: "s@example.org", arrival: now - 100, client: "local", heloName: "h", protocolName: "ESMTP",
            recipients: recipients.map { RecipientRecord(address: $0) })
    }

    static func reply(_ code: Int, _ status: EnhancedStatus?, _ text: String = "text") -> Reply {
        Reply(code, status, text)
    }

    static func session(
        _ kind: ClientResult.Kind, _ outcomes: [RecipientOutcome], duplicate: Bool = false,
        capabilities: ServerCapabilities? = nil
    ) -> DeliveryAttemptResult {
        DeliveryAttemptResult(
            address: SocketAddress(ip: mx10v6.address, port: 25),
            outcome: .session(
                ClientResult(
                    kind: kind,
                    recipients: outcomes.enumerated().map { .init(address: "r\($0.offset)", outcome: $0.element) },
                    capabilities: capabilities, greeting: nil, possibleDuplicate: duplicate)),
            localAddress: nil, socketError: nil, elapsedMilliseconds: 7)
    }

    static let refused = DeliveryAttemptResult(
        address: SocketAddress(ip: mx10v6.address, port: 25),
        outcome: .connectFailed(
            ConnectError(
                address: SocketAddress(ip: mx10v6.address, port: 25),
                error: .system(call: "connect", errno: ECONNREFUSED))),
        localAddress: nil, socketError: nil, elapsedMilliseconds: 1)

    struct Row: CustomTestStringConvertible, Sendable {
        var rule: String
        var result: DeliveryAttemptResult
        /// Recipient states after the attempt, and the ones still open.
        var states: [RecipientState]
        var open: [Int]
        var statuses: [EnhancedStatus?]
        var lastStatus: EnhancedStatus
        var cache: [CacheUpdate]
        var stopped = false
        var testDescription: String { rule }
    }

    static let rows: [Row] = [
        Row(
            rule: "connect refused: both stay open, the address is remembered as dead, 4.4.1", result: refused,
            states: [.pending, .pending], open: [0, 1], statuses: [nil, nil], lastStatus: EnhancedStatus(4, 4, 1),
            cache: [.failure(endpoint: mx10v6.endpoint, reason: "Connection refused")]),
        Row(
            rule: "5xx greeting: the host is no verdict on the recipients, 4.4.0, next address",
            result: session(.hostFailed(.greeting(reply(554, nil, "go away"))), []),
            states: [.pending, .pending], open: [0, 1], statuses: [nil, nil], lastStatus: EnhancedStatus(4, 4, 0),
            cache: []),
        Row(
            rule: "4xx greeting keeps the peer's status",
            result: session(.hostFailed(.greeting(reply(421, EnhancedStatus(4, 7, 0), "busy"))), []),
            states: [.pending, .pending], open: [0, 1], statuses: [nil, nil], lastStatus: EnhancedStatus(4, 7, 0),
            cache: []),
        Row(
            rule: "timeout: 4.4.2, next address", result: session(.hostFailed(.timedOut(.mail)), []),
            states: [.pending, .pending], open: [0, 1], statuses: [nil, nil], lastStatus: EnhancedStatus(4, 4, 2),
            cache: []),
        Row(
            rule: "5xx to RCPT fails that recipient without another MX; 2xx delivers the other",
            result: session(
                .completed,
                [.permanent(reply(550, EnhancedStatus(5, 1, 1), "no such user")), .delivered(reply(250, nil, "ok"))]),
            states: [.failed, .delivered], open: [], statuses: [EnhancedStatus(5, 1, 1), EnhancedStatus(2, 0, 0)],
            lastStatus: EnhancedStatus(4, 4, 1),
            cache: [.success(destination: "example.test", mxHost: "mx10.example.test", endpoint: mx10v6.endpoint)]),
        Row(
            rule: "4xx to RCPT: stays open, that reply is the status if nothing better comes",
            result: session(
                .completed,
                [.temporary(reply(450, EnhancedStatus(4, 2, 1), "later")), .delivered(reply(250, nil, "ok"))]),
            states: [.pending, .delivered], open: [0], statuses: [nil, EnhancedStatus(2, 0, 0)],
            lastStatus: EnhancedStatus(4, 2, 1),
            cache: [.success(destination: "example.test", mxHost: "mx10.example.test", endpoint: mx10v6.endpoint)]),
        Row(
            rule: "5xx to DATA fails every recipient of the transaction",
            result: session(
                .completed,
                [
                    .permanent(reply(554, EnhancedStatus(5, 6, 0), "content")),
                    .permanent(reply(554, EnhancedStatus(5, 6, 0), "content")),
                ]),
            states: [.failed, .failed], open: [], statuses: [EnhancedStatus(5, 6, 0), EnhancedStatus(5, 6, 0)],
            lastStatus: EnhancedStatus(4, 4, 1), cache: []),
        Row(
            rule: "a recipient refused before the session broke fails; the other moves on",
            result: session(
                .hostFailed(.connectionLost(.rcpt)), [.permanent(reply(550, EnhancedStatus(5, 1, 1), "unknown"))]),
            states: [.failed, .pending], open: [1], statuses: [EnhancedStatus(5, 1, 1), nil],
            lastStatus: EnhancedStatus(4, 4, 2), cache: []),
        Row(
            rule: "a reply without enhanced status gets c.0.0 from its code",
            result: session(.completed, [.permanent(reply(550, nil, "no")), .permanent(reply(551, nil, "no"))]),
            states: [.failed, .failed], open: [], statuses: [EnhancedStatus(5, 0, 0), EnhancedStatus(5, 0, 0)],
            lastStatus: EnhancedStatus(4, 4, 1), cache: []),
        Row(
            rule: "the queued message cannot be read: everything deferred 4.3.0, stop",
            result: DeliveryAttemptResult(
                address: SocketAddress(ip: mx10v6.address, port: 25), outcome: .messageUnreadable("gone"),
                localAddress: nil, socketError: nil, elapsedMilliseconds: 0),
            states: [.pending, .pending], open: [], statuses: [EnhancedStatus(4, 3, 0), EnhancedStatus(4, 3, 0)],
            lastStatus: EnhancedStatus(4, 4, 1), cache: [], stopped: true),
        Row(
            rule: "a session we aborted: everything deferred 4.3.0, stop",
            result: session(.aborted("read error"), []),
            states: [.pending, .pending], open: [], statuses: [EnhancedStatus(4, 3, 0), EnhancedStatus(4, 3, 0)],
            lastStatus: EnhancedStatus(4, 4, 1), cache: [], stopped: true),
    ]

    @Test(arguments: rows)
    func attemptRule(_ row: Row) {
        var envelope = Self.envelope()
        var run = DestinationRun(destination: "example.test", recipients: [0, 1])
        let effects = run.judge(
            row.result, attempt: Self.mx10v6, rank: 1, firstFamily: .ipv6, envelope: &envelope, now: Self.now)
        #expect(envelope.recipients.map(\.state) == row.states)
        #expect(envelope.recipients.map(\.lastStatus) == row.statuses)
        #expect(run.open == row.open)
        #expect(run.lastStatus == row.lastStatus)
        #expect(run.stopped == row.stopped)
        #expect(effects.compactMap { if case .cache(let update) = $0 { update } else { nil } } == row.cache)
        // Every recipient that got an answer or a connect error counts one attempt; our own failures count none.
        if row.stopped {
            #expect(envelope.attempts.isEmpty && envelope.recipients.allSatisfy { $0.attempts == 0 })
        } else {
            #expect(!envelope.attempts.isEmpty && envelope.recipients.allSatisfy { $0.attempts == 1 })
        }
        // Final answers from a peer name the peer (Remote-MTA in the report); decisions of ours never do.
        for recipient in envelope.recipients {
            #expect((recipient.state != .pending) == (recipient.remoteMTA != nil))
        }
    }

    /// RFC 3461 §6.2: a next hop that offers DSN took over the success notice (marked `none`, so none is sent
    /// here); without DSN at the next hop the mark stays open for a `relayed` notice. Only NOTIFY=SUCCESS counts.
    @Test(arguments: [
        (true, DSNNotify(success: true), ReportMark.none as ReportMark?),
        (false, DSNNotify(success: true), nil),
        (true, DSNNotify(failure: true), nil),
        (true, nil, nil),
    ])
    func aDSNNextHopTakesOverTheSuccessNotice(offered: Bool, notify: DSNNotify?, mark: ReportMark?) {
        var envelope = Self.envelope(["a@example.test"])
        envelope.recipients[0].notify = notify
        var capabilities = ServerCapabilities()
        capabilities.dsn = offered
        var run = DestinationRun(destination: "example.test", recipients: [0])
        let ok = Self.reply(250, EnhancedStatus(2, 0, 0), "queued")
        _ = run.judge(
            Self.session(.completed, [.delivered(ok)], capabilities: capabilities), attempt: Self.mx10v6, rank: 0,
            firstFamily: nil, envelope: &envelope, now: Self.now)
        #expect(envelope.recipients[0].state == .delivered)
        #expect(envelope.recipients[0].report == mark)
    }

    /// A refusal we made before MAIL (here: 8-bit content, no 8BITMIME at the peer) is our decision: no Remote-MTA,
    /// and a reason that does not read like the peer's reply.
    @Test func aLocalRefusalIsRecordedAsOurDecision() {
        var envelope = Self.envelope(["a@example.test"])
        var run = DestinationRun(destination: "example.test", recipients: [0])
        let refusal = Self.reply(554, EnhancedStatus(5, 6, 3), "8-bit message and the server does not support 8BITMIME")
        var result = Self.session(.completed, [.permanent(refusal)])
        if case .session(var session) = result.outcome {
            session.recipients[0].decidedLocally = true
            result.outcome = .session(session)
        }
        let effects = run.judge(
            result, attempt: Self.mx10v6, rank: 0, firstFamily: nil, envelope: &envelope, now: Self.now)
        let recipient = envelope.recipients[0]
        #expect(recipient.state == .failed && recipient.lastStatus == EnhancedStatus(5, 6, 3))
        #expect(recipient.remoteMTA == nil)
        #expect(
            recipient.lastReply
                == "refused before sending to mx10.example.test[2001:db8::10]: "
                + "8-bit message and the server does not support 8BITMIME")
        #expect(envelope.attempts.last?.result == "refused")
        #expect(!effects.contains { if case .metric(.remoteRecipient) = $0 { true } else { false } })
    }

    @Test func deliveredOverTheOtherFamilyCountsAFallbackOnce() {
        var envelope = Self.envelope()
        var run = DestinationRun(destination: "example.test", recipients: [0, 1])
        let ok = Self.session(.completed, [.delivered(Self.reply(250, nil)), .delivered(Self.reply(250, nil))])
        let effects = run.judge(ok, attempt: Self.mx10v4, rank: 1, firstFamily: .ipv6, envelope: &envelope, now: 1)
        let firsts = effects.filter { if case .metric(.firstDelivery) = $0 { true } else { false } }
        #expect(firsts == [.metric(.firstDelivery(family: .ipv4, rank: 1, fallbackFrom: .ipv6))])
        #expect(
            envelope.recipients.allSatisfy {
                $0.remoteMTA == RemoteMTA(host: "mx10.example.test", address: "192.0.2.10")
            })
    }

    @Test func oneAttemptLinePerRecipientAndARecipientLinePerDecision() {
        var envelope = Self.envelope()
        var run = DestinationRun(destination: "example.test", recipients: [0, 1])
        let effects = run.judge(
            Self.session(
                .completed, [.permanent(Self.reply(550, EnhancedStatus(5, 1, 1))), .temporary(Self.reply(451, nil))]),
            attempt: Self.mx10v6, rank: 2, firstFamily: nil, envelope: &envelope, now: Self.now)
        let lines = effects.compactMap { if case .log(.attempt(let line)) = $0 { line } else { nil } }
        #expect(lines.map(\.index) == [0, 1] && lines.map(\.result) == ["rejected", "deferred"])
        let decided = effects.compactMap {
            if case .log(.recipient(let index, let result, _, _)) = $0 { (index, result) } else { nil }
        }
        #expect(decided.count == 1 && decided[0].0 == 0 && decided[0].1 == .failed)
        #expect(envelope.attempts.map(\.result) == ["rejected", "deferred"])
        #expect(run.lastReason == "mx10.example.test[2001:db8::10] said: 451 text")
    }

    @Test func possibleDuplicateIsReported() {
        var envelope = Self.envelope(["a@example.test"])
        var run = DestinationRun(destination: "example.test", recipients: [0])
        let effects = run.judge(
            Self.session(.hostFailed(.timedOut(.dataDone)), [], duplicate: true), attempt: Self.mx10v6, rank: 1,
            firstFamily: nil, envelope: &envelope, now: Self.now)
        #expect(effects.contains(.log(.possibleDuplicate(address: "2001:db8::10", explained: true))))
    }

    @Test func aTLSFailureIsCounted() {
        var envelope = Self.envelope(["a@example.test"])
        var run = DestinationRun(destination: "example.test", recipients: [0])
        let effects = run.judge(
            Self.session(.hostFailed(.tls(Self.reply(454, EnhancedStatus(4, 7, 0), "no TLS"))), []),
            attempt: Self.mx10v6, rank: 1, firstFamily: nil, envelope: &envelope, now: Self.now)
        #expect(effects.contains(.metric(.tlsFailure(family: .ipv6, rank: 1))))
        #expect(run.lastStatus == EnhancedStatus(4, 7, 0))
    }

    @Test func noAddressLeftDefersWithTheLastTemporaryStatus() {
        var envelope = Self.envelope()
        var run = DestinationRun(destination: "example.test", recipients: [0, 1])
        _ = run.judge(
            Self.session(.hostFailed(.greeting(Self.reply(421, EnhancedStatus(4, 3, 2), "shutting down"))), []),
            attempt: Self.mx10v6, rank: 1, firstFamily: nil, envelope: &envelope, now: Self.now)
        _ = run.exhausted(envelope: &envelope, now: Self.now)
        #expect(envelope.recipients.allSatisfy { $0.state == .pending && $0.lastStatus == EnhancedStatus(4, 3, 2) })
        #expect(
            envelope.recipients[0].lastReply?.hasPrefix("mx10.example.test[2001:db8::10]: greeting refused") == true)
    }

    @Test func anEmptyPlanDefersWith441() {
        var envelope = Self.envelope(["a@example.test"])
        var run = DestinationRun(destination: "example.test", recipients: [0])
        let effects = run.exhausted(envelope: &envelope, now: Self.now)
        #expect(envelope.recipients[0].lastStatus == EnhancedStatus(4, 4, 1))
        #expect(
            effects == [
                .log(
                    .recipient(
                        index: 0, result: .deferred, status: EnhancedStatus(4, 4, 1),
                        reason: "no address could be tried"))
            ])
    }

    @Test(arguments: [
        (
            RouteVerdict.permanentFailure(status: "5.1.10", reason: "null MX"), RecipientState.failed,
            EnhancedStatus(5, 1, 10)
        ),
        (
            .permanentFailure(status: "5.4.6", reason: "best MX is this host: mail loop"), .failed,
            EnhancedStatus(5, 4, 6)
        ),
        (.temporaryFailure(status: "4.4.3", reason: "DNS"), .pending, EnhancedStatus(4, 4, 3)),
        (.deliverLocally, .pending, EnhancedStatus(4, 4, 6)),
    ])
    func routeVerdictsDecideWithoutAttempts(verdict: RouteVerdict, state: RecipientState, status: EnhancedStatus) {
        var envelope = Self.envelope()
        var run = DestinationRun(destination: "example.test", recipients: [0, 1])
        let effects = run.judge(verdict: verdict, envelope: &envelope, now: Self.now)
        #expect(effects?.count == 2)
        #expect(envelope.recipients.allSatisfy { $0.state == state && $0.lastStatus == status && $0.remoteMTA == nil })
        #expect(run.isDone && envelope.attempts.isEmpty)
    }

    @Test func deliverLeavesItToTheAttempts() {
        var envelope = Self.envelope()
        var run = DestinationRun(destination: "example.test", recipients: [0, 1])
        #expect(run.judge(verdict: .deliver, envelope: &envelope, now: Self.now) == nil)
        #expect(!run.isDone && run.open == [0, 1])
    }
}
