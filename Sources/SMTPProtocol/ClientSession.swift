// The outbound SMTP client as a pure state machine: one transaction (one sender, its recipients, one message)
// to one server. Bytes from the server go in (`receive`), actions come out (`ClientAction`); the driver in
// Delivery performs them (writes, timers, streaming the body, closing) and reports back (`bodySent`,
// `timedOut`, `connectionClosed`). No I/O, no clock, no Foundation here, so every dialog is a table test.
//
// Flow (RFC 5321 §3.3, §4.3.2, §5.1; RFC 3207 for STARTTLS):
//   greeting 220 → EHLO (5xx → HELO) → [STARTTLS → 220 → handshake (driver) → EHLO again] → local checks (SIZE, SMTPUTF8, 8BITMIME) → MAIL, RCPT…, DATA (one write
//   with PIPELINING, else one by one) → 354 → body → final reply → QUIT.
// Connection reuse: with `keepOpen` a transaction that ended in good order does not QUIT; it ends (after RSET when
// the server may still hold the transaction) with the connection idle, for the driver to park. A session started
// with a `Resumption` runs on such a parked connection: no greeting, EHLO or STARTTLS, straight to MAIL.
// Every reply is matched to a command by count, never by text. A reply that arrives before the command it
// would answer was sent (beyond what PIPELINING allows) is a protocol error: we close (reply injection).

/// How long to wait at each stage; RFC 5321 §4.5.3.2 minimums by default. Tests use short ones.
public struct ClientTimeouts: Hashable, Sendable {
    public var greeting: Duration
    /// EHLO, and HELO after a refused EHLO.
    public var ehlo: Duration
    public var mail: Duration
    public var rcpt: Duration
    /// DATA → 354.
    public var dataInit: Duration
    /// Each block of the body accepted by the kernel.
    public var dataBlock: Duration
    /// Final `.` → reply. Long on purpose: giving up here may deliver the message twice (RFC 5321 §4.5.3.2.6).
    public var dataDone: Duration
    public var quit: Duration
    /// RSET before a connection is parked (no RFC minimum; 20 s like Postfix's `smtp_rset_timeout`).
    public var rset: Duration

    public init(
        greeting: Duration = .seconds(300), ehlo: Duration = .seconds(300), mail: Duration = .seconds(300),
        rcpt: Duration = .seconds(300), dataInit: Duration = .seconds(120), dataBlock: Duration = .seconds(180),
        dataDone: Duration = .seconds(600), quit: Duration = .seconds(20), rset: Duration = .seconds(20)
    ) {
        self.rset = rset
        self.greeting = greeting
        self.ehlo = ehlo
        self.mail = mail
        self.rcpt = rcpt
        self.dataInit = dataInit
        self.dataBlock = dataBlock
        self.dataDone = dataDone
        self.quit = quit
    }

    /// Every stage set to `duration` (tests).
    public static func all(_ duration: Duration) -> ClientTimeouts {
        ClientTimeouts(
            greeting: duration, ehlo: duration, mail: duration, rcpt: duration, dataInit: duration,
            dataBlock: duration, dataDone: duration, quit: duration, rset: duration)
    }

    public subscript(stage: ClientStage) -> Duration {
        switch stage {
        case .greeting: return greeting
        case .ehlo: return ehlo
        case .mail: return mail
        case .rcpt: return rcpt
        case .dataInit: return dataInit
        case .dataBlock: return dataBlock
        case .dataDone: return dataDone
        case .quit: return quit
        case .rset: return rset
        }
    }
}

/// What the client is waiting for; each stage has its own deadline (`ClientTimeouts`).
public enum ClientStage: String, Hashable, Sendable {
    case greeting, ehlo, mail, rcpt, dataInit = "data-init", dataBlock = "data-block", dataDone = "data-done", quit
    /// RSET after a transaction, before the connection is parked for the next one.
    case rset
}

/// What the driver must do, in order.
public enum ClientAction: Hashable, Sendable {
    /// Write these bytes (one or more complete command lines).
    case send([UInt8])
    /// Stream the message: `OutboundBody`-encoded file content ending in `.\r\n`, re-arming `.dataBlock`
    /// after each block the kernel accepts; then call `bodySent()`.
    case sendBody
    /// Replace any running deadline by one for this stage; when it fires, call `timedOut()`.
    case arm(timeout: ClientStage)
    /// Close the connection (drop unsent bytes; nothing useful is pending when the session closes).
    case close
    /// The attempt is over; always the last action. Cancel the deadline.
    case finished(ClientResult)
    /// The server answered 220 to STARTTLS: run the TLS handshake on this connection, then call
    /// `tlsEstablished()` or `tlsFailed(_:)`. Reply bytes that came after the 220 were discarded (the client side
    /// of CVE-2011-0411): nothing sent in plaintext is read as a reply inside TLS.
    case startTLS
}

/// Whether the caller holds a 7-bit form of an 8-bit message for a server without 8BITMIME (RFC 6152 §3).
public enum SevenBitOption: Hashable, Sendable {
    /// Send the conversion: the driver swaps the body when `sendsSevenBitBody` is set.
    case available
    /// Refuse with 5.6.3; the text says why no conversion exists (nil: none was attempted).
    case unavailable(String?)
}

/// Outbound STARTTLS (RFC 3207; opportunistic as RFC 7435 describes it).
public enum ClientTLSPolicy: String, Hashable, Sendable {
    /// Never STARTTLS.
    case none
    /// STARTTLS when offered, no certificate check (RFC 7435); a refused STARTTLS continues in plaintext on the
    /// same connection; a failed handshake is the driver's to retry once without TLS.
    case may
    /// STARTTLS or nothing: not offered, refused or failed is a temporary failure for this address (4.7.x).
    case encrypt
}

/// What the server announced in its EHLO reply (RFC 5321 §4.1.1.1). All false after a HELO fallback.
public struct ServerCapabilities: Hashable, Sendable {
    public var pipelining = false
    /// The SIZE limit in octets (RFC 1870): nil if SIZE was not announced, 0 if announced without a limit.
    public var size: Int?
    public var eightBitMIME = false
    public var smtpUTF8 = false
    public var startTLS = false
    public var enhancedStatusCodes = false
    /// RFC 3461: the server takes NOTIFY/ORCPT/RET/ENVID and sends its own reports.
    public var dsn = false
    /// Every keyword line, upper-cased keyword first, parameters as sent (for logs).
    public var keywords: [String] = []

    public init() {}

    /// Parses the lines of a 250 EHLO reply; the first line is the server's name and greeting.
    public init(ehloLines lines: [String]) {
        for line in lines.dropFirst() {
            let words = line.split(separator: " ", omittingEmptySubsequences: true)
            guard let first = words.first else { continue }
            let keyword = asciiUppercased(first)
            keywords.append(([keyword] + words.dropFirst().map(String.init)).joined(separator: " "))
            switch keyword {
            case "PIPELINING": pipelining = true
            case "8BITMIME": eightBitMIME = true
            case "SMTPUTF8": smtpUTF8 = true
            case "STARTTLS": startTLS = true
            case "ENHANCEDSTATUSCODES": enhancedStatusCodes = true
            case "DSN": dsn = true
            case "SIZE":
                // A malformed limit counts as "no limit announced": the server will still enforce its own.
                if words.count >= 2, let limit = Int(words[1]), limit >= 0 { size = limit } else { size = 0 }
            default: break
            }
        }
    }
}

/// The fate of one recipient in this attempt (qmail's three values). The reply is the server's, or one we
/// made up with the matching class (connection lost, local refusal); `effectiveStatus` gives its RFC 3463 code.
public enum RecipientOutcome: Hashable, Sendable {
    case delivered(Reply)
    case temporary(Reply)
    case permanent(Reply)

    public var reply: Reply {
        switch self {
        case .delivered(let reply), .temporary(let reply), .permanent(let reply): return reply
        }
    }
}

/// Why a session ended before the transaction could run to its end: "this host, not this message"
/// (RFC 5321 §5.1: try the next address) — the caller tries the next address for the recipients still temporary.
public enum HostFailure: Hashable, Sendable, CustomStringConvertible {
    /// 4xx/5xx greeting.
    case greeting(Reply)
    /// EHLO 4xx, or HELO (after EHLO 5xx) refused.
    case hello(Reply)
    /// The server sent 421: it is closing the channel.
    case closing(Reply)
    /// The connection closed while we waited at this stage.
    case connectionLost(ClientStage)
    /// The deadline of this stage passed.
    case timedOut(ClientStage)
    /// The server broke the protocol at this stage (bad reply, reply before command).
    case protocolError(ClientStage, String)
    /// TLS required (`smtp_tls = encrypt`) and not offered, refused or failed; or the handshake failed. The
    /// reply is the temporary one recorded for the recipients (4.7.0 / 4.7.5).
    case tls(Reply)

    public var description: String {
        switch self {
        case .greeting(let reply): return "greeting refused: \(ClientSession.summary(reply))"
        case .hello(let reply): return "EHLO/HELO refused: \(ClientSession.summary(reply))"
        case .closing(let reply): return "server closing: \(ClientSession.summary(reply))"
        case .connectionLost(let stage): return "connection lost waiting for \(stage.rawValue)"
        case .timedOut(let stage): return "timeout waiting for \(stage.rawValue)"
        case .protocolError(let stage, let why): return "protocol error at \(stage.rawValue): \(why)"
        case .tls(let reply): return reply.lines.joined(separator: " ")
        }
    }
}

/// The outcome of one session.
public struct ClientResult: Hashable, Sendable {
    public enum Kind: Hashable, Sendable {
        /// The transaction ran to its end (or needed no DATA, or was refused locally before MAIL).
        case completed
        /// The session ended early for a reason tied to the host; see `HostFailure`.
        case hostFailed(HostFailure)
        /// The driver gave up for a local reason (the message file could not be read); nothing was delivered.
        case aborted(String)
    }

    public struct Recipient: Hashable, Sendable {
        public var address: String
        public var outcome: RecipientOutcome
        /// The refusal is ours, made before MAIL from what the server offers (8BITMIME, SMTPUTF8, SIZE) or from
        /// an unsafe address: the server never saw the recipient, so a report must not quote it as the server's.
        public var decidedLocally: Bool

        public init(address: String, outcome: RecipientOutcome, decidedLocally: Bool = false) {
            self.address = address
            self.outcome = outcome
            self.decidedLocally = decidedLocally
        }
    }

    public var kind: Kind
    /// One entry per recipient, in the order given to the session.
    public var recipients: [Recipient]
    /// Nil until an EHLO reply was parsed (or empty after a HELO fallback).
    public var capabilities: ServerCapabilities?
    /// The text of the 220 greeting (lines joined by a space), nil if none arrived.
    public var greeting: String?
    /// True when the body and its final `.` were sent but no valid final reply came: the server may have taken
    /// the message, so a retry may deliver it twice; the caller logs "may be delivered twice" (RFC 5321
    /// §4.5.3.2.6, Postfix `smtp_data_done_timeout`).
    public var possibleDuplicate: Bool
    /// The session ended in good order without QUIT (`keepOpen`): the connection is idle and may be parked for the
    /// next transaction. False means the session closed it (the `.close` action came first).
    public var keptOpen = false
    /// The session ran on a parked connection (`Resumption`).
    public var reused = false
    /// Replies read in this session other than a 421. A reused connection that failed before any such reply was
    /// already dead when it was taken from the pool: nothing of this transaction reached the server.
    public var repliesRead = 0

    public init(
        kind: Kind, recipients: [Recipient], capabilities: ServerCapabilities?, greeting: String?,
        possibleDuplicate: Bool
    ) {
        self.kind = kind
        self.recipients = recipients
        self.capabilities = capabilities
        self.greeting = greeting
        self.possibleDuplicate = possibleDuplicate
    }
}

/// One outbound SMTP transaction as a value type; see the overview at the top of this file.
///
/// Driver contract: call `start()` once connected, then `receive(_:)` for every chunk read, `bodySent()` when
/// the whole body including `.\r\n` is in the kernel, `timedOut()` when the armed deadline fires,
/// `connectionClosed()` on end of stream or a socket error, `abort(_:)` for a local failure. Perform the
/// returned actions in order. After `.finished` every call returns no actions.
public struct ClientSession: Sendable {
    private enum Command: Hashable, Sendable {
        case greeting, ehlo, helo, starttls, mail, rcpt(Int), data, dot, quit, rset

        var stage: ClientStage {
            switch self {
            case .greeting: return .greeting
            case .ehlo, .helo, .starttls: return .ehlo
            case .mail: return .mail
            case .rcpt: return .rcpt
            case .data: return .dataInit
            case .dot: return .dataDone
            case .quit: return .quit
            case .rset: return .rset
            }
        }

        var faultStage: ClientFaultStage? {
            switch self {
            case .greeting: return .banner
            case .ehlo, .helo: return .ehlo
            case .starttls: return .starttls
            case .mail: return .mail
            case .rcpt: return .rcpt
            case .data: return .data
            case .dot: return .dataEnd
            case .quit, .rset: return nil
            }
        }
    }

    private enum Phase: Hashable, Sendable {
        case idle
        /// Waiting for the replies in `awaited`.
        case dialog
        /// The driver is streaming the body; no reply may arrive now.
        case body
        /// QUIT sent; the result is fixed, any reply or close ends the session.
        case quitting
        /// STARTTLS answered 220: the driver runs the handshake.
        case handshake
        /// `keepOpen`: RSET sent after the transaction; a 2xx leaves the connection idle for the next one.
        case resetting
        case done
    }

    /// What a session on a parked connection takes over from the session that opened it: the server greeted us and
    /// answered EHLO (after STARTTLS when `tlsActive`); none of it is repeated (RFC 5321 §4.1.4: after a finished
    /// transaction or RSET the server is ready for the next MAIL with the same capabilities).
    public struct Resumption: Hashable, Sendable {
        public var capabilities: ServerCapabilities
        public var tlsActive: Bool
        public var greeting: String?

        public init(capabilities: ServerCapabilities, tlsActive: Bool, greeting: String?) {
            self.capabilities = capabilities
            self.tlsActive = tlsActive
            self.greeting = greeting
        }
    }

    private let heloName: String
    private let sender: String
    private let recipients: [String]
    private let messageSize: Int
    private let bodyType: BodyType?
    private let needsSMTPUTF8: Bool
    private let tlsPolicy: ClientTLSPolicy
    /// Sent only when the server offers DSN; otherwise the caller sends the notices the sender asked for.
    private let dsn: OutboundDSN?
    private let sevenBit: SevenBitOption
    /// The server lacks 8BITMIME and the 7-bit conversion goes out instead of the stored body.
    public private(set) var sendsSevenBitBody = false
    /// The handshake after STARTTLS completed; never STARTTLS twice.
    private var tlsActive = false
    /// Set: this session runs on a parked connection and starts at MAIL.
    private let resuming: Resumption?
    /// The driver can park the connection: a transaction that ends in good order leaves it open instead of QUIT.
    private let keepOpen: Bool
    /// The end of data was answered: the server has closed the transaction itself (RFC 5321 §4.1.1.4).
    private var dotReplied = false
    private var repliesRead = 0

    private var phase = Phase.idle
    private var parser = ReplyParser()
    /// Commands sent whose replies have not arrived, oldest first (RFC 2920: matched by count).
    private var awaited: [Command] = []
    private var outcomes: [RecipientOutcome?]
    /// Recipients refused by our own checks before MAIL.
    private var refusedLocally: Set<Int> = []
    private var accepted: [Bool]
    private var mailAccepted = false
    /// The DATA was answered 354 with no recipient accepted: only `.` was sent, its reply is ignored.
    private var dotOnly = false
    /// The body and its `.` went out and no valid final reply has been read yet (the duplicate window).
    private var awaitingFinalReply = false
    /// The command whose reply is being handled (for the stage named in a protocol error).
    private var answering: Command?
    private var capabilities: ServerCapabilities?
    private var greetingText: String?
    private var possibleDuplicate = false
    private var endKind: ClientResult.Kind = .completed
    /// Lab fault rules (ClientFault.swift); nil when none are configured.
    public var faultHook: ClientFaultHook?

    /// - Parameters:
    ///   - heloName: our name for EHLO/HELO (a domain or address literal).
    ///   - sender: the reverse-path without brackets; "" is the null sender `<>`.
    ///   - recipients: forward-paths without brackets, already validated and A-labelled as the server needs.
    ///   - messageSize: the stored message size in octets (CRLF counted), sent as `SIZE=`.
    ///   - bodyType: the `BODY=` value the message was received with; nil sends none.
    ///   - needsSMTPUTF8: the envelope or headers need UTF-8 (RFC 6531).
    ///   - tlsPolicy: whether to STARTTLS (`smtp_tls`).
    ///   - dsn: the sender's DSN request, passed on when the server offers DSN.
    ///   - resuming: set when the connection was parked by an earlier session: start at MAIL.
    ///   - keepOpen: leave the connection idle after a transaction that ended in good order (no QUIT).
    public init(
        heloName: String, sender: String, recipients: [String], messageSize: Int, bodyType: BodyType?,
        needsSMTPUTF8: Bool, tlsPolicy: ClientTLSPolicy = .none, dsn: OutboundDSN? = nil,
        sevenBit: SevenBitOption = .unavailable(nil), resuming: Resumption? = nil, keepOpen: Bool = false
    ) {
        self.resuming = resuming
        self.keepOpen = keepOpen
        self.dsn = dsn
        self.sevenBit = sevenBit
        self.tlsPolicy = tlsPolicy
        self.heloName = heloName
        self.sender = sender
        self.recipients = recipients
        self.messageSize = messageSize
        self.bodyType = bodyType
        self.needsSMTPUTF8 = needsSMTPUTF8
        outcomes = Array(repeating: nil, count: recipients.count)
        accepted = Array(repeating: false, count: recipients.count)
    }

    // MARK: - Driver events

    /// The connection is up: wait for the greeting; on a parked connection, go straight to MAIL.
    public mutating func start() -> [ClientAction] {
        guard phase == .idle else { return [] }
        phase = .dialog
        if let resuming {
            capabilities = resuming.capabilities
            tlsActive = resuming.tlsActive
            greetingText = resuming.greeting
            return startTransaction(resuming.capabilities)
        }
        awaited = [.greeting]
        return [.arm(timeout: .greeting)]
    }

    /// Bytes from the server.
    public mutating func receive(_ bytes: some Sequence<UInt8>) -> [ClientAction] {
        switch phase {
        case .done, .idle, .handshake: return []
        case .quitting:
            // Whatever the answer to QUIT is (221, garbage, more), the result is fixed.
            return finish()
        case .resetting:
            return rsetAnswered(bytes)
        case .dialog, .body: break
        }
        parser.append(bytes)
        // Bytes of this chunk arrived before anything we send while handling it, so they may answer only
        // the commands already outstanding now.
        var answerable = awaited.count
        var actions: [ClientAction] = []
        var sentSomething = false
        while phase == .dialog {
            let reply: Reply?
            do throws(ReplyParseError) {
                reply = try parser.nextReply()
            } catch {
                return Self.withoutOutput(actions) + protocolError(error.description)
            }
            guard let reply else { break }
            guard answerable > 0 else {
                return Self.withoutOutput(actions) + protocolError("reply \(reply.code) before the command it answers")
            }
            answerable -= 1
            let step = handle(reply)
            if step.contains(where: { if case .send = $0 { true } else { $0 == .sendBody } }) { sentSomething = true }
            actions += step
        }
        if phase == .quitting, sentSomething, parser.hasBufferedInput {
            // The rest of the chunk can only be a premature answer to QUIT: harmless, the result is fixed.
            return actions
        }
        if phase == .dialog || phase == .body, parser.hasBufferedInput, sentSomething || awaited.isEmpty {
            return Self.withoutOutput(actions) + protocolError("reply bytes before the command they answer")
        }
        return actions
    }

    /// On a protocol error found later in the same chunk, commands decided on earlier replies are not sent:
    /// the session is closing, and the earlier replies may have been part of the same forgery.
    private static func withoutOutput(_ actions: [ClientAction]) -> [ClientAction] {
        actions.filter {
            switch $0 {
            case .send, .sendBody, .arm, .startTLS: return false
            case .close, .finished: return true
            }
        }
    }

    /// The body and its final `.\r\n` are in the kernel: wait for the final reply.
    public mutating func bodySent() -> [ClientAction] {
        guard phase == .body else { return [] }
        phase = .dialog
        awaited = [.dot]
        awaitingFinalReply = true
        if parser.hasBufferedInput {
            return protocolError("reply bytes while the body was being sent")
        }
        return [.arm(timeout: .dataDone)]
    }

    /// The armed deadline passed.
    public mutating func timedOut() -> [ClientAction] {
        switch phase {
        case .idle, .done: return []
        case .quitting, .resetting: return finish()
        case .handshake: return tlsFailed("timeout during the TLS handshake")
        case .body: return fail(.timedOut(.dataBlock), status: EnhancedStatus(4, 4, 2), "timeout sending the message")
        case .dialog:
            let stage = awaited.first?.stage ?? .quit
            return fail(
                .timedOut(stage), status: EnhancedStatus(4, 4, 2), "timeout waiting for \(stage.rawValue) reply")
        }
    }

    /// End of stream or socket error.
    public mutating func connectionClosed() -> [ClientAction] {
        switch phase {
        case .idle, .done: return []
        case .quitting, .resetting: return finish()
        case .handshake: return tlsFailed("connection closed during the TLS handshake")
        case .body:
            return fail(
                .connectionLost(.dataBlock), status: EnhancedStatus(4, 4, 2),
                "connection lost while sending the message")
        case .dialog:
            let stage = awaited.first?.stage ?? .quit
            return fail(
                .connectionLost(stage), status: EnhancedStatus(4, 4, 2),
                "connection lost waiting for \(stage.rawValue) reply")
        }
    }

    /// A local failure (the message file became unreadable): close without ending the DATA, so the server
    /// discards the partial message; every undecided recipient stays temporary.
    public mutating func abort(_ reason: String) -> [ClientAction] {
        guard phase == .dialog || phase == .body || phase == .handshake else { return [] }
        let reply = Reply(451, EnhancedStatus(4, 3, 0), "local error: \(reason)")
        settleUndecided(.temporary(reply))
        endKind = .aborted(reason)
        return finish()
    }

    // MARK: - Replies

    private mutating func handle(_ reply: Reply) -> [ClientAction] {
        guard !awaited.isEmpty else { return protocolError("unexpected reply \(reply.code)") }
        let command = awaited.removeFirst()
        answering = command
        defer { answering = nil }
        var reply = reply
        if let faultHook, let stage = command.faultStage {
            var recipient: String?
            if case .rcpt(let index) = command { recipient = recipients[index] }
            switch faultHook(stage, recipient) {
            case .reply(let injected): reply = injected
            case .drop:
                return fail(
                    .connectionLost(command.stage), status: EnhancedStatus(4, 4, 2),
                    "connection lost waiting for \(command.stage.rawValue) reply")
            case nil: break
            }
        }
        if reply.code == 421 && command != .greeting && command != .quit {
            // RFC 5321 §3.8: the server is closing; later pipelined replies will never come. A 421 after `.`
            // is a refusal of the message, so no duplicate.
            awaitingFinalReply = false
            settleUndecided(.temporary(reply))
            endKind = .hostFailed(.closing(reply))
            return finish()
        }
        repliesRead += 1
        var actions: [ClientAction]
        switch command {
        case .greeting: actions = greeted(reply)
        case .ehlo: actions = ehloAnswered(reply)
        case .helo: actions = heloAnswered(reply)
        case .starttls: actions = startTLSAnswered(reply)
        case .mail: actions = mailAnswered(reply)
        case .rcpt(let index): actions = rcptAnswered(reply, index: index)
        case .data: actions = dataAnswered(reply)
        case .dot: actions = dotAnswered(reply)
        case .quit, .rset: actions = finish()  // answered outside the dialog (`quitting`, `resetting`)
        }
        // Re-arm for the next outstanding reply, unless the step armed or ended things itself.
        if phase == .dialog, let next = awaited.first,
            !actions.contains(where: { if case .arm = $0 { true } else { false } })
        {
            actions.append(.arm(timeout: next.stage))
        }
        return actions
    }

    private mutating func greeted(_ reply: Reply) -> [ClientAction] {
        greetingText = reply.lines.joined(separator: " ")
        switch reply.code {
        case 200..<300:
            // RFC 5321 says 220; like Postfix we act on the first digit.
            return sendCommand(.ehlo, "EHLO \(heloName)")
        case 400..<600:
            // Postfix smtp_skip_5xx_greeting: a refusing greeting is about the host; try the next one.
            settleUndecided(.temporary(Self.asTemporary(reply)))
            endKind = .hostFailed(.greeting(reply))
            return quit()
        default:
            return protocolError("greeting \(reply.code)")
        }
    }

    private mutating func ehloAnswered(_ reply: Reply) -> [ClientAction] {
        switch reply.code {
        case 200..<300:
            let capabilities = ServerCapabilities(ehloLines: reply.lines)
            self.capabilities = capabilities
            if !tlsActive && tlsPolicy != .none {
                if capabilities.startTLS { return sendCommand(.starttls, "STARTTLS") }
                if tlsPolicy == .encrypt {
                    return tlsRequired("TLS is required, but the server does not offer STARTTLS")
                }
            }
            return startTransaction(capabilities)
        case 500..<600:
            // Old servers answer 500/502 to EHLO (RFC 5321 §4.1.1.1, §3.2): fall back to HELO.
            return sendCommand(.helo, "HELO \(heloName)")
        case 400..<500:
            settleUndecided(.temporary(reply))
            endKind = .hostFailed(.hello(reply))
            return quit()
        default:
            return protocolError("EHLO answered \(reply.code)")
        }
    }

    private mutating func heloAnswered(_ reply: Reply) -> [ClientAction] {
        switch reply.code {
        case 200..<300:
            capabilities = ServerCapabilities()
            if !tlsActive && tlsPolicy == .encrypt {
                return tlsRequired("TLS is required, but the server does not support EHLO")
            }
            return startTransaction(ServerCapabilities())
        case 400..<600:
            settleUndecided(.temporary(Self.asTemporary(reply)))
            endKind = .hostFailed(.hello(reply))
            return quit()
        default:
            return protocolError("HELO answered \(reply.code)")
        }
    }

    /// Local checks against the capabilities, then MAIL (+ RCPT… + DATA with PIPELINING).
    private mutating func startTransaction(_ peer: ServerCapabilities) -> [ClientAction] {
        if let limit = peer.size, limit > 0, messageSize > limit {
            // RFC 1870: don't send what the server announced it will refuse.
            refuseLocally(
                .permanent(
                    Reply(
                        552, EnhancedStatus(5, 3, 4),
                        "message size \(messageSize) exceeds the fixed maximum message size \(limit) of the server")))
            return endTransaction()
        }
        if needsSMTPUTF8 && !peer.smtpUTF8 {
            refuseLocally(
                .permanent(
                    Reply(
                        553, EnhancedStatus(5, 6, 7),
                        "the message needs SMTPUTF8 and the server does not support it")))
            return endTransaction()
        }
        if bodyType == .eightBitMIME && !peer.eightBitMIME {
            // RFC 6152 §3: convert to 7 bit when the caller could, else refuse (our decision, 5.6.3).
            switch sevenBit {
            case .available:
                sendsSevenBitBody = true
            case .unavailable(let why):
                refuseLocally(
                    .permanent(
                        Reply(
                            554, EnhancedStatus(5, 6, 3),
                            "8-bit message and the server does not support 8BITMIME; "
                                + (why ?? "conversion not supported"))))
                return endTransaction()
            }
        }
        if !Self.isSafePath(sender) {
            refuseLocally(.permanent(Reply(553, EnhancedStatus(5, 1, 7), "invalid sender address")))
            return endTransaction()
        }
        for (index, recipient) in recipients.enumerated() where !Self.isSafePath(recipient) || recipient.isEmpty {
            outcomes[index] = .permanent(Reply(553, EnhancedStatus(5, 1, 3), "invalid recipient address"))
            refusedLocally.insert(index)
        }
        let pending = recipients.indices.filter { outcomes[$0] == nil }
        guard !pending.isEmpty else { return endTransaction() }

        var mail = "MAIL FROM:<\(sender)>"
        if peer.size != nil { mail += " SIZE=\(messageSize)" }
        if let bodyType, peer.eightBitMIME { mail += " BODY=\(bodyType.rawValue)" }
        if needsSMTPUTF8 { mail += " SMTPUTF8" }
        if peer.dsn, let dsn { mail += dsn.mailParameters }

        if peer.pipelining {
            // RFC 2920: MAIL and RCPT anywhere in a group, DATA last; replies matched by count.
            var bytes = Self.line(mail)
            var commands: [Command] = [.mail]
            for index in pending {
                bytes += Self.line(rcptCommand(index, peer))
                commands.append(.rcpt(index))
            }
            bytes += Self.line("DATA")
            commands.append(.data)
            awaited += commands
            return [.send(bytes), .arm(timeout: .mail)]
        }
        return sendCommand(.mail, mail)
    }

    private func rcptCommand(_ index: Int, _ peer: ServerCapabilities) -> String {
        let parameters = peer.dsn ? dsn?.rcptParameters(index) ?? "" : ""
        return "RCPT TO:<\(recipients[index])>\(parameters)"
    }

    private mutating func mailAnswered(_ reply: Reply) -> [ClientAction] {
        switch reply.code {
        case 200..<300:
            mailAccepted = true
            if capabilities?.pipelining == true { return [] }
            return sendNextRecipient(after: nil)
        case 400..<500:
            settleUndecided(.temporary(reply))
        case 500..<600:
            settleUndecided(.permanent(reply))
        default:
            return protocolError("MAIL answered \(reply.code)")
        }
        // Pipelined RCPT/DATA replies are still owed to us; read them (by count) before QUIT.
        return capabilities?.pipelining == true ? [] : endTransaction()
    }

    private mutating func rcptAnswered(_ reply: Reply, index: Int) -> [ClientAction] {
        switch reply.code {
        case 200..<300:
            if mailAccepted && outcomes[index] == nil { accepted[index] = true }
        case 552:
            // RFC 5321 §4.5.3.1.10: 552 to RCPT means "too many recipients", retry later.
            if outcomes[index] == nil { outcomes[index] = .temporary(Self.asTemporary(reply)) }
        case 400..<500:
            if outcomes[index] == nil { outcomes[index] = .temporary(reply) }
        case 500..<600:
            if outcomes[index] == nil { outcomes[index] = .permanent(reply) }
        default:
            return protocolError("RCPT answered \(reply.code)")
        }
        if capabilities?.pipelining == true { return [] }
        return sendNextRecipient(after: index)
    }

    private mutating func sendNextRecipient(after index: Int?) -> [ClientAction] {
        let start = index.map { $0 + 1 } ?? 0
        if let next = (start..<recipients.count).first(where: { outcomes[$0] == nil }) {
            return sendCommand(.rcpt(next), rcptCommand(next, capabilities ?? ServerCapabilities()))
        }
        // Without PIPELINING we never send DATA when no recipient was accepted (RFC 5321 §3.3: DATA needs one).
        guard accepted.contains(true) else { return endTransaction() }
        return sendCommand(.data, "DATA")
    }

    private mutating func dataAnswered(_ reply: Reply) -> [ClientAction] {
        let anyAccepted = accepted.contains(true)
        switch reply.code {
        case 354 where anyAccepted:
            phase = .body
            return [.arm(timeout: .dataBlock), .sendBody]
        case 354:
            // RFC 2920 §3.1: pipelined DATA answered 354 with no recipient: send just the end of data.
            dotOnly = true
            awaited.append(.dot)
            return [.send(Self.line(".")), .arm(timeout: .dataDone)]
        case 400..<500 where anyAccepted:
            settleAccepted(.temporary(reply))
        case 500..<600 where anyAccepted:
            settleAccepted(.permanent(reply))
        case 400..<600:
            break  // nobody accepted: the refusal is expected (503/554) and says nothing new
        default:
            return protocolError("DATA answered \(reply.code)")
        }
        return endTransaction()
    }

    private mutating func dotAnswered(_ reply: Reply) -> [ClientAction] {
        dotReplied = true
        if dotOnly { return endTransaction() }
        awaitingFinalReply = false
        switch reply.code {
        case 200..<300: settleAccepted(.delivered(reply))
        case 400..<500: settleAccepted(.temporary(reply))
        case 500..<600: settleAccepted(.permanent(reply))
        default:
            awaitingFinalReply = true
            return protocolError("end of data answered \(reply.code)")
        }
        return endTransaction()
    }

    // MARK: - STARTTLS

    private mutating func startTLSAnswered(_ reply: Reply) -> [ClientAction] {
        switch reply.code {
        case 200..<300:
            // Whatever else the server sent with its 220 is dropped, never parsed as a reply inside TLS.
            parser = ReplyParser()
            phase = .handshake
            return [.startTLS]
        case 400..<600:
            // `may` carries on in plaintext on this connection; `encrypt` gives up on this address.
            if tlsPolicy == .encrypt {
                return tlsRequired("TLS is required, but STARTTLS was refused: \(Self.summary(reply))")
            }
            return startTransaction(capabilities ?? ServerCapabilities())
        default:
            return protocolError("STARTTLS answered \(reply.code)")
        }
    }

    /// The handshake is done: the server forgot our EHLO (RFC 3207 §4.2), so greet it again.
    public mutating func tlsEstablished() -> [ClientAction] {
        guard phase == .handshake else { return [] }
        tlsActive = true
        phase = .dialog
        capabilities = nil
        return sendCommand(.ehlo, "EHLO \(heloName)")
    }

    /// The handshake failed; the connection is unusable. (With `may` the driver retries the address in plaintext
    /// instead of calling this.)
    public mutating func tlsFailed(_ reason: String) -> [ClientAction] {
        guard phase == .handshake else { return [] }
        // The TLS layer's reason may already say "TLS handshake failed": print it once.
        let text = reason.hasPrefix("TLS handshake failed") ? reason : "TLS handshake failed: \(reason)"
        let reply = Reply(421, EnhancedStatus(4, 7, 5), text)
        settleUndecided(.temporary(reply))
        endKind = .hostFailed(.tls(reply))
        return finish()
    }

    private mutating func tlsRequired(_ text: String) -> [ClientAction] {
        let reply = Reply(421, EnhancedStatus(4, 7, 0), text)
        settleUndecided(.temporary(reply))
        endKind = .hostFailed(.tls(reply))
        return quit()
    }

    // MARK: - Endings

    /// The transaction is over and the dialog is in good order: QUIT, or (`keepOpen`) leave the connection idle for
    /// the next one. Once MAIL was accepted the server holds the transaction until the end of data is answered or
    /// RSET (RFC 5321 §4.1.1.5), so then RSET goes first. RSET now rather than when the connection is taken again:
    /// the next transaction starts at MAIL without a round trip, and a server that does not take RSET is never parked.
    private mutating func endTransaction() -> [ClientAction] {
        guard keepOpen else { return quit() }
        guard mailAccepted && !dotReplied else { return finishKept() }
        phase = .resetting
        awaited = [.rset]
        return [.send(Self.line("RSET")), .arm(timeout: .rset)]
    }

    /// The reply to the RSET of `endTransaction`: 2xx parks, anything else closes (the result is fixed either way).
    private mutating func rsetAnswered(_ bytes: some Sequence<UInt8>) -> [ClientAction] {
        parser.append(bytes)
        let reply: Reply?
        do throws(ReplyParseError) {
            reply = try parser.nextReply()
        } catch {
            return finish()
        }
        guard let reply else { return [] }
        guard (200..<300).contains(reply.code) else { return quit() }
        return finishKept()
    }

    /// Ends with the connection open and idle. Bytes beyond the last reply mean the server said something nobody
    /// asked for: such a connection is not parked.
    private mutating func finishKept() -> [ClientAction] {
        guard !parser.hasBufferedInput else { return quit() }
        phase = .done
        awaited = []
        var result = outcome()
        result.keptOpen = true
        return [.finished(result)]
    }

    private mutating func quit() -> [ClientAction] {
        phase = .quitting
        awaited = [.quit]
        return [.send(Self.line("QUIT")), .arm(timeout: .quit)]
    }

    private mutating func protocolError(_ why: String) -> [ClientAction] {
        if phase == .quitting || phase == .done { return finish() }
        let stage: ClientStage = phase == .body ? .dataBlock : (answering?.stage ?? awaited.first?.stage ?? .quit)
        return fail(.protocolError(stage, why), status: EnhancedStatus(4, 5, 0), "protocol error: \(why)")
    }

    /// Ends the session for a host reason: undecided recipients become temporary with a made-up reply.
    private mutating func fail(_ failure: HostFailure, status: EnhancedStatus, _ text: String) -> [ClientAction] {
        possibleDuplicate = awaitingFinalReply
        let code = status.subject == 5 ? 451 : 421
        var reply = Reply(code, status, text)
        if possibleDuplicate { reply.lines = [text + "; the message may be delivered twice"] }
        settleUndecided(.temporary(reply))
        endKind = .hostFailed(failure)
        return finish()
    }

    private mutating func finish() -> [ClientAction] {
        guard phase != .done else { return [] }
        phase = .done
        awaited = []
        return [.close, .finished(outcome())]
    }

    private func outcome() -> ClientResult {
        var final: [ClientResult.Recipient] = []
        for (index, address) in recipients.enumerated() {
            let outcome =
                outcomes[index]
                ?? .temporary(Reply(451, EnhancedStatus(4, 4, 0), "no outcome for this recipient"))
            final.append(
                ClientResult.Recipient(
                    address: address, outcome: outcome, decidedLocally: refusedLocally.contains(index)))
        }
        var result = ClientResult(
            kind: endKind, recipients: final, capabilities: capabilities, greeting: greetingText,
            possibleDuplicate: possibleDuplicate)
        result.reused = resuming != nil
        result.repliesRead = repliesRead
        return result
    }

    // MARK: - Helpers

    private mutating func sendCommand(_ command: Command, _ text: String) -> [ClientAction] {
        awaited.append(command)
        return [.send(Self.line(text)), .arm(timeout: command.stage)]
    }

    /// A refusal of our own before MAIL, for every recipient not decided yet.
    private mutating func refuseLocally(_ outcome: RecipientOutcome) {
        for index in outcomes.indices where outcomes[index] == nil { refusedLocally.insert(index) }
        settleUndecided(outcome)
    }

    private mutating func settleUndecided(_ outcome: RecipientOutcome) {
        for index in outcomes.indices where outcomes[index] == nil { outcomes[index] = outcome }
    }

    private mutating func settleAccepted(_ outcome: RecipientOutcome) {
        for index in outcomes.indices where accepted[index] && outcomes[index] == nil { outcomes[index] = outcome }
    }

    private static func line(_ text: String) -> [UInt8] {
        Array(text.utf8) + [13, 10]
    }

    /// No byte that could end the command line or the path early (command injection through the envelope).
    private static func isSafePath(_ text: String) -> Bool {
        !text.utf8.contains { $0 == 13 || $0 == 10 || $0 == 0 || $0 == UInt8(ascii: "<") || $0 == UInt8(ascii: ">") }
    }

    /// A 5xx about the host (greeting, HELO, 552 to RCPT) reported as the temporary failure it is for us:
    /// same text, first digit and status class 4 (Postfix does the same when it skips a 5xx greeting).
    public static func asTemporary(_ reply: Reply) -> Reply {
        guard reply.code >= 500 else { return reply }
        let status = reply.effectiveStatus
        return Reply(reply.code - 100, EnhancedStatus(4, status.subject, status.detail), lines: reply.lines)
    }

    /// `554 5.3.2 text` in one line, for logs and failure descriptions.
    public static func summary(_ reply: Reply) -> String {
        let status = reply.status.map { " \($0)" } ?? ""
        return "\(reply.code)\(status) \(reply.lines.joined(separator: " "))"
    }
}

/// The message body as it goes on the wire after DATA (RFC 5321 §4.5.2, §2.3.8): only CRLF line ends
/// (a bare LF or bare CR becomes CRLF, so no smuggling sequence can leave us), a `.` doubled at the start of a
/// line, and `.\r\n` at the end (after a CRLF, added if the content does not end with one).
///
/// Streaming: feed the stored file in chunks with `encode(_:)`, then append `finish()`; state carries a CR
/// split across chunks and whether the next byte starts a line.
public struct OutboundBody: Sendable {
    private var atLineStart = true
    private var pendingCR = false
    private var finished = false

    public init() {}

    /// The whole body at once, terminator included.
    public static func encode(_ stored: [UInt8]) -> [UInt8] {
        var body = OutboundBody()
        return body.encode(stored) + body.finish()
    }

    /// Encodes one chunk of the stored content.
    public mutating func encode(_ chunk: some Collection<UInt8>) -> [UInt8] {
        // Contiguous storage takes the fast path; this generic is called across modules, where it is not
        // specialised (perf: a generic iterator call per byte was a third of the relay path's CPU).
        if let fast = chunk.withContiguousStorageIfAvailable({ encode(buffer: $0) }) { return fast }
        return Array(chunk).withUnsafeBufferPointer { encode(buffer: $0) }
    }

    /// Copies runs of ordinary bytes whole; only CR, LF and a dot at a line start need attention.
    private mutating func encode(buffer: UnsafeBufferPointer<UInt8>) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(buffer.count + buffer.count / 64 + 4)
        var index = 0
        let end = buffer.count
        while index < end {
            let byte = buffer[index]
            if pendingCR {
                pendingCR = false
                out.append(13)
                out.append(10)
                atLineStart = true
                if byte == 10 {  // the CR and this LF were one CRLF
                    index += 1
                    continue
                }
            }
            switch byte {
            case 13:
                pendingCR = true
                index += 1
            case 10:
                out.append(13)
                out.append(10)
                atLineStart = true
                index += 1
            default:
                if atLineStart && byte == UInt8(ascii: ".") { out.append(byte) }
                atLineStart = false
                // The rest of the line up to the next CR or LF goes in one copy.
                var runEnd = index + 1
                while runEnd < end && buffer[runEnd] != 13 && buffer[runEnd] != 10 { runEnd += 1 }
                out.append(contentsOf: UnsafeBufferPointer(rebasing: buffer[index..<runEnd]))
                index = runEnd
            }
        }
        return out
    }

    /// The end of the body: a missing final CRLF, then `.\r\n`. Returns nothing if called twice.
    public mutating func finish() -> [UInt8] {
        guard !finished else { return [] }
        finished = true
        var out: [UInt8] = []
        if pendingCR || !atLineStart { out += [13, 10] }
        pendingCR = false
        out += [UInt8(ascii: "."), 13, 10]
        return out
    }
}
