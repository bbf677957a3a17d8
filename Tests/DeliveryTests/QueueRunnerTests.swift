import DNS
import Foundation
import Logging
import NetAddress
import Routing
import SMTPProtocol
import Sockets
import Spool
import Testing

@testable import Delivery

/// A resolver that knows no names: these tests route by static routes only, so DNS must never be needed.
struct NoDNS: DNSResolver {
    func mx(_ name: String) -> DNSAnswer<MXRecord> { .noSuchDomain }
    func addresses(_ name: String, family: AddressFamily) -> DNSAnswer<AddressRecord> { .noSuchDomain }
}

/// The queue runner as the daemon uses it, over a real spool in a temporary directory, delivering over loopback
/// to an in-process peer (`ScriptedPeer`): the shells around the delivery decisions, end to end inside one process.
@Suite(.serialized) struct QueueRunnerTests {
    static let hostname = "mta.lab.test"

    struct Setup {
        let directory: URL
        let spool: Spool
        let runner: QueueRunner
        let peer: ScriptedPeer

        func remove() {
            runner.stop()
            peer.stop()
            try? FileManager.default.removeItem(at: directory)
        }

        /// Commits a message through the spool's commit protocol and wakes the runner, as the server does.
        func send(from sender: String, to recipients: [String]) throws -> QueueID {
            let message = try spool.begin()
            try message.append(Array("Subject: runner test\r\n\r\nbody\r\n".utf8))
            let envelope = Envelope(
                arriving: message.id, sender: sender, recipients: recipients.map { RecipientRecord(address: $0) },
                client: "[127.0.0.1]", heloName: "client.test", protocolName: "ESMTP", bodyType: nil,
                smtpUTF8: false, messageSize: message.size, now: Int64(Date().timeIntervalSince1970))
            try spool.commit(message, envelope: envelope)
            runner.wake(message.id)
            return message.id
        }

        func mailbox(_ user: String) -> [String] {
            let new = directory.appendingPathComponent("spool/mailboxes/\(QueueRunnerTests.hostname)/\(user)/new")
            let names = (try? FileManager.default.contentsOfDirectory(atPath: new.path)) ?? []
            return names.compactMap { try? String(contentsOf: new.appendingPathComponent($0), encoding: .utf8) }
        }
    }

    static func setUp(_ script: ScriptedPeer.Script = .init()) throws -> Setup {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("runner-\(UUID())")
        let spool = try Spool(directory: directory.appendingPathComponent("spool").path)
        let peer = try ScriptedPeer(on: "127.0.0.1", script)
        let routes = try StaticRoutes(parsing: "remote.test=[127.0.0.1]:\(peer.address.port)")
        let router = Router(
            policy: RoutingPolicy(
                identity: LocalIdentity(hostname: hostname), staticRoutes: routes, acceptLoopbackFromDNS: true),
            resolver: NoDNS(), transportCacheTTL: .seconds(3600), negativeCacheTTL: .seconds(60), cacheFile: nil,
            logger: Logger(label: "test"))
        var outbound = OutboundConfiguration(
            heloName: hostname, connectTimeout: .seconds(5), replyTimeout: .seconds(10), bindAddress: nil,
            bindAddress6: nil)
        outbound.tlsPolicy = .none
        let configuration = DeliveryConfiguration(
            policy: RecipientPolicy(
                hostname: hostname, localDomains: [hostname], ownAddresses: [], localRecipients: nil,
                relayDomains: [], relayRecipients: nil),
            outbound: OutboundTransport(configuration: outbound, router: router),
            retrySchedule: RetrySchedule([.seconds(600)]),
            bounces: BounceSettings(
                hostname: hostname, maxQueueLifetime: .seconds(86_400), delayWarningAfter: .zero,
                doubleBounceRecipient: "postmaster"))
        let runner = QueueRunner(spool: spool, configuration: configuration, logger: Logger(label: "test"))
        return Setup(directory: directory, spool: spool, runner: runner, peer: peer)
    }

    /// Polls `condition` until it holds or the deadline passes. The deadline is generous: a run takes milliseconds,
    /// but the whole Swift test suite runs in parallel on two cores and can hold Dispatch's threads for many seconds.
    static func eventually(_ what: String, _ condition: () throws -> Bool) async throws {
        let deadline = ContinuousClock.now + .seconds(90)
        while ContinuousClock.now < deadline {
            if try condition() { return }
            try await Task.sleep(for: .milliseconds(10))  // poll interval inside the deadline loop
        }
        Issue.record("not within 90 s: \(what)")
    }

    @Test func aRemoteRecipientIsDeliveredAndTheMessageRemoved() async throws {
        let setup = try Self.setUp()
        defer { setup.remove() }
        _ = try setup.send(from: "alice@\(Self.hostname)", to: ["bob@remote.test"])
        try await Self.eventually("the queue to drain") { try setup.spool.queuedIDs().isEmpty }
        let commands = setup.peer.record.withLock { $0.commands }
        #expect(commands.contains("RCPT TO:<bob@remote.test>"))
        #expect(setup.peer.record.withLock { $0.data }.count > 0)
    }

    @Test func aRejectedRecipientIsBouncedToTheSenderOnce() async throws {
        var script = ScriptedPeer.Script()
        script.rcpt["bob@remote.test"] = .reply("550 5.1.1 no such user\r\n")
        let setup = try Self.setUp(script)
        defer { setup.remove() }
        _ = try setup.send(from: "alice@\(Self.hostname)", to: ["bob@remote.test"])
        try await Self.eventually("the report in alice's Maildir and an empty queue") {
            try setup.spool.queuedIDs().isEmpty && !setup.mailbox("alice").isEmpty
        }
        let reports = setup.mailbox("alice")
        #expect(reports.count == 1)
        #expect(reports[0].contains("Final-Recipient: rfc822; bob@remote.test"))
        #expect(reports[0].contains("Status: 5.1.1"))
        #expect(reports[0].contains("Remote-MTA: dns; [127.0.0.1]"))
    }

    @Test func aFailedReportBecomesADoubleBounceToThePostmaster() async throws {
        var script = ScriptedPeer.Script()
        script.rcpt["bob@remote.test"] = .reply("550 5.1.1 no such user\r\n")
        let setup = try Self.setUp(script)
        defer { setup.remove() }
        let original = try setup.send(from: "", to: ["bob@remote.test"])
        try await Self.eventually("the notice in postmaster's Maildir") {
            try setup.spool.queuedIDs().isEmpty && !setup.mailbox("postmaster").isEmpty
        }
        let notices = setup.mailbox("postmaster")
        #expect(notices.count == 1)
        #expect(notices[0].contains(original.rawValue))
    }

    @Test func aTemporaryRefusalIsDeferredOnTheSchedule() async throws {
        var script = ScriptedPeer.Script()
        script.rcpt["bob@remote.test"] = .reply("451 4.3.2 try later\r\n")
        let setup = try Self.setUp(script)
        defer { setup.remove() }
        let before = Int64(Date().timeIntervalSince1970)
        let id = try setup.send(from: "alice@\(Self.hostname)", to: ["bob@remote.test"])
        try await Self.eventually("the envelope to record the deferral") {
            (try? setup.spool.envelope(id))?.failedRuns == 1
        }
        let envelope = try setup.spool.envelope(id)
        #expect(envelope.recipients[0].state == .pending)
        #expect(envelope.recipients[0].lastStatus == EnhancedStatus(4, 3, 2))
        #expect(envelope.recipients[0].attempts == 1)
        #expect(envelope.recipients[0].remoteMTA == nil)
        #expect(
            envelope.nextAttempt >= before + 600 && envelope.nextAttempt <= Int64(Date().timeIntervalSince1970) + 601)
        #expect(envelope.attempts.map(\.result) == ["deferred"])
        #expect(setup.mailbox("alice").isEmpty)
    }
}
