import Testing

@testable import SMTPProtocol

/// What the scripted server does when a command (or the end of data) reaches it.
enum PeerStep: Sendable {
    case reply(String)
    /// Send these bytes, then close.
    case replyThenClose(String)
    /// Close the connection instead of answering.
    case close
    /// Never answer: the armed deadline fires.
    case silence
}

/// A scripted server answering per stage, in the spirit of chasquid's fake server.
struct PeerScript: Sendable {
    var greeting = PeerStep.reply("220 mx.example ESMTP\r\n")
    var ehlo = PeerStep.reply("250-mx.example\r\n250-PIPELINING\r\n250-SIZE 10000\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n")
    var helo = PeerStep.reply("250 mx.example\r\n")
    var mail = PeerStep.reply("250 2.1.0 ok\r\n")
    /// By recipient; recipients not listed get 250.
    var rcpt: [String: PeerStep] = [:]
    var data = PeerStep.reply("354 go ahead\r\n")
    /// Once the driver streamed the body: what happens after `.`.
    var dot = PeerStep.reply("250 2.0.0 queued as X\r\n")
    var quit = PeerStep.reply("221 2.0.0 bye\r\n")
    var rset = PeerStep.reply("250 2.0.0 ok\r\n")

    static func ehlo(_ lines: String...) -> PeerStep {
        var text = ""
        let all = ["mx.example"] + lines
        for (index, line) in all.enumerated() { text += "250\(index == all.count - 1 ? " " : "-")\(line)\r\n" }
        return .reply(text)
    }
}

/// The session driven against a script, standing in for RemoteDelivery: what it sent and how it ended.
struct Run {
    /// Command lines in order; each `write` is one element of `writes`.
    var writes: [String] = []
    var lines: [String] { writes.flatMap { $0.split(separator: "\r\n").map(String.init) } }
    var bodySent = false
    var armed: [ClientStage] = []
    var closed = false
    var startedTLS = false
    var result: ClientResult?

    var outcomes: [RecipientOutcome] { result?.recipients.map(\.outcome) ?? [] }
}

struct Transaction1: Sendable {
    var sender = "alice@client.example"
    var recipients = ["bob@mx.example"]
    var size = 100
    var bodyType: BodyType? = nil
    var smtpUTF8 = false
    var dsn: OutboundDSN? = nil
    var sevenBit = SevenBitOption.unavailable(nil)
    /// Fault rules standing in for the driver's (ClientFault.swift).
    var faultHook: ClientFaultHook? = nil
    /// A parked connection taken again (no greeting from the script), and whether the driver could park this one.
    var resuming: ClientSession.Resumption? = nil
    var keepOpen = false

    func session() -> ClientSession {
        var session = ClientSession(
            heloName: "client.example", sender: sender, recipients: recipients, messageSize: size, bodyType: bodyType,
            needsSMTPUTF8: smtpUTF8, dsn: dsn, sevenBit: sevenBit, resuming: resuming, keepOpen: keepOpen)
        session.faultHook = faultHook
        return session
    }
}

/// Runs `transaction` against `script`, handing server bytes over as `feeding` says. Stops at `.finished`
/// or when nothing more can happen (then `result` is nil and the test fails on it).
func drive(_ transaction: Transaction1 = Transaction1(), _ script: PeerScript, _ feeding: Chunking) -> Run {
    var session = transaction.session()
    var run = Run()
    var pendingEvent: PeerStep? = nil
    var outbound: [UInt8] = []
    var seed: UInt64 = 1

    func answer(_ step: PeerStep) {
        // The server says nothing more once it closed or went silent.
        guard pendingEvent == nil else { return }
        switch step {
        case .reply(let text): outbound += Array(text.utf8)
        case .replyThenClose(let text):
            outbound += Array(text.utf8)
            pendingEvent = .close
        case .close, .silence: pendingEvent = step
        }
    }

    func perform(_ actions: [ClientAction], _ session: inout ClientSession) -> [ClientAction] {
        var more: [ClientAction] = []
        for action in actions {
            switch action {
            case .send(let bytes):
                let text = String(decoding: bytes, as: UTF8.self)
                run.writes.append(text)
                for line in text.split(separator: "\r\n") {
                    if line.hasPrefix("EHLO") {
                        answer(script.ehlo)
                    } else if line.hasPrefix("HELO") {
                        answer(script.helo)
                    } else if line.hasPrefix("MAIL") {
                        answer(script.mail)
                    } else if line.hasPrefix("RCPT TO:<") {
                        let address = String(line.dropFirst("RCPT TO:<".count).dropLast())
                        answer(script.rcpt[address] ?? .reply("250 2.1.5 ok\r\n"))
                    } else if line == "DATA" {
                        answer(script.data)
                    } else if line == "." {
                        answer(script.dot)
                    } else if line == "QUIT" {
                        answer(script.quit)
                    } else if line == "RSET" {
                        answer(script.rset)
                    }
                }
            case .sendBody:
                run.bodySent = true
                if pendingEvent == nil {
                    more += session.bodySent()
                    answer(script.dot)
                }
            case .arm(let stage):
                run.armed.append(stage)
            case .close:
                run.closed = true
            case .startTLS:
                run.startedTLS = true
            case .finished(let result):
                #expect(run.result == nil, "finished twice")
                run.result = result
            }
        }
        return more
    }

    var actions = session.start()
    if transaction.resuming == nil { answer(script.greeting) }
    for _ in 0..<10_000 {
        while !actions.isEmpty { actions = perform(actions, &session) }
        if run.result != nil { break }
        if !outbound.isEmpty {
            let bytes = outbound
            outbound = []
            seed += 1
            for chunk in feeding.split(bytes, salt: seed) {
                actions += session.receive(chunk)
                while !actions.isEmpty { actions = perform(actions, &session) }
            }
            continue
        }
        switch pendingEvent {
        case .close?: actions = session.connectionClosed()
        case .silence?: actions = session.timedOut()
        default: return run
        }
        pendingEvent = nil
    }
    return run
}

private let queued = Reply(250, EnhancedStatus(2, 0, 0), "queued as X")

@Suite struct ClientSessionTests {
    // MARK: - Happy paths

    @Test(arguments: Chunking.all)
    func pipelinedDeliverySendsOneGroup(_ feeding: Chunking) {
        let transaction = Transaction1(recipients: ["bob@mx.example", "carol@mx.example"], bodyType: .eightBitMIME)
        let run = drive(transaction, PeerScript(), feeding)
        #expect(
            run.writes == [
                "EHLO client.example\r\n",
                "MAIL FROM:<alice@client.example> SIZE=100 BODY=8BITMIME\r\nRCPT TO:<bob@mx.example>\r\n"
                    + "RCPT TO:<carol@mx.example>\r\nDATA\r\n",
                "QUIT\r\n",
            ])
        #expect(run.bodySent)
        #expect(run.closed)
        #expect(run.outcomes == [.delivered(queued), .delivered(queued)])
        #expect(run.result?.kind == .completed)
        #expect(run.result?.possibleDuplicate == false)
        #expect(run.result?.greeting == "mx.example ESMTP")
        #expect(run.result?.capabilities?.pipelining == true)
        #expect(run.result?.capabilities?.size == 10000)
        #expect(run.armed == [.greeting, .ehlo, .mail, .rcpt, .rcpt, .dataInit, .dataBlock, .dataDone, .quit])
    }

    /// RFC 3461 §6.2: the DSN request goes on only to a server that offers DSN (encoded as xtext again).
    @Test(arguments: [true, false])
    func dsnParametersArePassedOnOnlyToADSNServer(offered: Bool) {
        var script = PeerScript()
        script.ehlo = offered ? PeerScript.ehlo("PIPELINING", "DSN") : PeerScript.ehlo("PIPELINING")
        let dsn = OutboundDSN(
            ret: .headers, envelopeID: "abc+d e",
            recipients: [
                .init(notify: DSNNotify(success: true, delay: true), originalRecipient: "rfc822;Bob+x@mx.example"),
                .init(notify: .never, originalRecipient: nil),
            ])
        let transaction = Transaction1(recipients: ["bob@mx.example", "carol@mx.example"], dsn: dsn)
        let run = drive(transaction, script, .whole)
        let expected =
            offered
            ? "MAIL FROM:<alice@client.example> RET=HDRS ENVID=abc+2Bd+20e\r\n"
                + "RCPT TO:<bob@mx.example> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;Bob+2Bx@mx.example\r\n"
                + "RCPT TO:<carol@mx.example> NOTIFY=NEVER\r\nDATA\r\n"
            : "MAIL FROM:<alice@client.example>\r\nRCPT TO:<bob@mx.example>\r\nRCPT TO:<carol@mx.example>\r\nDATA\r\n"
        #expect(run.writes.count > 1 && run.writes[1] == expected)
        #expect(run.result?.capabilities?.dsn == offered)
    }

    @Test(arguments: Chunking.all)
    func withoutPipeliningCommandsGoOneByOne(_ feeding: Chunking) {
        var script = PeerScript()
        script.ehlo = PeerScript.ehlo("8BITMIME", "SIZE")
        let transaction = Transaction1(recipients: ["bob@mx.example", "carol@mx.example"], bodyType: .sevenBit)
        let run = drive(transaction, script, feeding)
        #expect(
            run.writes == [
                "EHLO client.example\r\n", "MAIL FROM:<alice@client.example> SIZE=100 BODY=7BIT\r\n",
                "RCPT TO:<bob@mx.example>\r\n", "RCPT TO:<carol@mx.example>\r\n", "DATA\r\n", "QUIT\r\n",
            ])
        #expect(run.outcomes == [.delivered(queued), .delivered(queued)])
        #expect(run.armed == [.greeting, .ehlo, .mail, .rcpt, .rcpt, .dataInit, .dataBlock, .dataDone, .quit])
    }

    @Test func nullSenderAndNoParametersTheServerLacks() {
        var script = PeerScript()
        script.ehlo = PeerScript.ehlo("ENHANCEDSTATUSCODES")
        let run = drive(Transaction1(sender: "", bodyType: .sevenBit), script, .whole)
        #expect(run.lines.contains("MAIL FROM:<>"))
        #expect(run.result?.capabilities?.enhancedStatusCodes == true)
        #expect(run.outcomes == [.delivered(queued)])
    }

    @Test func smtpUTF8IsRequestedWhenNeeded() {
        let run = drive(Transaction1(bodyType: .eightBitMIME, smtpUTF8: true), PeerScript(), .whole)
        #expect(run.lines.contains("MAIL FROM:<alice@client.example> SIZE=100 BODY=8BITMIME SMTPUTF8"))
        #expect(run.outcomes == [.delivered(queued)])
    }

    // MARK: - Greeting and EHLO (O02, O03)

    @Test(
        arguments: [
            ("421 4.3.2 busy\r\n", Reply(421, EnhancedStatus(4, 3, 2), "busy")),
            ("554 5.3.2 go away\r\n", Reply(454, EnhancedStatus(4, 3, 2), "go away")),
            ("554 no\r\n", Reply(454, EnhancedStatus(4, 0, 0), "no")),
        ], Chunking.all)
    func refusingGreetingFailsTheHost(_ sample: (String, Reply), _ feeding: Chunking) {
        let (greeting, temporary) = sample
        var script = PeerScript()
        script.greeting = .reply(greeting)
        let run = drive(Transaction1(), script, feeding)
        #expect(run.writes == ["QUIT\r\n"])
        #expect(run.outcomes == [.temporary(temporary)])
        guard case .hostFailed(.greeting(let reply))? = run.result?.kind else {
            Issue.record("expected a greeting failure, got \(String(describing: run.result?.kind))")
            return
        }
        #expect(reply.code == Int(greeting.prefix(3)))
    }

    @Test(arguments: ["502 5.5.1 unrecognized\r\n", "500 what\r\n", "550 no EHLO here\r\n"], Chunking.all)
    func refusedEHLOFallsBackToHELO(_ ehloReply: String, _ feeding: Chunking) {
        var script = PeerScript()
        script.ehlo = .reply(ehloReply)
        let run = drive(Transaction1(), script, feeding)
        #expect(
            run.lines == [
                "EHLO client.example", "HELO client.example", "MAIL FROM:<alice@client.example>",
                "RCPT TO:<bob@mx.example>", "DATA", "QUIT",
            ])
        #expect(run.result?.capabilities == ServerCapabilities())
        #expect(run.outcomes == [.delivered(queued)])
    }

    @Test func refusedHELOFailsTheHost() {
        var script = PeerScript()
        script.ehlo = .reply("502 no\r\n")
        script.helo = .reply("550 5.7.1 go away\r\n")
        let run = drive(Transaction1(), script, .whole)
        #expect(run.lines == ["EHLO client.example", "HELO client.example", "QUIT"])
        #expect(run.result?.kind == .hostFailed(.hello(Reply(550, EnhancedStatus(5, 7, 1), "go away"))))
        #expect(run.outcomes == [.temporary(Reply(450, EnhancedStatus(4, 7, 1), "go away"))])
    }

    @Test func temporaryEHLOFailureFailsTheHost() {
        var script = PeerScript()
        script.ehlo = .reply("451 4.3.0 later\r\n")
        let run = drive(Transaction1(), script, .whole)
        #expect(run.lines == ["EHLO client.example", "QUIT"])
        #expect(run.result?.kind == .hostFailed(.hello(Reply(451, EnhancedStatus(4, 3, 0), "later"))))
    }

    @Test func helloWith8BitBodyAndNoExtensionsBounces() {
        var script = PeerScript()
        script.ehlo = .reply("502 no\r\n")
        let run = drive(Transaction1(bodyType: .eightBitMIME), script, .whole)
        #expect(run.lines == ["EHLO client.example", "HELO client.example", "QUIT"])
        #expect(run.outcomes.map(\.reply.effectiveStatus) == [EnhancedStatus(5, 6, 3)])
        // Our decision, not the server's: reports must not quote it as the peer's reply.
        #expect(run.result?.recipients.map(\.decidedLocally) == [true])
        let refused = drive(Transaction1(recipients: ["ok@x", "bad@x>"]), PeerScript(), .whole)
        #expect(refused.result?.recipients.map(\.decidedLocally) == [false, true])
    }

    // MARK: - Local refusals (SIZE O17, SMTPUTF8, 8BITMIME)

    @Test func tooBigForTheAnnouncedSizeIsRefusedBeforeMAIL() {
        var script = PeerScript()
        script.ehlo = PeerScript.ehlo("PIPELINING", "SIZE 1000")
        let run = drive(Transaction1(recipients: ["a@x", "b@x"], size: 2000), script, .whole)
        #expect(run.lines == ["EHLO client.example", "QUIT"])
        #expect(run.result?.kind == .completed)
        for outcome in run.outcomes {
            guard case .permanent(let reply) = outcome else {
                Issue.record("expected permanent, got \(outcome)")
                continue
            }
            #expect(reply.code == 552)
            #expect(reply.effectiveStatus == EnhancedStatus(5, 3, 4))
        }
        #expect(run.outcomes.count == 2)
    }

    @Test(arguments: ["SIZE 0", "SIZE", "SIZE nonsense"])
    func sizeWithoutLimitDoesNotRefuse(_ keyword: String) {
        var script = PeerScript()
        script.ehlo = PeerScript.ehlo(keyword)
        let run = drive(Transaction1(size: 50_000_000), script, .whole)
        #expect(run.lines.contains("MAIL FROM:<alice@client.example> SIZE=50000000"))
        #expect(run.outcomes == [.delivered(queued)])
    }

    @Test func remote552ToMAILIsPermanent() {
        var script = PeerScript()
        script.mail = .reply("552 5.3.4 message too big\r\n")
        script.rcpt = ["bob@mx.example": .reply("503 5.5.1 need MAIL\r\n")]
        script.data = .reply("503 5.5.1 need RCPT\r\n")
        let run = drive(Transaction1(), script, .whole)
        #expect(run.outcomes == [.permanent(Reply(552, EnhancedStatus(5, 3, 4), "message too big"))])
        #expect(run.lines.last == "QUIT")
    }

    @Test func missingSMTPUTF8Bounces567() {
        var script = PeerScript()
        script.ehlo = PeerScript.ehlo("8BITMIME", "PIPELINING")
        let run = drive(Transaction1(smtpUTF8: true), script, .whole)
        #expect(run.lines == ["EHLO client.example", "QUIT"])
        #expect(run.outcomes.map(\.reply.effectiveStatus) == [EnhancedStatus(5, 6, 7)])
    }

    @Test func missing8BITMIMEBounces563() {
        var script = PeerScript()
        script.ehlo = PeerScript.ehlo("PIPELINING")
        let run = drive(Transaction1(bodyType: .eightBitMIME), script, .whole)
        #expect(run.lines == ["EHLO client.example", "QUIT"])
        #expect(run.outcomes.map(\.reply.effectiveStatus) == [EnhancedStatus(5, 6, 3)])
    }

    /// RFC 6152 §3: with a 7-bit form at hand, a server without 8BITMIME gets it (no BODY= parameter).
    @Test func missing8BITMIMEWithAConversionSendsTheSevenBitBody() {
        var script = PeerScript()
        script.ehlo = PeerScript.ehlo("PIPELINING")
        let run = drive(Transaction1(bodyType: .eightBitMIME, sevenBit: .available), script, .whole)
        #expect(run.lines.contains("MAIL FROM:<alice@client.example>") && run.bodySent)
        #expect(run.outcomes == [.delivered(queued)])
        var session = Transaction1(bodyType: .eightBitMIME, sevenBit: .available).session()
        #expect(!session.sendsSevenBitBody)
        _ = session.start()
        _ = session.receive(Array("220 mx\r\n".utf8))
        _ = session.receive(Array("250 mx\r\n".utf8))
        #expect(session.sendsSevenBitBody)
        let refused = drive(
            Transaction1(bodyType: .eightBitMIME, sevenBit: .unavailable("not MIME")), script, .whole)
        #expect(refused.outcomes.first?.reply.lines.joined().hasSuffix("not MIME") == true)
    }

    @Test func unsafeAddressesNeverReachTheWire() {
        let transaction = Transaction1(recipients: ["evil@x>\r\nRSET", "ok@x", ""])
        let run = drive(transaction, PeerScript(), .whole)
        #expect(!run.writes.joined().contains("RSET"))
        #expect(
            run.outcomes.map(\.reply.effectiveStatus) == [
                EnhancedStatus(5, 1, 3), EnhancedStatus(2, 0, 0), EnhancedStatus(5, 1, 3),
            ])
        let badSender = drive(Transaction1(sender: "a@b>\r\nDATA"), PeerScript(), .whole)
        #expect(badSender.lines == ["EHLO client.example", "QUIT"])
        #expect(badSender.outcomes.map(\.reply.effectiveStatus) == [EnhancedStatus(5, 1, 7)])
    }

    // MARK: - MAIL, RCPT, DATA, end of data (O04–O08), PIPELINING on and off

    static let pipeliningModes: [Bool] = [true, false]

    static func script(pipelining: Bool) -> PeerScript {
        var script = PeerScript()
        script.ehlo = pipelining ? PeerScript.ehlo("PIPELINING", "8BITMIME") : PeerScript.ehlo("8BITMIME")
        return script
    }

    @Test(arguments: pipeliningModes, Chunking.all)
    func mailTemporaryFailureDefersAll(_ pipelining: Bool, _ feeding: Chunking) {
        var script = Self.script(pipelining: pipelining)
        script.mail = .reply("451 4.3.0 try later\r\n")
        script.rcpt = ["a@x": .reply("503 5.5.1 no MAIL\r\n"), "b@x": .reply("503 5.5.1 no MAIL\r\n")]
        script.data = .reply("503 5.5.1 no RCPT\r\n")
        let run = drive(Transaction1(recipients: ["a@x", "b@x"]), script, feeding)
        let reply = Reply(451, EnhancedStatus(4, 3, 0), "try later")
        #expect(run.outcomes == [.temporary(reply), .temporary(reply)])
        #expect(run.result?.kind == .completed)
        #expect(!run.bodySent)
        if !pipelining { #expect(run.lines == ["EHLO client.example", "MAIL FROM:<alice@client.example>", "QUIT"]) }
    }

    @Test(arguments: pipeliningModes, Chunking.all)
    func mailPermanentFailureBouncesAll(_ pipelining: Bool, _ feeding: Chunking) {
        var script = Self.script(pipelining: pipelining)
        script.mail = .reply("550 5.7.1 sender rejected\r\n")
        script.rcpt = ["a@x": .reply("503 5.5.1 no MAIL\r\n")]
        script.data = .reply("503 5.5.1 no RCPT\r\n")
        let run = drive(Transaction1(recipients: ["a@x"]), script, feeding)
        #expect(run.outcomes == [.permanent(Reply(550, EnhancedStatus(5, 7, 1), "sender rejected"))])
        #expect(run.lines.last == "QUIT")
        #expect(!run.bodySent)
    }

    @Test(arguments: pipeliningModes, Chunking.all)
    func mixedRecipientsO05(_ pipelining: Bool, _ feeding: Chunking) {
        var script = Self.script(pipelining: pipelining)
        script.rcpt = [
            "temp@x": .reply("450 4.2.0 greylisted\r\n"), "gone@x": .reply("550 5.1.1 no such user\r\n"),
            "full@x": .reply("552 5.5.3 too many recipients\r\n"),
        ]
        let run = drive(Transaction1(recipients: ["ok@x", "temp@x", "gone@x", "full@x"]), script, feeding)
        #expect(
            run.outcomes == [
                .delivered(queued), .temporary(Reply(450, EnhancedStatus(4, 2, 0), "greylisted")),
                .permanent(Reply(550, EnhancedStatus(5, 1, 1), "no such user")),
                // RFC 5321 §4.5.3.1.10: 552 to RCPT is temporary.
                .temporary(Reply(452, EnhancedStatus(4, 5, 3), "too many recipients")),
            ])
        #expect(run.bodySent)
        #expect(run.lines.filter { $0 == "DATA" }.count == 1)
    }

    @Test(arguments: Chunking.all)
    func noRecipientAcceptedWithoutPipeliningSkipsDATA(_ feeding: Chunking) {
        var script = Self.script(pipelining: false)
        script.rcpt = ["a@x": .reply("550 5.1.1 no\r\n"), "b@x": .reply("450 4.2.0 later\r\n")]
        let run = drive(Transaction1(recipients: ["a@x", "b@x"]), script, feeding)
        #expect(
            run.lines == [
                "EHLO client.example", "MAIL FROM:<alice@client.example>", "RCPT TO:<a@x>", "RCPT TO:<b@x>", "QUIT",
            ])
        #expect(
            run.outcomes == [
                .permanent(Reply(550, EnhancedStatus(5, 1, 1), "no")),
                .temporary(Reply(450, EnhancedStatus(4, 2, 0), "later")),
            ])
    }

    @Test(arguments: Chunking.all)
    func noRecipientAcceptedWithPipeliningAnd354SendsOnlyTheDot(_ feeding: Chunking) {
        var script = Self.script(pipelining: true)
        script.rcpt = ["a@x": .reply("550 5.1.1 no\r\n")]
        script.dot = .reply("554 5.5.1 no valid recipients\r\n")
        let run = drive(Transaction1(recipients: ["a@x"]), script, feeding)
        #expect(!run.bodySent)
        #expect(run.writes.suffix(2) == [".\r\n", "QUIT\r\n"])
        #expect(run.outcomes == [.permanent(Reply(550, EnhancedStatus(5, 1, 1), "no"))])
        #expect(run.result?.kind == .completed)
    }

    @Test(arguments: Chunking.all)
    func noRecipientAcceptedWithPipeliningAndDATARefused(_ feeding: Chunking) {
        var script = Self.script(pipelining: true)
        script.rcpt = ["a@x": .reply("550 5.1.1 no\r\n")]
        script.data = .reply("554 5.5.1 no valid recipients\r\n")
        let run = drive(Transaction1(recipients: ["a@x"]), script, feeding)
        #expect(run.writes.last == "QUIT\r\n")
        #expect(!run.writes.contains(".\r\n"))
        #expect(run.outcomes == [.permanent(Reply(550, EnhancedStatus(5, 1, 1), "no"))])
    }

    @Test(
        arguments: [
            (
                "451 4.3.0 local problem\r\n",
                RecipientOutcome.temporary(Reply(451, EnhancedStatus(4, 3, 0), "local problem"))
            ),
            ("554 5.6.0 no thanks\r\n", RecipientOutcome.permanent(Reply(554, EnhancedStatus(5, 6, 0), "no thanks"))),
        ], pipeliningModes)
    func dataRefusalsO07(_ sample: (String, RecipientOutcome), _ pipelining: Bool) {
        let (dataReply, expected) = sample
        var script = Self.script(pipelining: pipelining)
        script.data = .reply(dataReply)
        script.rcpt = ["gone@x": .reply("550 5.1.1 no\r\n")]
        let run = drive(Transaction1(recipients: ["a@x", "gone@x"]), script, .bytes)
        #expect(!run.bodySent)
        #expect(run.outcomes == [expected, .permanent(Reply(550, EnhancedStatus(5, 1, 1), "no"))])
        #expect(run.lines.last == "QUIT")
    }

    @Test(
        arguments: [
            ("250 2.0.0 ok\r\n", RecipientOutcome.delivered(Reply(250, EnhancedStatus(2, 0, 0), "ok"))),
            ("451 4.3.0 later\r\n", RecipientOutcome.temporary(Reply(451, EnhancedStatus(4, 3, 0), "later"))),
            ("552 5.3.4 too big\r\n", RecipientOutcome.permanent(Reply(552, EnhancedStatus(5, 3, 4), "too big"))),
            ("554 5.7.1 spam\r\n", RecipientOutcome.permanent(Reply(554, EnhancedStatus(5, 7, 1), "spam"))),
            ("250 queued\r\n", RecipientOutcome.delivered(Reply(250, nil, "queued"))),
        ], Chunking.all)
    func endOfDataRepliesO08(_ sample: (String, RecipientOutcome), _ feeding: Chunking) {
        let (dotReply, expected) = sample
        var script = PeerScript()
        script.dot = .reply(dotReply)
        let run = drive(Transaction1(recipients: ["a@x", "b@x"]), script, feeding)
        #expect(run.outcomes == [expected, expected])
        #expect(run.result?.kind == .completed)
        #expect(run.result?.possibleDuplicate == false)
    }

    // MARK: - Broken peers (O09–O13), duplicates

    @Test(arguments: Chunking.all)
    func closeAfterTheDotMayDuplicate(_ feeding: Chunking) {
        var script = PeerScript()
        script.dot = .close
        let run = drive(Transaction1(), script, feeding)
        #expect(run.result?.possibleDuplicate == true)
        #expect(run.result?.kind == .hostFailed(.connectionLost(.dataDone)))
        #expect(run.outcomes.map(\.reply.effectiveStatus) == [EnhancedStatus(4, 4, 2)])
        #expect(run.closed)
        #expect(run.writes.last != "QUIT\r\n")
    }

    @Test func timeoutAfterTheDotMayDuplicate() {
        var script = PeerScript()
        script.dot = .silence
        let run = drive(Transaction1(), script, .whole)
        #expect(run.result?.possibleDuplicate == true)
        #expect(run.result?.kind == .hostFailed(.timedOut(.dataDone)))
    }

    @Test func garbageAfterTheDotMayDuplicate() {
        var script = PeerScript()
        script.dot = .reply("2x0 ok\r\n")
        let run = drive(Transaction1(), script, .whole)
        #expect(run.result?.possibleDuplicate == true)
        #expect(run.outcomes.map(\.reply.effectiveStatus) == [EnhancedStatus(4, 5, 0)])
    }

    @Test func closeWhileSendingTheBodyIsNoDuplicate() {
        var session = Transaction1().session()
        _ = session.start()
        _ = session.receive(Array("220 hi\r\n".utf8))
        _ = session.receive(Array("250-mx\r\n250 PIPELINING\r\n".utf8))
        let actions = session.receive(Array("250 ok\r\n250 ok\r\n354 go\r\n".utf8))
        #expect(actions == [.arm(timeout: .rcpt), .arm(timeout: .dataInit), .arm(timeout: .dataBlock), .sendBody])
        let end = session.connectionClosed()
        guard case .finished(let result)? = end.last else {
            Issue.record("expected finished, got \(end)")
            return
        }
        #expect(end.first == .close)
        #expect(result.possibleDuplicate == false)
        #expect(result.kind == .hostFailed(.connectionLost(.dataBlock)))
        #expect(result.recipients.map(\.outcome.reply.effectiveStatus) == [EnhancedStatus(4, 4, 2)])
    }

    @Test func bodyBlockTimeoutIsNoDuplicate() {
        var session = Transaction1().session()
        _ = session.start()
        _ = session.receive(Array("220 hi\r\n".utf8))
        _ = session.receive(Array("250 mx\r\n".utf8))
        _ = session.receive(Array("250 ok\r\n".utf8))
        _ = session.receive(Array("250 ok\r\n".utf8))
        #expect(session.receive(Array("354 go\r\n".utf8)) == [.arm(timeout: .dataBlock), .sendBody])
        let end = session.timedOut()
        guard case .finished(let result)? = end.last else {
            Issue.record("expected finished, got \(end)")
            return
        }
        #expect(result.kind == .hostFailed(.timedOut(.dataBlock)))
        #expect(result.possibleDuplicate == false)
    }

    struct Broken: Sendable, CustomTestStringConvertible {
        var name: String
        var script: PeerScript
        var kind: ClientResult.Kind
        var status: EnhancedStatus
        var testDescription: String { name }
    }

    static let broken: [Broken] = {
        var cases: [Broken] = []
        var script = PeerScript()
        script.greeting = .silence
        cases.append(
            Broken(
                name: "no greeting (O11)", script: script, kind: .hostFailed(.timedOut(.greeting)),
                status: EnhancedStatus(4, 4, 2)))
        script = PeerScript()
        script.greeting = .close
        cases.append(
            Broken(
                name: "close before greeting (O01-like)", script: script,
                kind: .hostFailed(.connectionLost(.greeting)), status: EnhancedStatus(4, 4, 2)))
        script = PeerScript()
        script.rcpt = ["bob@mx.example": .silence]
        cases.append(
            Broken(
                name: "stall after MAIL (O11)", script: script, kind: .hostFailed(.timedOut(.rcpt)),
                status: EnhancedStatus(4, 4, 2)))
        script = PeerScript()
        script.ehlo = .reply("2x0 ok\r\n")
        cases.append(
            Broken(
                name: "garbage reply (O13)", script: script,
                kind: .hostFailed(.protocolError(.ehlo, "malformed reply line")),
                status: EnhancedStatus(4, 5, 0)))
        script = PeerScript()
        script.mail = .reply("250-ok\r\n251 ok\r\n")
        cases.append(
            Broken(
                name: "mixed codes (O13)", script: script,
                kind: .hostFailed(.protocolError(.mail, "multiline reply mixes codes 250 and 251")),
                status: EnhancedStatus(4, 5, 0)))
        script = PeerScript()
        script.ehlo = .reply("250 " + String(repeating: "x", count: 596) + "\r\n")
        cases.append(
            Broken(
                name: "600-octet line (O13)", script: script,
                kind: .hostFailed(.protocolError(.ehlo, "reply line longer than 512 octets")),
                status: EnhancedStatus(4, 5, 0)))
        script = PeerScript()
        script.ehlo = .replyThenClose("250")
        cases.append(
            Broken(
                name: "250 without CRLF, then close (O13)", script: script,
                kind: .hostFailed(.connectionLost(.ehlo)), status: EnhancedStatus(4, 4, 2)))
        script = PeerScript()
        script.data = .reply("250 ok\r\n")
        cases.append(
            Broken(
                name: "DATA answered 250", script: script,
                kind: .hostFailed(.protocolError(.dataInit, "DATA answered 250")),
                status: EnhancedStatus(4, 5, 0)))
        script = PeerScript()
        script.greeting = .reply("354 what\r\n")
        cases.append(
            Broken(
                name: "greeting 354", script: script,
                kind: .hostFailed(.protocolError(.greeting, "greeting 354")),
                status: EnhancedStatus(4, 5, 0)))
        return cases
    }()

    @Test(arguments: broken, Chunking.all)
    func brokenPeersDefer(_ sample: Broken, _ feeding: Chunking) {
        let run = drive(Transaction1(), sample.script, feeding)
        #expect(run.result?.kind == sample.kind)
        #expect(run.outcomes.map(\.reply.effectiveStatus) == [sample.status])
        #expect(run.outcomes.allSatisfy { if case .temporary = $0 { true } else { false } })
        #expect(run.result?.possibleDuplicate == false)
        #expect(run.closed)
    }

    @Test(arguments: Chunking.all)
    func serviceClosing421MidPipelineDefersTheRest(_ feeding: Chunking) {
        var script = PeerScript()
        script.rcpt = ["a@x": .reply("550 5.1.1 no\r\n"), "b@x": .reply("421 4.3.2 shutting down\r\n")]
        let run = drive(Transaction1(recipients: ["a@x", "b@x", "c@x"]), script, feeding)
        let closing = Reply(421, EnhancedStatus(4, 3, 2), "shutting down")
        #expect(run.result?.kind == .hostFailed(.closing(closing)))
        #expect(
            run.outcomes == [
                .permanent(Reply(550, EnhancedStatus(5, 1, 1), "no")), .temporary(closing), .temporary(closing),
            ])
        #expect(run.writes.last != "QUIT\r\n")
        #expect(!run.bodySent)
    }

    @Test func quitAnswerDoesNotMatter() {
        for quit in [PeerStep.reply("500 what\r\n"), .close, .silence, .reply("2x0\r\n")] {
            var script = PeerScript()
            script.quit = quit
            let run = drive(Transaction1(), script, .whole)
            #expect(run.result?.kind == .completed)
            #expect(run.outcomes == [.delivered(queued)])
        }
    }

    // MARK: - Reply injection

    @Test func replyBundledWithTheGreetingIsInjection() {
        var session = Transaction1().session()
        _ = session.start()
        let actions = session.receive(Array("220 hi\r\n250 injected\r\n".utf8))
        guard case .finished(let result)? = actions.last else {
            Issue.record("expected finished, got \(actions)")
            return
        }
        #expect(actions.contains(.close))
        guard case .hostFailed(.protocolError(.ehlo, _)) = result.kind else {
            Issue.record("expected a protocol error, got \(result.kind)")
            return
        }
    }

    @Test func partialReplyBundledWithTheGreetingIsInjection() {
        var session = Transaction1().session()
        _ = session.start()
        let actions = session.receive(Array("220 hi\r\n25".utf8))
        guard case .finished(let result)? = actions.last else {
            Issue.record("expected finished, got \(actions)")
            return
        }
        guard case .hostFailed(.protocolError) = result.kind else {
            Issue.record("expected a protocol error, got \(result.kind)")
            return
        }
    }

    @Test func bytesAfter354AreInjection() {
        var session = Transaction1().session()
        _ = session.start()
        _ = session.receive(Array("220 hi\r\n".utf8))
        _ = session.receive(Array("250-mx\r\n250 PIPELINING\r\n".utf8))
        let actions = session.receive(Array("250 ok\r\n250 ok\r\n354 go\r\n250 2.0.0 fake queued\r\n".utf8))
        #expect(!actions.contains(.sendBody))
        guard case .finished(let result)? = actions.last else {
            Issue.record("expected finished, got \(actions)")
            return
        }
        #expect(result.recipients.map(\.outcome.reply.effectiveStatus) == [EnhancedStatus(4, 5, 0)])
        #expect(result.possibleDuplicate == false)
    }

    @Test func replyDuringTheBodyIsInjection() {
        var session = Transaction1().session()
        _ = session.start()
        _ = session.receive(Array("220 hi\r\n".utf8))
        _ = session.receive(Array("250-mx\r\n250 PIPELINING\r\n".utf8))
        _ = session.receive(Array("250 ok\r\n250 ok\r\n354 go\r\n".utf8))
        let early = session.receive(Array("25".utf8))
        guard case .finished(let result)? = early.last else {
            Issue.record("expected finished, got \(early)")
            return
        }
        #expect(result.kind == .hostFailed(.protocolError(.dataBlock, "reply bytes before the command they answer")))
        #expect(session.bodySent() == [])
    }

    @Test func moreRepliesThanCommandsIsInjection() {
        var session = Transaction1().session()
        _ = session.start()
        _ = session.receive(Array("220 hi\r\n".utf8))
        _ = session.receive(Array("250 mx\r\n".utf8))
        // Only MAIL is outstanding (no PIPELINING): a reply for the RCPT not yet sent is injected.
        let actions = session.receive(Array("250 ok\r\n250 ok\r\n".utf8))
        #expect(!actions.contains { if case .send = $0 { true } else { false } })
        guard case .finished(let result)? = actions.last else {
            Issue.record("expected finished, got \(actions)")
            return
        }
        guard case .hostFailed(.protocolError) = result.kind else {
            Issue.record("expected a protocol error, got \(result.kind)")
            return
        }
    }

    @Test func eventsAfterFinishingDoNothing() {
        var session = Transaction1().session()
        _ = session.start()
        _ = session.connectionClosed()
        #expect(session.receive(Array("220 hi\r\n".utf8)) == [])
        #expect(session.timedOut() == [])
        #expect(session.connectionClosed() == [])
        #expect(session.bodySent() == [])
        #expect(session.abort("x") == [])
        #expect(session.start() == [])
    }

    @Test func abortDuringTheBodyKeepsEveryoneTemporary() {
        var session = Transaction1(recipients: ["a@x", "b@x"]).session()
        _ = session.start()
        _ = session.receive(Array("220 hi\r\n".utf8))
        _ = session.receive(Array("250-mx\r\n250 PIPELINING\r\n".utf8))
        _ = session.receive(Array("250 ok\r\n250 ok\r\n550 no\r\n354 go\r\n".utf8))
        let actions = session.abort("read: Input/output error")
        guard case .finished(let result)? = actions.last else {
            Issue.record("expected finished, got \(actions)")
            return
        }
        #expect(actions.first == .close)
        #expect(result.kind == .aborted("read: Input/output error"))
        #expect(
            result.recipients.map(\.outcome.reply.effectiveStatus) == [
                EnhancedStatus(4, 3, 0), EnhancedStatus(5, 0, 0),
            ])
    }
}

@Suite struct ServerCapabilitiesTests {
    @Test func parsesKeywordsCaseInsensitively() {
        let capabilities = ServerCapabilities(ehloLines: [
            "mx.example greets you", "pipelining", "Size 2048", "8bitmime", "SMTPUTF8", "STARTTLS",
            "ENHANCEDSTATUSCODES", "AUTH PLAIN LOGIN",
        ])
        #expect(capabilities.pipelining)
        #expect(capabilities.size == 2048)
        #expect(capabilities.eightBitMIME)
        #expect(capabilities.smtpUTF8)
        #expect(capabilities.startTLS)
        #expect(capabilities.enhancedStatusCodes)
        #expect(capabilities.keywords.last == "AUTH PLAIN LOGIN")
    }

    @Test func greetingLineIsNotAKeyword() {
        #expect(ServerCapabilities(ehloLines: ["PIPELINING"]) == ServerCapabilities())
    }

    /// Keywords are ASCII: "ſTARTTLS" (long s) is not STARTTLS, whatever Unicode case mapping says.
    @Test func keywordsAreMatchedAsASCII() {
        let capabilities = ServerCapabilities(ehloLines: [
            "mx.example", "\u{017F}TARTTLS", "p\u{0131}pel\u{0131}n\u{0131}ng",
        ])
        #expect(!capabilities.startTLS)
        #expect(!capabilities.pipelining)
        #expect(ServerCapabilities(ehloLines: ["mx.example", "starttls", "Pipelining"]).startTLS)
    }
}

@Suite struct OutboundBodyTests {
    @Test(arguments: [
        ("", "."),
        ("abc\r\n", "abc\r\n."),
        ("abc", "abc\r\n."),
        ("a\nb\n", "a\r\nb\r\n."),
        ("a\rb\r", "a\r\nb\r\n."),
        ("a\r\r\nb", "a\r\n\r\nb\r\n."),
        (".hidden\r\n", "..hidden\r\n."),
        ("x\r\n.\r\ny\r\n", "x\r\n..\r\ny\r\n."),
        ("x\n.\nMAIL FROM:<a@b>\n", "x\r\n..\r\nMAIL FROM:<a@b>\r\n."),
        ("no dot.\r\n.. two\r\n", "no dot.\r\n... two\r\n."),
        ("\r\n.\r", "\r\n..\r\n."),
    ])
    func encodes(_ stored: String, _ wire: String) {
        let expected = Array((wire + "\r\n").utf8)
        #expect(OutboundBody.encode(Array(stored.utf8)) == expected)
        for feeding in Chunking.all {
            var body = OutboundBody()
            var out: [UInt8] = []
            for chunk in feeding.split(Array(stored.utf8), salt: 7) { out += body.encode(chunk) }
            out += body.finish()
            #expect(out == expected, "\(feeding.description)")
            #expect(body.finish() == [])
        }
    }

    @Test func outputHasOnlyCRLFLineEnds() {
        var generator = SeededGenerator(state: 42)
        let alphabet: [UInt8] = [13, 10, 46, 65, 32]
        for _ in 0..<200 {
            let stored = (0..<64).map { _ in alphabet[Int(generator.next() % UInt64(alphabet.count))] }
            let wire = OutboundBody.encode(stored)
            for (index, byte) in wire.enumerated() {
                if byte == 13 { #expect(index + 1 < wire.count && wire[index + 1] == 10) }
                if byte == 10 { #expect(index > 0 && wire[index - 1] == 13) }
            }
            #expect(wire.suffix(5) == [13, 10, 46, 13, 10])
            // Exactly one end-of-data sequence, at the end (no smuggled second message).
            let terminator: [UInt8] = [13, 10, 46, 13, 10]
            let hits = (0...(wire.count - 5)).filter { Array(wire[$0..<($0 + 5)]) == terminator }
            #expect(hits == [wire.count - 5] || (wire.count == 3))
        }
    }
}
