/// SMTPProtocol is the pure protocol core of dualmta: addresses and paths, replies with enhanced status codes,
/// relay policy, the Received trace header, dot-stuffing, and `ServerSession` — the SMTP server state machine.
///
/// `ServerSession` takes bytes and returns actions (send these bytes, open/append/commit/abort a spool file,
/// close). It does no I/O, keeps no clock and never blocks, so every dialogue in the test catalogue is a
/// plain unit test. Framing is strict CRLF; any bare CR or LF closes the session (no SMTP smuggling); RFC 2920
/// synchronisation is enforced; DATA ends only at CRLF "." CRLF. Session state (HELO name, TLS, counters) lives apart from the
/// `Transaction` that RSET, EHLO and the end of DATA drop.

import NetAddress

/// What the I/O driver must do, in order.
public enum ServerAction: Equatable, Sendable {
    /// Encoded replies; all replies of one call are coalesced into one `.send` where the order allows.
    case send([UInt8])
    /// Follows the 354: open a spool file for this transaction.
    case beginMessage(Transaction)
    /// Un-stuffed body bytes, in order, CRLF kept, the final "." line excluded.
    case messageData([UInt8])
    /// Valid end of data: make the message durable, then call `commitSucceeded` or `commitFailed`.
    case commitMessage(Transaction)
    /// Discard the spool file of the current message.
    case abortMessage
    /// Close after the preceding sends are flushed.
    case close
    /// A reason worth a log line (never message content, never AUTH data).
    case log(String)
    /// Like `log`, for events an operator should notice (an attack pattern such as STARTTLS command injection).
    case warning(String)
    /// Check these credentials (slow: off the connection's queue), then call `authenticationFinished`.
    case authenticate(Credentials)
    /// Check that the sender's domain can receive our bounces (DNS: off the connection's queue), then call
    /// `senderChecked`. Only when `Configuration.checkSenderReturnPath` is on.
    case checkSender(domain: String)
    /// A fault rule's delay: hold this and every later action (and stop reading) for this long.
    case pause(milliseconds: Int64)
    /// A fault rule's reset: the `.close` that follows must send a TCP RST instead of a FIN.
    case reset
}

/// The driver's answer to `.checkSender`.
public enum SenderCheckResult: Equatable, Sendable {
    case accept
    /// Accept, and note the doubt in the message (a header the driver adds).
    case acceptWithWarning(String)
    /// 550 5.1.8 or 450 4.1.8.
    case reject(Reply)
}

public struct ServerSession: Sendable {
    public struct Configuration: Sendable {
        public var hostname: String
        public var maxMessageSize: Int
        public var maxRecipients: Int = 100
        public var maxErrors: Int = 20
        public var maxJunkCommands: Int = 100
        /// Octets including CRLF (RFC 5321 §4.5.3.1.4).
        public var commandLineLimit: Int = 512
        /// Octets including CRLF (RFC 5321 §4.5.3.1.6).
        public var textLineLimit: Int = 1000
        public var maxReceivedHeaders: Int = 50
        public var tlsAvailable: Bool = false
        /// Submission service (RFC 6409): AUTH PLAIN and LOGIN are offered once TLS is active, MAIL is refused with
        /// 530 5.7.0 until the client authenticated, and authenticated clients may relay.
        public var submission: Bool = false
        /// Octets including CRLF of an AUTH command line or of a line of the AUTH exchange (RFC 4954 §4).
        public var authLineLimit: Int = 12288
        /// Failed AUTH attempts after which the session is closed (421 4.7.0).
        public var maxAuthFailures: Int = 5
        public var policy: RecipientPolicy

        /// Ask the driver, at MAIL FROM, whether bounces could reach the sender's domain (`sender_return_check`).
        public var checkSenderReturnPath: Bool = false
        /// Lab fault rules (see SessionFault.swift); nil when none are configured.
        public var faults: SessionFaultHook?

        public init(hostname: String, maxMessageSize: Int, policy: RecipientPolicy) {
            self.hostname = hostname
            self.maxMessageSize = maxMessageSize
            self.policy = policy
        }
    }

    private enum Phase: Sendable {
        case notStarted
        case command
        case data
        case awaitingCommit
        /// Inside an AUTH exchange: the next line is a base64 response, not a command.
        case authResponse
        /// Between `.authenticate` and `authenticationFinished`; input is only buffered meanwhile.
        case awaitingAuthentication
        /// Between `.checkSender` and `senderChecked`; input is only buffered meanwhile.
        case awaitingSenderCheck
        case closed
    }

    /// A command line without CRLF is given up (500 + close) past this many octets: memory stays bounded.
    static let maxDiscardedLine = 64 * 1024
    /// Input accepted while the driver commits a message; a client cannot legitimately send more before a reply.
    static let maxPendingInput = 256 * 1024

    public let configuration: Configuration
    /// The peer, IPv4-mapped addresses folded to IPv4.
    public let clientAddress: IPAddress
    public let clientMayRelay: Bool
    /// Set by the driver from the spool's free space; false → MAIL gets 452 4.3.1.
    public var storageAvailable = true

    private var phase = Phase.notStarted
    private var input: [UInt8] = []
    private var readIndex = 0
    /// Stream offset of `input[0]`; `chunkEnds` holds stream offsets where receive() chunks end (pending ones only).
    private var inputBase = 0
    private var chunkEnds: [Int] = []
    /// Bytes of the current command line before this index hold no CR or LF.
    private var scanIndex = 0
    private var discardingLongLine = false
    private var discardedOctets = 0
    private var pendingOverflow = false

    private var heloName: String?
    private var esmtp = false
    private var transaction: Transaction?
    private var decoder: DataDecoder?
    private var errorCount = 0
    private var junkCount = 0
    private var commandCount = 0
    /// The mechanism of the AUTH exchange in progress and, for LOGIN, the user name already received.
    private var authExchange: (mechanism: SASLMechanism, user: String?)?
    /// The transaction whose sender is being checked (`.awaitingSenderCheck`).
    private var pendingTransaction: Transaction?
    private var pendingUser: String?
    private var authFailures = 0

    private var pendingSend: [UInt8] = []
    private var actions: [ServerAction] = []

    /// - Parameter implicitTLS: the connection is already encrypted (RFC 8314 port 465 style): STARTTLS is not
    ///   offered and, on a submission service, AUTH is offered at once.
    public init(configuration: Configuration, clientAddress: IPAddress, clientMayRelay: Bool, implicitTLS: Bool = false)
    {
        self.configuration = configuration
        self.clientAddress = clientAddress.unmapped
        self.clientMayRelay = clientMayRelay
        self.tlsActive = implicitTLS
    }

    public var isClosed: Bool { phase == .closed }
    /// True between `.commitMessage` and `commitSucceeded`/`commitFailed`; input is only buffered meanwhile.
    public var awaitingCommit: Bool { phase == .awaitingCommit }
    /// Becomes true with the `220 2.0.0 Ready to start TLS` reply (only when `tlsAvailable`): the driver must then run
    /// the server handshake and feed decrypted bytes to `receive`. Plaintext already buffered has been discarded (CVE-2011-0411).
    public private(set) var tlsActive = false
    /// The validated EHLO/HELO name, if any.
    public var helo: String? { heloName }
    /// The user name of a successful AUTH (kept across EHLO and RSET, dropped by nothing but the end of the session).
    public private(set) var authenticatedUser: String?
    /// True between `.authenticate` and `authenticationFinished`; input is only buffered meanwhile.
    public var awaitingAuthentication: Bool { phase == .awaitingAuthentication }
    /// True between `.checkSender` and `senderChecked`.
    public var awaitingSenderCheck: Bool { phase == .awaitingSenderCheck }
    /// AUTH is offered (and accepted) only on a submission service, and only over TLS (PLAIN and LOGIN send the
    /// password in the clear otherwise).
    private var authOffered: Bool { configuration.submission && tlsActive }

    private var host: String { configuration.hostname }

    // MARK: Driver entry points

    /// The greeting, or — when the client talked before it (pre-greet) — 554 5.5.0 and close.
    public mutating func start(earlyInput: Bool) -> [ServerAction] {
        guard phase == .notStarted else { return [] }
        if earlyInput || readIndex < input.count || pendingOverflow {
            protocolSynchronizationError("input before greeting")
        } else if consultFaults(SessionFaultPoint(stage: .connect)) == .proceed {
            phase = .command
            reply(Reply(220, nil, "\(host) ESMTP dualmta"))
        }
        return takeActions()
    }

    public mutating func receive(_ bytes: some Collection<UInt8>) -> [ServerAction] {
        guard phase != .closed, !bytes.isEmpty else { return [] }
        if pendingOverflow { return [] }
        input.append(contentsOf: bytes)
        chunkEnds.append(inputBase + input.count)
        switch phase {
        case .notStarted, .awaitingCommit, .awaitingAuthentication, .awaitingSenderCheck:
            if input.count - readIndex > Self.maxPendingInput {
                pendingOverflow = true
                discardInput()
            }
            return []
        default:
            process()
            return takeActions()
        }
    }

    /// The message is durable: 250, then the input that arrived meanwhile.
    public mutating func commitSucceeded(queueID: String) -> [ServerAction] {
        guard phase == .awaitingCommit else { return [] }
        reply(Reply(250, EnhancedStatus(2, 0, 0), "Ok: queued as \(queueID)"))
        junkCount = 0
        return resumeAfterCommit()
    }

    /// The message could not be made durable (e.g. 451 4.3.0, 452 4.3.1): send that, then continue.
    public mutating func commitFailed(_ failure: Reply) -> [ServerAction] {
        guard phase == .awaitingCommit else { return [] }
        reply(failure)
        return resumeAfterCommit()
    }

    public mutating func timedOut() -> [ServerAction] {
        closeUnsolicited(Reply(421, EnhancedStatus(4, 4, 2), "\(host) Error: timeout exceeded"), reason: "timeout")
    }

    public mutating func shuttingDown() -> [ServerAction] {
        closeUnsolicited(Reply(421, EnhancedStatus(4, 3, 2), "\(host) Service shutting down"), reason: "shutdown")
    }

    private mutating func closeUnsolicited(_ message: Reply, reason: String) -> [ServerAction] {
        guard phase != .closed else { return [] }
        reply(message)
        if phase == .data { emit(.abortMessage) }
        log("closing: \(reason)")
        close()
        return takeActions()
    }

    private mutating func resumeAfterCommit() -> [ServerAction] {
        transaction = nil
        return resume(after: "committing")
    }

    private mutating func resume(after activity: String) -> [ServerAction] {
        phase = .command
        if pendingOverflow {
            pendingOverflow = false
            protocolSynchronizationError("too much input while \(activity)")
        } else {
            process()
        }
        return takeActions()
    }

    /// The driver's answer to `.authenticate`: 235, 535 (closing after `maxAuthFailures`) or 454, then the input
    /// that arrived meanwhile.
    public mutating func authenticationFinished(_ outcome: AuthenticationOutcome) -> [ServerAction] {
        guard phase == .awaitingAuthentication else { return [] }
        phase = .command
        let user = pendingUser ?? ""
        pendingUser = nil
        switch outcome {
        case .success:
            authenticatedUser = user
            reply(Reply(235, EnhancedStatus(2, 7, 0), "Authentication successful"))
        case .invalidCredentials:
            rejectCredentials(user: user)
        case .temporaryFailure:
            reply(Reply(454, EnhancedStatus(4, 7, 0), "Temporary authentication failure"))
            log("authentication unavailable for user \(LogText.user(user))")
        case .throttled:
            // Counts like a failure, so a client that keeps trying is still closed after maxAuthFailures.
            authFailures += 1
            fail(Reply(454, EnhancedStatus(4, 7, 0), "Too many authentication failures, try again later"))
            if authFailures >= configuration.maxAuthFailures {
                reply(Reply(421, EnhancedStatus(4, 7, 0), "\(host) Error: too many authentication failures"))
                close()
            }
        }
        if phase == .closed { return takeActions() }
        return resume(after: "authenticating")
    }

    /// 535 5.7.8, and 421 + close once `maxAuthFailures` is reached. The log names the user, never the password.
    private mutating func rejectCredentials(user: String) {
        authFailures += 1
        fail(Reply(535, EnhancedStatus(5, 7, 8), "Error: authentication failed"))
        log("authentication failed for user \(LogText.user(user)) from \(clientAddress.smtpLiteral)")
        if authFailures >= configuration.maxAuthFailures {
            reply(Reply(421, EnhancedStatus(4, 7, 0), "\(host) Error: too many authentication failures"))
            close()
        }
    }

    // MARK: Output

    private mutating func reply(_ message: Reply) {
        message.encode(into: &pendingSend)
    }

    /// A failure reply to a command: counts towards maxErrors.
    private mutating func fail(_ message: Reply) {
        errorCount += 1
        reply(message)
    }

    private mutating func emit(_ action: ServerAction) {
        flushSend()
        actions.append(action)
    }

    private mutating func log(_ text: String) {
        actions.append(.log(text))
    }

    private mutating func flushSend() {
        guard !pendingSend.isEmpty else { return }
        actions.append(.send(pendingSend))
        pendingSend = []
    }

    private mutating func takeActions() -> [ServerAction] {
        flushSend()
        let result = actions
        actions = []
        return result
    }

    private mutating func close() {
        emit(.close)
        phase = .closed
        decoder = nil
        transaction = nil
        discardInput()
    }

    private mutating func discardInput() {
        inputBase += input.count
        input = []
        readIndex = 0
        scanIndex = 0
        chunkEnds = []
    }

    private mutating func protocolSynchronizationError(_ detail: String) {
        reply(Reply(554, EnhancedStatus(5, 5, 0), "Error: SMTP protocol synchronization"))
        log("protocol synchronization error (\(detail)) from \(clientAddress.smtpLiteral)")
        close()
    }

    private mutating func bareLineEnding(_ where: String, abortMessage: Bool = false) {
        reply(Reply(554, EnhancedStatus(5, 5, 2), "Error: bare <CR> or <LF> received"))
        if abortMessage { emit(.abortMessage) }
        log("bare <CR> or <LF> in \(`where`) from \(clientAddress.smtpLiteral)")
        close()
    }

    // MARK: Fault rules

    private static func faultPoint(_ stage: SessionFaultStage, _ transaction: Transaction) -> SessionFaultPoint {
        SessionFaultPoint(
            stage: stage, sender: transaction.reversePath.description,
            recipients: transaction.recipients.map(\.path.description))
    }

    /// Asks the fault hook and acts on its decision as policy would: a refusal counts as an error, a 421 closes;
    /// drop and reset close without a reply. In DATA the driver aborts the open message on `.close`.
    private mutating func consultFaults(_ point: SessionFaultPoint) -> FaultOutcome {
        guard let hook = configuration.faults, let fault = hook(point) else { return .proceed }
        switch fault {
        case .delay(let milliseconds):
            emit(.pause(milliseconds: milliseconds))
            return .proceed
        case .discard:
            return point.stage == .dataEnd ? .discard : .proceed
        case .reply(let refusal):
            if point.stage == .connect {
                reply(refusal)
                close()
            } else {
                fail(refusal)
                if refusal.code == 421 { close() }
            }
        case .drop:
            close()
        case .reset:
            emit(.reset)
            close()
        }
        return .handled
    }

    // MARK: Input processing

    private mutating func process() {
        var progressing = true
        while progressing {
            switch phase {
            case .command, .authResponse: progressing = commandStep()
            case .data: progressing = dataStep()
            case .notStarted, .awaitingCommit, .awaitingAuthentication, .awaitingSenderCheck, .closed:
                progressing = false
            }
        }
        compact()
    }

    private mutating func compact() {
        if readIndex >= input.count {
            inputBase += input.count
            input.removeAll(keepingCapacity: input.capacity <= 1 << 20)
            readIndex = 0
            scanIndex = 0
        } else if readIndex > 0 {
            inputBase += readIndex
            input.removeFirst(readIndex)
            scanIndex = max(0, scanIndex - readIndex)
            readIndex = 0
        }
        if let firstKept = chunkEnds.firstIndex(where: { $0 > inputBase }) {
            if firstKept > 0 { chunkEnds.removeFirst(firstKept) }
        } else {
            chunkEnds.removeAll()
        }
    }

    /// True when the receive() chunk holding the byte before stream offset `end` goes on past it (RFC 2920 check).
    private func moreInSameChunk(after end: Int) -> Bool {
        guard let chunkEnd = chunkEnds.first(where: { $0 >= end }) else { return false }
        return chunkEnd > end
    }

    /// Frames and runs one command line. Returns false when more input is needed or the session stopped.
    private mutating func commandStep() -> Bool {
        guard readIndex < input.count else { return false }
        // Postfix checks the error count before reading the next command.
        if errorCount >= configuration.maxErrors {
            reply(Reply(421, EnhancedStatus(4, 7, 0), "\(host) Error: too many errors"))
            log("too many errors from \(clientAddress.smtpLiteral)")
            close()
            return false
        }
        var index = max(scanIndex, readIndex)
        let end = input.count
        while index < end {
            let byte = input[index]
            if byte == 13 || byte == 10 { break }
            index += 1
        }
        let limit = currentLineLimit()
        if index == end || (input[index] == 13 && index + 1 == end) {
            // Incomplete line (possibly a trailing CR whose partner is still on the way).
            scanIndex = index
            if !discardingLongLine && index - readIndex + 2 > limit {
                discardingLongLine = true
            }
            if discardingLongLine {
                discardedOctets += index - readIndex
                readIndex = index
                if discardedOctets > Self.maxDiscardedLine {
                    reply(Reply(500, EnhancedStatus(5, 5, 2), "Error: command line too long"))
                    log("command line over \(Self.maxDiscardedLine) octets without CRLF")
                    close()
                }
            }
            return false
        }
        if input[index] == 10 || input[index + 1] != 10 {
            bareLineEnding("command")
            return false
        }
        let lineEnd = index + 2
        let contentLength = discardedOctets + index - readIndex
        if discardingLongLine || contentLength + 2 > limit {
            readIndex = lineEnd
            scanIndex = lineEnd
            discardingLongLine = false
            discardedOctets = 0
            if phase == .authResponse {
                endAuthExchange()
                fail(Reply(500, EnhancedStatus(5, 5, 6), "Error: authentication exchange line is too long"))
            } else {
                fail(Reply(500, EnhancedStatus(5, 5, 2), "Error: command line too long"))
            }
            log("command line too long (\(contentLength + 2) octets)")
            return true
        }
        let unexpectedInput = moreInSameChunk(after: inputBase + lineEnd)
        let line = input[readIndex..<index]
        readIndex = lineEnd
        scanIndex = lineEnd
        if phase == .authResponse {
            authResponse(line)
        } else {
            handle(line: line, unexpectedInput: unexpectedInput)
        }
        return true
    }

    /// RFC 4954 §4: AUTH command lines and exchange lines may be up to 12288 octets; other commands 512.
    private func currentLineLimit() -> Int {
        guard configuration.submission else { return configuration.commandLineLimit }
        if phase == .authResponse { return configuration.authLineLimit }
        let prefix = input[readIndex..<min(input.count, readIndex + 5)]
        let isAuth = prefix.count == 5 && zip(prefix, "AUTH ".utf8).allSatisfy { $0 & 0xDF == $1 & 0xDF }
        return isAuth ? configuration.authLineLimit : configuration.commandLineLimit
    }

    private mutating func dataStep() -> Bool {
        guard readIndex < input.count, var decoder else { return false }
        var output: [UInt8] = []
        let start = readIndex
        let outcome = input.withUnsafeBufferPointer { buffer in
            decoder.decode(UnsafeBufferPointer(rebasing: buffer[start...]), into: &output)
        }
        self.decoder = decoder
        if !output.isEmpty { emit(.messageData(output)) }
        switch outcome {
        case .needMore(let consumed):
            readIndex += consumed
            return false
        case .finished(let consumed):
            readIndex += consumed
            finishMessage(decoder)
            return true
        }
    }

    private mutating func finishMessage(_ decoder: DataDecoder) {
        self.decoder = nil
        phase = .command
        guard let transaction else { return }
        let rejection: Reply
        switch decoder.problem {
        case nil:
            switch consultFaults(Self.faultPoint(.dataEnd, transaction)) {
            case .proceed:
                emit(.commitMessage(transaction))
                phase = .awaitingCommit
            case .handled:
                if phase != .closed { emit(.abortMessage) }
                self.transaction = nil
            case .discard:
                emit(.abortMessage)
                reply(Reply(250, EnhancedStatus(2, 0, 0), "Ok: discarded"))
                log("message discarded by a fault rule")
                self.transaction = nil
            }
            return
        case .bareLineEnding:
            bareLineEnding("message data", abortMessage: true)
            return
        case .lineTooLong:
            rejection = Reply(554, EnhancedStatus(5, 6, 0), "Error: message line too long")
        case .nul:
            rejection = Reply(554, EnhancedStatus(5, 6, 0), "Error: message contains NUL character")
        case .tooBig:
            rejection = Reply(552, EnhancedStatus(5, 3, 4), "Message size exceeds fixed maximum message size")
        case .tooManyHops:
            rejection = Reply(554, EnhancedStatus(5, 4, 6), "Error: too many hops")
        }
        reply(rejection)
        emit(.abortMessage)
        log("message rejected: \(rejection.lines.first ?? "")")
        self.transaction = nil
    }

    // MARK: Commands

    private enum Verb: String {
        case ehlo = "EHLO", helo = "HELO", mail = "MAIL", rcpt = "RCPT", data = "DATA", rset = "RSET"
        case noop = "NOOP", quit = "QUIT", vrfy = "VRFY", help = "HELP", expn = "EXPN", starttls = "STARTTLS"
        case auth = "AUTH", bdat = "BDAT"

        /// RFC 2920 §3.1: these may only end a pipelined group.
        var endsGroup: Bool {
            switch self {
            case .ehlo, .helo, .data, .noop, .vrfy, .quit, .starttls: return true
            default: return false
            }
        }

        var isJunk: Bool {
            switch self {
            case .noop, .rset, .vrfy, .help: return true
            default: return false
            }
        }
    }

    private mutating func handle(line: ArraySlice<UInt8>, unexpectedInput: Bool) {
        commandCount += 1
        guard let text = String(validating: line, as: UTF8.self) else {
            fail(Reply(500, EnhancedStatus(5, 5, 2), "Error: invalid UTF-8 in command"))
            log("invalid UTF-8 in command")
            return
        }
        let space = text.firstIndex(of: " ")
        let verbText = asciiUppercased(text[..<(space ?? text.endIndex)])
        let argument = space.map { text[text.index(after: $0)...] } ?? ""
        if commandCount == 1 && space != nil && ["GET", "POST", "CONNECT", "HEAD", "PUT"].contains(verbText) {
            reply(Reply(554, EnhancedStatus(5, 5, 0), "Error: non-SMTP command"))
            log("non-SMTP (HTTP) command from \(clientAddress.smtpLiteral)")
            close()
            return
        }
        let verb = Verb(rawValue: verbText)
        // STARTTLS that will be answered 220 discards what follows instead (CVE-2011-0411; Postfix's fix).
        let startsTLS = verb == .starttls && argument.isEmpty && !tlsActive && configuration.tlsAvailable
        if unexpectedInput && !startsTLS && (verb?.endsGroup == true || (heloName != nil && !esmtp)) {
            protocolSynchronizationError("input after \(verb?.rawValue ?? "command")")
            return
        }
        // NUL inside a MAIL/RCPT path is an address syntax error (501); anywhere else the command is unrecognized.
        if verb != .mail && verb != .rcpt && line.contains(0) {
            fail(Reply(500, EnhancedStatus(5, 5, 2), "Error: NUL character in command"))
            return
        }
        guard let verb else {
            fail(Reply(500, EnhancedStatus(5, 5, 2), "Error: command not recognized"))
            return
        }
        if verb.isJunk {
            junkCount += 1
            if junkCount > configuration.maxJunkCommands {
                reply(Reply(421, EnhancedStatus(4, 7, 0), "\(host) Error: too many junk commands"))
                log("too many junk commands from \(clientAddress.smtpLiteral)")
                close()
                return
            }
        }
        switch verb {
        case .ehlo, .helo: hello(argument, extended: verb == .ehlo)
        case .mail: mail(argument)
        case .rcpt: rcpt(argument)
        case .data: data(argument)
        case .rset:
            guard argument.isEmpty else { return fail(Reply(501, EnhancedStatus(5, 5, 4), "Syntax: RSET")) }
            transaction = nil
            reply(Reply(250, EnhancedStatus(2, 0, 0), "Ok"))
        case .noop:
            reply(Reply(250, EnhancedStatus(2, 0, 0), "Ok"))
        case .quit:
            reply(Reply(221, EnhancedStatus(2, 0, 0), "Bye"))
            close()
        case .vrfy:
            guard !argument.isEmpty else { return fail(Reply(501, EnhancedStatus(5, 5, 4), "Syntax: VRFY address")) }
            reply(Reply(252, EnhancedStatus(2, 5, 2), "Cannot VRFY user, but will accept message and attempt delivery"))
        case .help:
            reply(Reply(214, EnhancedStatus(2, 0, 0), "See RFC 5321: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY"))
        case .auth where configuration.submission:
            auth(argument)
        case .expn, .auth, .bdat:
            fail(Reply(502, EnhancedStatus(5, 5, 1), "Error: command not implemented"))
        case .starttls:
            startTLS(argument)
        }
    }

    private mutating func hello(_ argument: Substring, extended: Bool) {
        let verb = extended ? "EHLO" : "HELO"
        // Only a syntactically valid name or address literal is ever stored (it ends up in the Received header).
        guard Domain(parsing: argument, allowUTF8: false) != nil else {
            let text = argument.isEmpty ? "Syntax: \(verb) hostname" : "Error: invalid \(verb) hostname"
            return fail(Reply(501, EnhancedStatus(5, 5, 4), text))
        }
        guard consultFaults(SessionFaultPoint(stage: .ehlo)) == .proceed else { return }
        heloName = String(argument)
        esmtp = extended
        transaction = nil
        guard extended else {
            return reply(Reply(250, nil, host))
        }
        var lines = [
            "\(host) Hello \(argument) \(clientAddress.smtpLiteral)", "PIPELINING",
            "SIZE \(configuration.maxMessageSize)",
            "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8", "DSN",
        ]
        if configuration.tlsAvailable && !tlsActive { lines.append("STARTTLS") }
        if authOffered { lines.append("AUTH PLAIN LOGIN") }
        reply(Reply(250, nil, lines: lines))
    }

    private mutating func mail(_ argument: Substring) {
        guard let heloName else { return fail(Reply(503, EnhancedStatus(5, 5, 1), "Error: send HELO/EHLO first")) }
        guard transaction == nil else { return fail(Reply(503, EnhancedStatus(5, 5, 1), "Error: nested MAIL command")) }
        if configuration.submission && authenticatedUser == nil {
            let text = tlsActive ? "Authentication required" : "Must issue a STARTTLS command first"
            return fail(Reply(530, EnhancedStatus(5, 7, 0), text))
        }
        let split: CommandSyntax.PathArgument
        switch CommandSyntax.splitPathArgument(argument, keyword: "FROM:") {
        case .success(let value): split = value
        case .failure(.syntax): return fail(Reply(501, EnhancedStatus(5, 5, 4), "Syntax: MAIL FROM:<address>"))
        case .failure(.badPath): return fail(Reply(501, EnhancedStatus(5, 1, 7), "Bad sender address syntax"))
        }
        guard esmtp || split.parameters.isEmpty else {
            return fail(Reply(555, EnhancedStatus(5, 5, 4), "Error: MAIL parameters need EHLO"))
        }
        let parameters: CommandSyntax.MailParameters
        switch CommandSyntax.parseMailParameters(split.parameters, allowAuth: authOffered) {
        case .success(let value): parameters = value
        case .failure(let rejection): return fail(rejection)
        }
        let reversePath: ReversePath
        switch PathParser.parse(split.path, allowUTF8: parameters.smtpUTF8, recipient: false) {
        case .success(.mailbox(let mailbox)): reversePath = .mailbox(mailbox)
        case .success: reversePath = .null
        case .failure(.needsSMTPUTF8):
            return fail(Reply(553, EnhancedStatus(5, 6, 7), "Must declare SMTPUTF8 to send unicode address"))
        case .failure(.syntax):
            return fail(Reply(501, EnhancedStatus(5, 1, 7), "Bad sender address syntax"))
        }
        if let size = parameters.size, size > configuration.maxMessageSize {
            return fail(Reply(552, EnhancedStatus(5, 3, 4), "Message size exceeds fixed maximum message size"))
        }
        guard consultFaults(SessionFaultPoint(stage: .mail, sender: reversePath.description)) == .proceed else {
            return
        }
        guard storageAvailable else {
            // The server's state, not the client's fault: not counted as a client error.
            return reply(.insufficientStorage)
        }
        // RFC 3848 / RFC 6531: S for TLS, A for an authenticated client (AUTH needs EHLO, so never "SMTPA").
        var protocolName = esmtp ? (parameters.smtpUTF8 ? "UTF8SMTP" : "ESMTP") : "SMTP"
        if esmtp && tlsActive { protocolName += "S" }
        if esmtp && authenticatedUser != nil { protocolName += "A" }
        var opened = Transaction(
            reversePath: reversePath, bodyType: parameters.body, smtpUTF8: parameters.smtpUTF8,
            declaredSize: parameters.size, heloName: heloName, protocolName: protocolName)
        opened.dsnReturn = parameters.dsnReturn
        opened.envelopeID = parameters.envelopeID
        // The paper's Test 3 prevented at the door: can bounces reach this sender's domain from here?
        if configuration.checkSenderReturnPath, case .mailbox(let sender) = reversePath,
            case .name(let domain) = sender.domain.kind
        {
            pendingTransaction = opened
            phase = .awaitingSenderCheck
            emit(.checkSender(domain: domain))
            return
        }
        transaction = opened
        reply(Reply(250, EnhancedStatus(2, 1, 0), "Ok"))
    }

    /// The driver's answer to `.checkSender`: 250 (perhaps with a warning noted in the transaction) or the
    /// rejection, then the input that arrived meanwhile.
    public mutating func senderChecked(_ result: SenderCheckResult) -> [ServerAction] {
        guard phase == .awaitingSenderCheck, var opened = pendingTransaction else { return [] }
        pendingTransaction = nil
        phase = .command
        switch result {
        case .accept:
            transaction = opened
            reply(Reply(250, EnhancedStatus(2, 1, 0), "Ok"))
        case .acceptWithWarning(let warning):
            opened.returnPathWarning = warning
            transaction = opened
            reply(Reply(250, EnhancedStatus(2, 1, 0), "Ok"))
            log("sender return path doubtful: \(warning)")
        case .reject(let rejection):
            fail(rejection)
            log("sender rejected: \(rejection.lines.joined(separator: " "))")
        }
        if phase == .closed { return takeActions() }
        return resume(after: "checking the sender")
    }

    private mutating func rcpt(_ argument: Substring) {
        guard var current = transaction else {
            return fail(Reply(503, EnhancedStatus(5, 5, 1), "Error: need MAIL command"))
        }
        let split: CommandSyntax.PathArgument
        switch CommandSyntax.splitPathArgument(argument, keyword: "TO:") {
        case .success(let value): split = value
        case .failure(.syntax): return fail(Reply(501, EnhancedStatus(5, 5, 4), "Syntax: RCPT TO:<address>"))
        case .failure(.badPath): return fail(Reply(501, EnhancedStatus(5, 1, 3), "Bad recipient address syntax"))
        }
        guard esmtp || split.parameters.isEmpty else {
            return fail(Reply(555, EnhancedStatus(5, 5, 4), "Error: RCPT parameters need EHLO"))
        }
        let parameters: CommandSyntax.RcptParameters
        switch CommandSyntax.parseRcptParameters(split.parameters) {
        case .success(let value): parameters = value
        case .failure(let rejection): return fail(rejection)
        }
        let path: ForwardPath
        switch PathParser.parse(split.path, allowUTF8: current.smtpUTF8, recipient: true) {
        case .success(.mailbox(let mailbox)): path = .mailbox(mailbox)
        case .success: path = .postmaster
        case .failure(.needsSMTPUTF8):
            return fail(Reply(553, EnhancedStatus(5, 6, 7), "Must declare SMTPUTF8 to send unicode address"))
        case .failure(.syntax):
            return fail(Reply(501, EnhancedStatus(5, 1, 3), "Bad recipient address syntax"))
        }
        let point = SessionFaultPoint(
            stage: .rcpt, sender: current.reversePath.description, recipients: [path.description])
        guard consultFaults(point) == .proceed else { return }
        guard current.recipients.count < configuration.maxRecipients else {
            // RFC 5321 §4.5.3.1.10: 452, and the client sends the rest later. It still counts toward the error
            // limit: a client repeating RCPT past the limit would otherwise get an answer to every line forever.
            return fail(Reply(452, EnhancedStatus(4, 5, 3), "Error: too many recipients"))
        }
        let rights = RelayRights(inRelayNetworks: clientMayRelay, authenticated: authenticatedUser != nil)
        switch configuration.policy.evaluate(path, clientMayRelay: rights.mayRelay) {
        case .success(let disposition):
            // Drop the stored copy first, or the append copies every recipient so far (quadratic in the count).
            transaction = nil
            current.recipients.append(
                AcceptedRecipient(
                    path: path, disposition: disposition, notify: parameters.notify,
                    originalRecipient: parameters.originalRecipient))
            transaction = current
            reply(Reply(250, EnhancedStatus(2, 1, 5), "Ok"))
        case .failure(let rejection):
            let reason = "\(rejection.code) \(rejection.lines.first ?? "")"
            log("RCPT <\(path)> from \(clientAddress.smtpLiteral) rejected: \(reason)")
            fail(rejection)
        }
    }

    private mutating func data(_ argument: Substring) {
        guard argument.isEmpty else { return fail(Reply(501, EnhancedStatus(5, 5, 4), "Syntax: DATA")) }
        guard let transaction else { return fail(Reply(503, EnhancedStatus(5, 5, 1), "Error: need MAIL command")) }
        guard !transaction.recipients.isEmpty else {
            return fail(Reply(503, EnhancedStatus(5, 5, 1), "Error: need RCPT command"))
        }
        guard consultFaults(Self.faultPoint(.data, transaction)) == .proceed else { return }
        reply(Reply(354, nil, "End data with <CR><LF>.<CR><LF>"))
        emit(.beginMessage(transaction))
        decoder = DataDecoder(
            textLineLimit: configuration.textLineLimit, maxSize: configuration.maxMessageSize,
            maxReceivedHeaders: configuration.maxReceivedHeaders)
        phase = .data
    }

    private mutating func startTLS(_ argument: Substring) {
        guard argument.isEmpty else { return fail(Reply(501, EnhancedStatus(5, 5, 4), "Syntax: STARTTLS")) }
        guard !tlsActive else { return fail(Reply(554, EnhancedStatus(5, 5, 1), "Error: TLS already active")) }
        guard configuration.tlsAvailable else {
            return fail(Reply(454, EnhancedStatus(4, 7, 0), "TLS not available due to local problem"))
        }
        reply(Reply(220, EnhancedStatus(2, 0, 0), "Ready to start TLS"))
        // CVE-2011-0411: nothing read in plaintext survives the handshake, and the client starts over.
        if readIndex < input.count {
            actions.append(
                .warning(
                    "discarded \(input.count - readIndex) octets pipelined after STARTTLS from \(clientAddress.smtpLiteral)"
                ))
        }
        discardInput()
        tlsActive = true
        heloName = nil
        esmtp = false
        transaction = nil
        authenticatedUser = nil
    }

    // MARK: AUTH (RFC 4954)

    private mutating func auth(_ argument: Substring) {
        guard tlsActive else {
            return fail(
                Reply(538, EnhancedStatus(5, 7, 11), "Encryption required for requested authentication mechanism"))
        }
        guard heloName != nil, esmtp else { return fail(Reply(503, EnhancedStatus(5, 5, 1), "Error: send EHLO first")) }
        guard authenticatedUser == nil else {
            return fail(Reply(503, EnhancedStatus(5, 5, 1), "Error: already authenticated"))
        }
        guard transaction == nil else {
            return fail(Reply(503, EnhancedStatus(5, 5, 1), "Error: MAIL transaction in progress"))
        }
        let parts = argument.split(separator: " ", omittingEmptySubsequences: false)
        guard (1...2).contains(parts.count), !parts[0].isEmpty, parts.count == 1 || !parts[1].isEmpty else {
            return fail(Reply(501, EnhancedStatus(5, 5, 4), "Syntax: AUTH mechanism [initial-response]"))
        }
        guard let mechanism = SASLMechanism(rawValue: asciiUppercased(parts[0])) else {
            return fail(Reply(504, EnhancedStatus(5, 5, 4), "Unrecognized authentication type"))
        }
        authExchange = (mechanism, nil)
        phase = .authResponse
        if parts.count == 2 {
            // "=" is an empty initial response (RFC 4954 §4).
            authResponse(parts[1] == "=" ? ArraySlice() : ArraySlice(parts[1].utf8), initial: true)
        } else {
            challenge(mechanism == .plain ? "" : "VXNlcm5hbWU6")  // base64 "Username:" (the LOGIN custom)
        }
    }

    private mutating func challenge(_ text: String) {
        reply(Reply(334, nil, text))
    }

    private mutating func endAuthExchange() {
        authExchange = nil
        if phase == .authResponse { phase = .command }
    }

    /// One client line of the exchange (or the initial response). Its content is never logged.
    private mutating func authResponse(_ line: ArraySlice<UInt8>, initial: Bool = false) {
        guard let exchange = authExchange else { return }
        if line.elementsEqual("*".utf8) {
            endAuthExchange()
            return fail(Reply(501, EnhancedStatus(5, 7, 0), "Authentication aborted"))
        }
        guard let decoded = Base64.decode(String(decoding: line, as: UTF8.self)) else {
            endAuthExchange()
            return fail(Reply(501, EnhancedStatus(5, 5, 2), "Error: invalid base64 data"))
        }
        switch exchange.mechanism {
        case .plain:
            if initial && decoded.isEmpty {
                return challenge("")  // "AUTH PLAIN =": an empty initial response, the credentials follow
            }
            switch SASL.plain(decoded) {
            case .failure:
                endAuthExchange()
                fail(Reply(501, EnhancedStatus(5, 5, 2), "Error: invalid authentication data"))
            case .success(let (authorizationID, credentials)):
                if !authorizationID.isEmpty && authorizationID != credentials.user {
                    // Acting as another user is not supported: the same answer as a wrong password.
                    endAuthExchange()
                    return rejectCredentials(user: credentials.user)
                }
                verify(credentials)
            }
        case .login:
            guard let field = SASL.loginField(decoded) else {
                endAuthExchange()
                return fail(Reply(501, EnhancedStatus(5, 5, 2), "Error: invalid authentication data"))
            }
            if let user = exchange.user {
                verify(Credentials(user: user, password: field))
            } else {
                authExchange = (.login, field)
                challenge("UGFzc3dvcmQ6")  // base64 "Password:"
            }
        }
    }

    private mutating func verify(_ credentials: Credentials) {
        authExchange = nil
        pendingUser = credentials.user
        phase = .awaitingAuthentication
        emit(.authenticate(credentials))
    }
}
