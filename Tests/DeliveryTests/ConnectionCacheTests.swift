import Dispatch
import Foundation
import Logging
import Metrics
import NetAddress
import Routing
import SMTPProtocol
import Sockets
import Spool
import Synchronization
import Testing

@testable import Delivery

// MARK: - Pure decisions

@Suite struct ConnectionReuseDecisionsTests {
    static func key(_ port: UInt16, policy: ClientTLSPolicy = .none) -> ConnectionKey {
        ConnectionKey(
            address: SocketAddress(parsing: "192.0.2.1:\(port)")!, source: nil, heloName: "mta.test", tlsPolicy: policy,
            serverName: nil)
    }

    struct ParkRow: CustomStringConvertible, Sendable {
        var name: String
        var transactions = 1
        var parked: [ConnectionKey: Int] = [:]
        var settings = ConnectionCacheSettings(idleTime: .seconds(2), reuseLimit: 3, size: 4)
        var shutDown = false
        var expected: ConnectionReuse.ParkDecision
        var description: String { name }
    }

    static let a = key(25)
    static let b = key(26)
    static let c = key(27)

    static let parkRows: [ParkRow] = [
        ParkRow(name: "empty pool: park", expected: .park),
        ParkRow(name: "room left: park", parked: [a: 2, b: 1], expected: .park),
        ParkRow(name: "reuse limit reached: close", transactions: 3, expected: .close(.limit)),
        ParkRow(name: "below the limit: park", transactions: 2, expected: .park),
        ParkRow(name: "shut down: close", shutDown: true, expected: .close(.shutdown)),
        ParkRow(name: "shutdown wins over the limit", transactions: 9, shutDown: true, expected: .close(.shutdown)),
        ParkRow(name: "full, all slots this hop's: close", parked: [a: 4], expected: .close(.full)),
        ParkRow(
            name: "full, another hop holds them all: evict its oldest", parked: [b: 4], expected: .parkEvicting(b)),
        ParkRow(
            name: "full, the other hop holds only one more: close (no ping-pong)", parked: [a: 2, b: 2],
            expected: .close(.full)),
        ParkRow(name: "full, the busiest other hop gives way", parked: [a: 0, b: 1, c: 3], expected: .parkEvicting(c)),
        ParkRow(
            name: "full, tie between others: the smaller key gives way", parked: [b: 2, c: 2],
            expected: .parkEvicting(b)),
    ]

    @Test(arguments: parkRows)
    func parkDecision(_ row: ParkRow) {
        var parked = row.parked
        parked[Self.a] = parked[Self.a] ?? 0
        #expect(
            ConnectionReuse.park(
                key: Self.a, transactions: row.transactions, parked: parked, settings: row.settings,
                shutDown: row.shutDown) == row.expected)
    }

    @Test(arguments: [
        (Duration.zero, true), (.milliseconds(1999), true), (.seconds(2), false), (.seconds(60), false),
    ])
    func usableUntilTheIdleTime(idle: Duration, usable: Bool) {
        #expect(ConnectionReuse.usable(idle: idle, settings: ConnectionCacheSettings(idleTime: .seconds(2))) == usable)
    }

    struct ReuseRow: CustomStringConvertible, Sendable {
        var name: String
        var reused = true
        var kind: ClientResult.Kind
        var repliesRead = 0
        var expected: ConnectionReuse.AfterReuse
        var description: String { name }
    }

    static let closing = Reply(421, EnhancedStatus(4, 4, 2), "idle too long")

    static let reuseRows: [ReuseRow] = [
        ReuseRow(
            name: "reused, lost before any reply: dead when taken", kind: .hostFailed(.connectionLost(.mail)),
            expected: .retryOnNewConnection("connection lost waiting for mail reply")),
        ReuseRow(
            name: "reused, 421 to MAIL: dead when taken", kind: .hostFailed(.closing(closing)),
            expected: .retryOnNewConnection("server closing: 421 4.4.2 idle too long")),
        ReuseRow(
            name: "reused, lost after MAIL was answered: a real failure", kind: .hostFailed(.connectionLost(.rcpt)),
            repliesRead: 1, expected: .judge),
        ReuseRow(
            name: "reused, 421 after RCPT answers: a real failure", kind: .hostFailed(.closing(closing)),
            repliesRead: 2,
            expected: .judge),
        ReuseRow(
            name: "reused, timeout at MAIL: judged (the server is there but slow)",
            kind: .hostFailed(.timedOut(.mail)), expected: .judge),
        ReuseRow(name: "reused and completed", kind: .completed, repliesRead: 4, expected: .judge),
        ReuseRow(
            name: "new connection lost before any reply: judged as always", reused: false,
            kind: .hostFailed(.connectionLost(.greeting)), expected: .judge),
    ]

    @Test(arguments: reuseRows)
    func afterAReusedSession(_ row: ReuseRow) {
        var result = ClientResult(
            kind: row.kind, recipients: [], capabilities: nil, greeting: nil, possibleDuplicate: false)
        result.reused = row.reused
        result.repliesRead = row.repliesRead
        #expect(ConnectionReuse.afterReusedSession(result) == row.expected)
    }
}

// MARK: - A peer that takes many connections and counts them

/// An SMTP sink on loopback that accepts any number of connections, answers every transaction with 250 (RSET too),
/// and records per connection what it was asked. `mailReply` can answer MAIL otherwise per (connection, transaction).
final class CountingPeer: @unchecked Sendable {
    // @unchecked Sendable — confinement: `sessions` is touched only on `queue`; tests read `record` (a mutex).
    struct Record: Sendable {
        /// Commands per connection, in accept order.
        var commands: [[String]] = []
        var connections: Int { commands.count }
        var transactions: Int { commands.joined().filter { $0.hasPrefix("MAIL") }.count }
        var quits: Int { commands.joined().filter { $0 == "QUIT" }.count }
    }

    private final class Session {
        let connection: Connection
        let index: Int
        var buffer: [UInt8] = []
        var inData = false
        var mails = 0
        init(connection: Connection, index: Int) {
            self.connection = connection
            self.index = index
        }
    }

    let listener: Listener
    let record = Mutex(Record())
    private let queue = DispatchQueue(label: "counting-peer")
    private var sessions: [Session] = []
    private let mailReply: @Sendable (_ connection: Int, _ transaction: Int) -> String
    private let greets: Bool

    var address: SocketAddress { listener.localAddress }

    /// `greets: false` keeps quiet after accepting (for connections the test parks without any session).
    init(greets: Bool = true, mailReply: @escaping @Sendable (Int, Int) -> String = { _, _ in "250 2.1.0 ok\r\n" })
        throws
    {
        listener = try Listener.bind(SocketAddress(parsing: "127.0.0.1:0")!)
        self.greets = greets
        self.mailReply = mailReply
        listener.start(queue: queue, onAccept: { socket in self.accepted(socket) }, onError: { _ in })
    }

    func stop() {
        listener.close()
        queue.sync { for session in sessions { session.connection.close(afterFlush: false) } }
    }

    /// Writes `text` on every open connection, asked or not (a server that says goodbye before closing).
    func sayToAll(_ text: String) {
        queue.sync { for session in sessions { session.connection.write(Array(text.utf8)) } }
    }

    /// Closes every open connection from the server side (a server that drops idle clients).
    func closeAll() {
        queue.sync { for session in sessions { session.connection.close(afterFlush: false) } }
    }

    private func accepted(_ socket: AcceptedSocket) {
        let index = record.withLock { record in
            record.commands.append([])
            return record.commands.count - 1
        }
        let session = Session(connection: Connection(socket: socket, queue: queue), index: index)
        sessions.append(session)
        session.connection.startReading({ bytes in self.received(Array(bytes), session) }, onClose: { _ in })
        if greets { session.connection.write(Array("220 sink.test ESMTP\r\n".utf8)) }
    }

    private func received(_ bytes: [UInt8], _ session: Session) {
        session.buffer += bytes
        while !session.connection.isClosed {
            if session.inData {
                guard let end = Self.find(Array("\r\n.\r\n".utf8), in: session.buffer) else { return }
                session.buffer.removeFirst(end + 5)
                session.inData = false
                session.connection.write(Array("250 2.0.0 queued\r\n".utf8))
                continue
            }
            guard let lf = session.buffer.firstIndex(of: 10) else { return }
            let line = String(decoding: session.buffer[..<lf].dropLast(), as: UTF8.self)
            session.buffer.removeFirst(lf + 1)
            record.withLock { $0.commands[session.index].append(line) }
            let reply: String
            switch line.uppercased() {
            case let upper where upper.hasPrefix("EHLO"): reply = "250-sink.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
            case let upper where upper.hasPrefix("MAIL"):
                reply = mailReply(session.index, session.mails)
                session.mails += 1
            case "DATA":
                reply = "354 go ahead\r\n"
                session.inData = true
            case "QUIT":
                session.connection.write(Array("221 2.0.0 bye\r\n".utf8))
                session.connection.close(afterFlush: true)
                return
            default: reply = "250 2.0.0 ok\r\n"
            }
            session.connection.write(Array(reply.utf8))
            if reply.hasPrefix("421") {
                session.connection.close(afterFlush: true)
                return
            }
        }
    }

    private static func find(_ needle: [UInt8], in haystack: [UInt8]) -> Int? {
        guard haystack.count >= needle.count else { return nil }
        return (0...(haystack.count - needle.count)).first { Array(haystack[$0..<$0 + needle.count]) == needle }
    }
}

/// Collects log lines (event and metadata) for the tests to read.
struct CapturingLog: LogHandler {
    final class Lines: Sendable {
        let lines = Mutex<[(String, Logger.Metadata)]>([])
        func matching(_ event: String, _ key: String, _ value: String) -> [Logger.Metadata] {
            lines.withLock { $0.filter { $0.0 == event && $0.1[key]?.description == value }.map(\.1) }
        }
    }

    let store: Lines
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .info

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(
        level: Logger.Level, message: Logger.Message, metadata: Logger.Metadata?, source: String, file: String,
        function: String, line: UInt
    ) {
        let all = self.metadata.merging(metadata ?? [:]) { $1 }
        store.lines.withLock { $0.append((message.description, all)) }
    }
}

// MARK: - The cache in the queue runner, over loopback

@Suite(.serialized) struct ConnectionCacheRunnerTests {
    static let hostname = "mta.lab.test"

    struct Setup {
        let directory: URL
        let spool: Spool
        let runner: QueueRunner
        let peer: CountingPeer
        let cache: ConnectionCache
        let log: CapturingLog.Lines

        func remove() {
            runner.stop()
            peer.stop()
            try? FileManager.default.removeItem(at: directory)
        }

        func send(to recipient: String = "bob@remote.test") throws -> QueueID {
            let message = try spool.begin()
            try message.append(Array("Subject: reuse test\r\n\r\nbody\r\n".utf8))
            let envelope = Envelope(
                arriving: message.id, sender: "alice@\(ConnectionCacheRunnerTests.hostname)",
                recipients: [RecipientRecord(address: recipient)], client: "[127.0.0.1]", heloName: "client.test",
                protocolName: "ESMTP", bodyType: nil, smtpUTF8: false, messageSize: message.size,
                now: Int64(Date().timeIntervalSince1970))
            try spool.commit(message, envelope: envelope)
            runner.wake(message.id)
            return message.id
        }

        /// Sends one message and waits until it left the queue.
        func deliver() async throws -> QueueID {
            let id = try send()
            try await QueueRunnerTests.eventually("message \(id) to leave the queue") {
                !(try spool.queuedIDs().contains(id))
            }
            return id
        }

        func deliveryLines(_ id: QueueID) -> [Logger.Metadata] { log.matching("delivery", "id", "\(id)") }
    }

    static func setUp(
        _ settings: ConnectionCacheSettings, peer: CountingPeer? = nil, strategy: ConnectStrategy = .sequential
    ) throws -> Setup {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("reuse-\(UUID())")
        let spool = try Spool(directory: directory.appendingPathComponent("spool").path)
        let peer = try peer ?? CountingPeer()
        let routes = try StaticRoutes(parsing: "remote.test=[127.0.0.1]:\(peer.address.port)")
        let lines = CapturingLog.Lines()
        let logger = Logger(label: "reuse-test") { _ in CapturingLog(store: lines) }
        let router = Router(
            policy: RoutingPolicy(
                identity: LocalIdentity(hostname: hostname), staticRoutes: routes, acceptLoopbackFromDNS: true),
            resolver: NoDNS(), transportCacheTTL: .seconds(3600), negativeCacheTTL: .seconds(60), cacheFile: nil,
            logger: logger)
        var outbound = OutboundConfiguration(
            heloName: hostname, connectTimeout: .seconds(5), replyTimeout: .seconds(30), bindAddress: nil,
            bindAddress6: nil)
        let cache = ConnectionCache(settings: settings, logger: logger)
        outbound.connectionCache = cache
        outbound.connectStrategy = strategy
        let configuration = DeliveryConfiguration(
            policy: RecipientPolicy(
                hostname: hostname, localDomains: [hostname], ownAddresses: [], localRecipients: nil,
                relayDomains: [], relayRecipients: nil),
            outbound: OutboundTransport(configuration: outbound, router: router),
            retrySchedule: RetrySchedule([.seconds(600)]),
            bounces: BounceSettings(
                hostname: hostname, maxQueueLifetime: .seconds(86_400), delayWarningAfter: .zero,
                doubleBounceRecipient: "postmaster"))
        let runner = QueueRunner(spool: spool, configuration: configuration, logger: logger)
        return Setup(directory: directory, spool: spool, runner: runner, peer: peer, cache: cache, log: lines)
    }

    /// Long enough that no parked session expires while a test runs (expiry is tested on its own).
    static let patient = ConnectionCacheSettings(idleTime: .seconds(120), reuseLimit: 100, size: 8)

    @Test func fiveMessagesToOneHopUseOneConnection() async throws {
        let setup = try Self.setUp(Self.patient)
        defer { setup.remove() }
        var ids: [QueueID] = []
        for _ in 0..<5 { ids.append(try await setup.deliver()) }
        let record = setup.peer.record.withLock { $0 }
        #expect(record.connections == 1)
        #expect(record.transactions == 5)
        #expect(record.quits == 0)
        #expect(record.commands.first?.filter { $0.hasPrefix("EHLO") }.count == 1)
        #expect(setup.cache.count == 1)
        let connections = ids.map { setup.deliveryLines($0).map { $0["conn"]?.description ?? "-" } }
        #expect(connections == [["new"], ["reused"], ["reused"], ["reused"], ["reused"]])
        #expect(DualMTAMetrics.registry.value(DualMTAMetrics.connectionCacheParked) == 1)
        // Shutdown says goodbye to the parked session.
        setup.runner.stop()
        try await QueueRunnerTests.eventually("QUIT at shutdown") { setup.peer.record.withLock { $0.quits } == 1 }
        #expect(setup.cache.count == 0)
    }

    /// With Happy Eyeballs a parked connection to an address of the level wins without a race (no `connect` line).
    @Test func happyEyeballsTakesAParkedConnectionWithoutARace() async throws {
        let setup = try Self.setUp(Self.patient, strategy: .happyEyeballs)
        defer { setup.remove() }
        var ids: [QueueID] = []
        for _ in 0..<3 { ids.append(try await setup.deliver()) }
        #expect(setup.peer.record.withLock { $0.connections } == 1)
        let connections = ids.map { setup.deliveryLines($0).map { $0["conn"]?.description ?? "-" } }
        #expect(connections == [["new"], ["reused"], ["reused"]])
        #expect(setup.log.matching("connect", "result", "won").count == 1, "one race, for the first message only")
    }

    @Test func aParkedConnectionAnswering421IsRetriedOnANewOneWithoutAFailure() async throws {
        // The first connection's second transaction gets 421 at MAIL (a server that timed the client out).
        let peer = try CountingPeer { connection, transaction in
            connection == 0 && transaction == 1 ? "421 4.4.2 sink.test idle too long\r\n" : "250 2.1.0 ok\r\n"
        }
        let setup = try Self.setUp(Self.patient, peer: peer)
        defer { setup.remove() }
        _ = try await setup.deliver()
        let second = try await setup.deliver()
        let lines = setup.deliveryLines(second)
        #expect(lines.count == 1, "one attempt only: the dead parked connection is not an attempt")
        #expect(lines.first?["result"]?.description == "sent")
        #expect(lines.first?["conn"]?.description == "new")
        let dropped = setup.log.matching("connection-cache", "reason", "dead-on-reuse")
        #expect(dropped.count == 1)
        #expect(dropped.first?["id"]?.description == "\(second)")
        #expect(setup.log.matching("deferred", "id", "\(second)").isEmpty)
        #expect(setup.peer.record.withLock { $0.connections } == 2)
    }

    @Test func aParkedConnectionThePeerClosesIsDroppedAtOnce() async throws {
        let setup = try Self.setUp(Self.patient)
        defer { setup.remove() }
        _ = try await setup.deliver()
        #expect(setup.cache.count == 1)
        setup.peer.closeAll()
        try await QueueRunnerTests.eventually("the cache to drop the closed session") { setup.cache.count == 0 }
        #expect(setup.log.matching("connection-cache", "reason", "peer-closed").count == 1)
        let next = try await setup.deliver()
        #expect(setup.deliveryLines(next).map { $0["conn"]?.description } == ["new"])
        #expect(setup.peer.record.withLock { $0.connections } == 2)
    }

    @Test func aParkedConnectionThePeerTalksOnIsDroppedAtOnce() async throws {
        let setup = try Self.setUp(Self.patient)
        defer { setup.remove() }
        _ = try await setup.deliver()
        #expect(setup.cache.count == 1)
        setup.peer.sayToAll("421 4.4.2 sink.test closing idle connection\r\n")
        try await QueueRunnerTests.eventually("the cache to drop the session") { setup.cache.count == 0 }
        #expect(setup.log.matching("connection-cache", "reason", "peer-spoke").count == 1)
        let next = try await setup.deliver()
        #expect(setup.deliveryLines(next).map { $0["conn"]?.description } == ["new"])
    }

    @Test func theReuseLimitEndsAConnectionWithQUIT() async throws {
        var settings = Self.patient
        settings.reuseLimit = 2
        let setup = try Self.setUp(settings)
        defer { setup.remove() }
        for _ in 0..<3 { _ = try await setup.deliver() }
        try await QueueRunnerTests.eventually("QUIT after the second transaction") {
            setup.peer.record.withLock { $0.quits } == 1
        }
        let record = setup.peer.record.withLock { $0 }
        #expect(record.connections == 2)
        #expect(record.commands[0].filter { $0.hasPrefix("MAIL") }.count == 2)
        #expect(record.commands[0].last == "QUIT")
        #expect(setup.log.matching("connection-cache", "reason", "limit").count == 1)
    }

    @Test func anIdleParkedConnectionExpiresWithQUIT() async throws {
        var settings = Self.patient
        settings.idleTime = .milliseconds(200)
        let setup = try Self.setUp(settings)
        defer { setup.remove() }
        _ = try await setup.deliver()
        try await QueueRunnerTests.eventually("QUIT once the idle time passed") {
            setup.peer.record.withLock { $0.quits } == 1
        }
        #expect(setup.cache.count == 0)
        #expect(setup.log.matching("connection-cache", "reason", "expired").count == 1)
    }

    @Test func concurrentRunsNeverShareAParkedConnection() async throws {
        let setup = try Self.setUp(Self.patient, peer: try CountingPeer(greets: false))
        defer { setup.remove() }
        // Two sessions parked for the same next hop, made directly.
        let key = ConnectionKey(
            address: setup.peer.address, source: nil, heloName: Self.hostname, tlsPolicy: .none, serverName: nil)
        var channels: [OutboundChannel] = []
        for _ in 0..<2 {
            // The connection is made and handed over on `queue`; touching it only inside `queue.sync` orders this
            // thread after that (ThreadSanitizer does not see the continuation's resume as an ordering).
            let queue = DispatchQueue(label: "reuse-test")
            let connection = try await withCheckedThrowingContinuation { continuation in
                Connection.connect(to: setup.peer.address, from: nil, timeout: .seconds(5), queue: queue) {
                    continuation.resume(with: $0)
                }
            }
            let channel = queue.sync { OutboundChannel(connection: connection) }
            channel.queue.sync { setup.cache.park(channel, key: key) }
            channels.append(channel)
        }
        #expect(setup.cache.count == 2)
        let takers = await withTaskGroup(of: ObjectIdentifier?.self) { group in
            for _ in 0..<3 { group.addTask { setup.cache.take(key).map(ObjectIdentifier.init) } }
            return await group.reduce(into: []) { $0.append($1) }
        }
        let taken = takers.compactMap { $0 }
        #expect(taken.count == 2, "two sessions, two takers; the third finds none")
        #expect(Set(taken).count == 2, "never the same session twice")
        for channel in channels { channel.queue.sync { channel.quit() } }
    }
}
