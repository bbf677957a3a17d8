import Delivery
import Dispatch
import Foundation
import Glibc
import NetAddress
import SMTPProtocol
import Sockets
import Synchronization
import Testing

/// A fake MX on loopback, port 0, answering per stage, written on `Listener`/`Connection`.
final class ScriptedPeer: @unchecked Sendable {
    // @unchecked Sendable — confinement: `connection`, `buffer`, `inData` and `dataSeen` are touched only on
    // `queue` (accept, read and close handlers run there); what the tests read is in the `record` mutex.

    enum Step: Sendable {
        case reply(String)
        /// Close at once, without answering.
        case close
        /// Never answer.
        case silence
        /// Only for `dot`: close once this many body bytes arrived (before the end of data).
        case closeAfterReceiving(Int)
    }

    struct Script: Sendable {
        var greeting = Step.reply("220 mx.test ESMTP scripted\r\n")
        var ehlo = Step.reply("250-mx.test\r\n250-PIPELINING\r\n250-SIZE 100000000\r\n250 8BITMIME\r\n")
        var mail = Step.reply("250 2.1.0 ok\r\n")
        var rcpt: [String: Step] = [:]
        var data = Step.reply("354 end with <CRLF>.<CRLF>\r\n")
        var dot = Step.reply("250 2.0.0 queued\r\n")
        var quit = Step.reply("221 2.0.0 bye\r\n")
    }

    struct Record: Sendable {
        var commands: [String] = []
        /// The DATA bytes exactly as received, final `.\r\n` included.
        var data: [UInt8] = []
    }

    let listener: Listener
    let record = Mutex(Record())
    private let script: Script
    private let queue = DispatchQueue(label: "scripted-peer")
    private var connection: Connection?
    private var buffer: [UInt8] = []
    private var inData = false
    private var dataSeen = 0
    /// After a `.silence` step the peer answers nothing more (a stalled server).
    private var silent = false

    var address: SocketAddress { listener.localAddress }

    init(on ip: String, _ script: Script = Script()) throws {
        let ip = try #require(IPAddress(ip))
        listener = try Listener.bind(SocketAddress(ip: ip, port: 0))
        self.script = script
        listener.start(queue: queue, onAccept: { socket in self.accepted(socket) }, onError: { _ in })
    }

    func stop() {
        listener.close()
        queue.sync { connection?.close(afterFlush: false) }
    }

    private func accepted(_ socket: AcceptedSocket) {
        guard connection == nil else {
            socket.close()
            return
        }
        let connection = Connection(socket: socket, queue: queue)
        self.connection = connection
        connection.startReading({ bytes in self.received(Array(bytes)) }, onClose: { _ in })
        perform(script.greeting)
    }

    private func perform(_ step: Step) {
        guard !silent else { return }
        switch step {
        case .reply(let text): connection?.write(Array(text.utf8))
        case .close, .closeAfterReceiving: connection?.close(afterFlush: false)
        case .silence: silent = true
        }
    }

    private func received(_ bytes: [UInt8]) {
        buffer += bytes
        while connection?.isClosed == false {
            if inData {
                let chunk = buffer
                buffer = []
                dataSeen += chunk.count
                record.withLock { $0.data += chunk }
                if case .closeAfterReceiving(let limit) = script.dot, dataSeen >= limit {
                    perform(.close)
                    return
                }
                // Dot-stuffed content never holds CRLF.CRLF, so the end of data is the end of what arrived.
                let data = record.withLock { Array($0.data.suffix(5)) }
                guard data == Array("\r\n.\r\n".utf8) || (dataSeen == 3 && data == Array(".\r\n".utf8)) else { return }
                inData = false
                perform(script.dot)
                return
            }
            guard let lf = buffer.firstIndex(of: 10) else { return }
            let line = String(decoding: buffer[..<lf].dropLast(), as: UTF8.self)
            buffer.removeFirst(lf + 1)
            record.withLock { $0.commands.append(line) }
            let upper = line.uppercased()
            if upper.hasPrefix("EHLO") {
                perform(script.ehlo)
            } else if upper.hasPrefix("HELO") {
                perform(.reply("250 mx.test\r\n"))
            } else if upper.hasPrefix("MAIL") {
                perform(script.mail)
            } else if upper.hasPrefix("RCPT TO:<") {
                let address = String(line.dropFirst("RCPT TO:<".count).prefix { $0 != ">" })
                perform(script.rcpt[address] ?? .reply("250 2.1.5 ok\r\n"))
            } else if upper == "DATA" {
                perform(script.data)
                if case .reply(let text) = script.data, text.hasPrefix("354") { inData = true }
            } else if upper == "QUIT" {
                perform(script.quit)
                connection?.close(afterFlush: true)
            } else {
                perform(.reply("500 5.5.2 what?\r\n"))
            }
        }
    }
}

/// A stored message in a fresh temporary directory, removed by `remove()`.
struct StoredMessage {
    let directory: URL
    let path: String

    init(_ bytes: [UInt8]) throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("remote-delivery-\(UUID())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        path = directory.appendingPathComponent("message").path
        try Data(bytes).write(to: URL(fileURLWithPath: path))
    }

    func remove() {
        try? FileManager.default.removeItem(at: directory)
    }
}

private let testQueue = DispatchQueue(label: "remote-delivery-tests")

private func attempt(
    _ address: SocketAddress, _ message: StoredMessage, recipients: [String] = ["bob@mx.test"],
    timeouts: ClientTimeouts = .all(.seconds(10)), bodyType: BodyType? = .eightBitMIME
) async -> DeliveryAttemptResult {
    await withCheckedContinuation { continuation in
        let request = AttemptRequest(
            source: nil, connectTimeout: .seconds(5), timeouts: timeouts, heloName: "client.test",
            sender: "alice@client.test", recipients: recipients, messageFile: message.path, bodyType: bodyType,
            smtpUTF8: false)
        RemoteDelivery.deliver(to: address, request, queue: testQueue) { result in
            continuation.resume(returning: result)
        }
    }
}

private func sessionResult(_ result: DeliveryAttemptResult) -> ClientResult? {
    if case .session(let session) = result.outcome { return session }
    Issue.record("expected a session, got \(result.outcome)")
    return nil
}

private let loopbacks = ["127.0.0.1", "::1"]

@Suite(.serialized, .timeLimit(.minutes(2)))
struct RemoteDeliveryTests {
    @Test(arguments: loopbacks)
    func deliversExactDotStuffedCRLFBytes(_ ip: String) async throws {
        let peer = try ScriptedPeer(on: ip)
        defer { peer.stop() }
        // RFC 5321 §4.5.2: a leading dot is doubled, a bare LF leaves as CRLF, a missing final CRLF is added.
        let stored = Array("Subject: t\r\n\r\n.hidden\r\nbare LF\nline\r\n..two\r\n.\r\nlast".utf8)
        let message = try StoredMessage(stored)
        defer { message.remove() }

        let result = await attempt(peer.address, message, recipients: ["bob@mx.test", "carol@mx.test"])

        let session = try #require(sessionResult(result))
        let delivered = RecipientOutcome.delivered(Reply(250, EnhancedStatus(2, 0, 0), "queued"))
        #expect(session.recipients.map(\.outcome) == [delivered, delivered])
        #expect(session.kind == .completed)
        #expect(session.possibleDuplicate == false)
        #expect(result.address == peer.address)
        #expect(result.localAddress?.family == peer.address.family)
        let record = peer.record.withLock { $0 }
        let expected = "Subject: t\r\n\r\n..hidden\r\nbare LF\r\nline\r\n...two\r\n..\r\nlast\r\n.\r\n"
        #expect(String(decoding: record.data, as: UTF8.self) == expected)
        #expect(
            record.commands == [
                "EHLO client.test", "MAIL FROM:<alice@client.test> SIZE=\(stored.count) BODY=8BITMIME",
                "RCPT TO:<bob@mx.test>", "RCPT TO:<carol@mx.test>", "DATA", "QUIT",
            ])
    }

    @Test func streamsALargeMessageInChunks() async throws {
        let peer = try ScriptedPeer(on: "127.0.0.1")
        defer { peer.stop() }
        var generator = SystemRandomNumberGenerator()
        var stored: [UInt8] = []
        while stored.count < 300_000 {
            let length = Int.random(in: 0..<80, using: &generator)
            let line = (0..<length).map { _ in [UInt8(ascii: "."), UInt8(ascii: "a"), 13, 10][Int.random(in: 0..<4)] }
            stored += line + [13, 10]
        }
        let message = try StoredMessage(stored)
        defer { message.remove() }

        let result = await attempt(peer.address, message)

        #expect(sessionResult(result)?.kind == .completed)
        let data = peer.record.withLock { $0.data }
        #expect(data == OutboundBody.encode(stored))
        let bareEnds = data.indices.filter {
            (data[$0] == 13 && (($0 + 1) == data.count || data[$0 + 1] != 10)) || (data[$0] == 10 && data[$0 - 1] != 13)
        }
        #expect(bareEnds.isEmpty)
    }

    @Test(arguments: [
        ("450 4.2.0 greylisted\r\n", true), ("550 5.1.1 no such user\r\n", false),
    ])
    func recipientRefusals(_ sample: (String, Bool)) async throws {
        let (reply, temporary) = sample
        var script = ScriptedPeer.Script()
        script.rcpt = ["bob@mx.test": .reply(reply)]
        let peer = try ScriptedPeer(on: "127.0.0.1", script)
        defer { peer.stop() }
        let message = try StoredMessage(Array("hi\r\n".utf8))
        defer { message.remove() }

        let result = await attempt(peer.address, message)

        let outcome = try #require(sessionResult(result)?.recipients.first?.outcome)
        switch outcome {
        case .temporary(let got): #expect(temporary && got.code == 450)
        case .permanent(let got): #expect(!temporary && got.code == 550)
        case .delivered: Issue.record("refused recipient reported delivered")
        }
        // The only recipient was refused: with PIPELINING the DATA reply is read and no body goes out.
        #expect(peer.record.withLock { $0.data }.count <= 3)
    }

    @Test func closeDuringTheBodyIsTemporaryWithoutDuplicate() async throws {
        var script = ScriptedPeer.Script()
        script.dot = .closeAfterReceiving(10_000)
        let peer = try ScriptedPeer(on: "127.0.0.1", script)
        defer { peer.stop() }
        // Far more than loopback socket buffers hold, so the peer's close lands mid-body (O09).
        let line = String(repeating: "x", count: 998) + "\r\n"
        let message = try StoredMessage(Array(String(repeating: line, count: 16_000).utf8))
        defer { message.remove() }

        let result = await attempt(peer.address, message)

        let session = try #require(sessionResult(result))
        #expect(session.possibleDuplicate == false)
        #expect(session.recipients.map(\.outcome.reply.effectiveStatus) == [EnhancedStatus(4, 4, 2)])
        guard case .hostFailed(.connectionLost(.dataBlock)) = session.kind else {
            Issue.record("expected connection lost during the body, got \(session.kind)")
            return
        }
    }

    @Test func closeAfterTheDotMayDeliverTwice() async throws {
        var script = ScriptedPeer.Script()
        script.dot = .close
        let peer = try ScriptedPeer(on: "127.0.0.1", script)
        defer { peer.stop() }
        let message = try StoredMessage(Array("hi\r\n".utf8))
        defer { message.remove() }

        let result = await attempt(peer.address, message)

        let session = try #require(sessionResult(result))
        #expect(session.possibleDuplicate == true)
        #expect(session.kind == .hostFailed(.connectionLost(.dataDone)))
        #expect(session.recipients.map(\.outcome.reply.effectiveStatus) == [EnhancedStatus(4, 4, 2)])
    }

    @Test(arguments: loopbacks)
    func refusingGreetingFailsTheHost(_ ip: String) async throws {
        var script = ScriptedPeer.Script()
        script.greeting = .reply("554 5.3.2 not today\r\n")
        let peer = try ScriptedPeer(on: ip, script)
        defer { peer.stop() }
        let message = try StoredMessage(Array("hi\r\n".utf8))
        defer { message.remove() }

        let result = await attempt(peer.address, message)

        let session = try #require(sessionResult(result))
        #expect(session.kind == .hostFailed(.greeting(Reply(554, EnhancedStatus(5, 3, 2), "not today"))))
        #expect(peer.record.withLock { $0.commands } == ["QUIT"])
    }

    @Test func silentPeerHitsTheStageDeadline() async throws {
        var script = ScriptedPeer.Script()
        script.greeting = .silence
        let peer = try ScriptedPeer(on: "127.0.0.1", script)
        defer { peer.stop() }
        let message = try StoredMessage(Array("hi\r\n".utf8))
        defer { message.remove() }

        let result = await attempt(peer.address, message, timeouts: .all(.milliseconds(300)))

        #expect(sessionResult(result)?.kind == .hostFailed(.timedOut(.greeting)))
        #expect(result.elapsedMilliseconds >= 300)
        #expect(result.elapsedMilliseconds < 5000)
    }

    @Test func stallAfterRCPTHitsTheStageDeadline() async throws {
        var script = ScriptedPeer.Script()
        script.rcpt = ["bob@mx.test": .silence]
        let peer = try ScriptedPeer(on: "127.0.0.1", script)
        defer { peer.stop() }
        let message = try StoredMessage(Array("hi\r\n".utf8))
        defer { message.remove() }

        var timeouts = ClientTimeouts.all(.seconds(10))
        timeouts.rcpt = .milliseconds(200)
        let result = await attempt(peer.address, message, timeouts: timeouts)

        #expect(sessionResult(result)?.kind == .hostFailed(.timedOut(.rcpt)))
        #expect(result.elapsedMilliseconds < 5000)
    }

    @Test(arguments: loopbacks)
    func closedPortIsRefusedQuickly(_ ip: String) async throws {
        // Bind to learn a free port, then close it: nothing listens there any more.
        let probe = try Listener.bind(SocketAddress(ip: try #require(IPAddress(ip)), port: 0))
        let address = probe.localAddress
        probe.close()
        let message = try StoredMessage(Array("hi\r\n".utf8))
        defer { message.remove() }

        let result = await attempt(address, message)

        guard case .connectFailed(let error) = result.outcome else {
            Issue.record("expected a connect failure, got \(result.outcome)")
            return
        }
        #expect(error.reason == "Connection refused")
        #expect(error.description == "connect to \(address): Connection refused")
        #expect(error.reply.effectiveStatus == EnhancedStatus(4, 4, 1))
        #expect(result.elapsedMilliseconds < 2000)
    }

    @Test func missingMessageFileConnectsNowhere() async throws {
        let peer = try ScriptedPeer(on: "127.0.0.1")
        defer { peer.stop() }
        let message = try StoredMessage([])
        message.remove()

        let result = await attempt(peer.address, message)

        guard case .messageUnreadable(let why) = result.outcome else {
            Issue.record("expected an unreadable message, got \(result.outcome)")
            return
        }
        #expect(why.hasSuffix("No such file or directory"))
        #expect(peer.record.withLock { $0.commands }.isEmpty)
    }

    @Test func deliversToPostfixSmtpSink() async throws {
        let sinkPath = "/usr/sbin/smtp-sink"
        guard FileManager.default.isExecutableFile(atPath: sinkPath) else {
            if ProcessInfo.processInfo.environment["CI"] == "true" {
                Issue.record("\(sinkPath) is missing (install postfix)")
            } else {
                print("skipping the smtp-sink test: \(sinkPath) not installed")
            }
            return
        }
        let probe = try Listener.bind(SocketAddress(ip: try #require(IPAddress("127.0.0.1")), port: 0))
        let address = probe.localAddress
        probe.close()
        let dumps = FileManager.default.temporaryDirectory.appendingPathComponent("smtp-sink-\(UUID())")
        try FileManager.default.createDirectory(at: dumps, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dumps) }
        _ = chmod(dumps.path, 0o777)  // smtp-sink drops to `nobody` before writing dumps

        let sink = Process()
        sink.executableURL = URL(fileURLWithPath: sinkPath)
        var arguments = ["-d", dumps.path + "/%M."]
        if getuid() == 0 { arguments += ["-u", "nobody"] }  // smtp-sink refuses to keep root privileges
        sink.arguments = arguments + ["\(address)", "10"]
        try sink.run()
        defer {
            // smtp-sink ignores SIGTERM.
            kill(sink.processIdentifier, SIGKILL)
            sink.waitUntilExit()
        }
        try await waitUntilListening(address)
        let message = try StoredMessage(Array("Subject: sink\r\n\r\n.hidden\r\nbody\r\n".utf8))
        defer { message.remove() }

        let result = await attempt(address, message)

        let session = try #require(sessionResult(result))
        #expect(session.kind == .completed)
        guard case .delivered? = session.recipients.first?.outcome else {
            Issue.record("expected delivered, got \(session.recipients)")
            return
        }
        #expect(session.capabilities?.pipelining == true)
        // smtp-sink un-stuffs the dot and stores LF line ends.
        let files = try FileManager.default.contentsOfDirectory(atPath: dumps.path)
        let dump = try String(
            contentsOfFile: dumps.appendingPathComponent(try #require(files.first)).path, encoding: .utf8)
        #expect(dump.contains("\n\n.hidden\nbody\n"))
        #expect(dump.contains("X-Mail-Args: <alice@client.test> BODY=8BITMIME\n"))
    }

    /// Polls until something accepts on `address` (a started child process is not listening at once).
    private func waitUntilListening(_ address: SocketAddress) async throws {
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline {
            let connected: Bool = await withCheckedContinuation { continuation in
                Connection.connect(to: address, from: nil, timeout: .seconds(1), queue: testQueue) { result in
                    if case .success(let connection) = result { connection.close(afterFlush: false) }
                    continuation.resume(returning: (try? result.get()) != nil)
                }
            }
            if connected { return }
            try await Task.sleep(for: .milliseconds(20))
        }
        Issue.record("smtp-sink did not start listening on \(address)")
    }
}
