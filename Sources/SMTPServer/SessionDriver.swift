import Dispatch
import Foundation
import Logging
import Metrics
import NetAddress
import SMTPProtocol
import Sockets
import Spool
import TLS

/// Connects one socket to one `ServerSession`: bytes in, actions out. The session decides everything; the driver
/// only performs the actions (write replies, stream the message into the spool, commit it off the queue, close).
///
/// TLS is a byte filter between the socket and the session: after the 220 to STARTTLS (or at once on an implicit-TLS
/// listener) every socket read goes through `TLSSession.consumeFromNetwork`/`handshake`/`readPlaintext` and every
/// reply through `writePlaintext`; whatever the TLS session produced for the network is sent after each call. The
/// session already dropped the plaintext that came with STARTTLS (CVE-2011-0411), and the TLS session only ever
/// sees bytes read after it was created.
///
/// Confinement: every mutable field is touched only on `queue`, the connection's serial queue. The blocking steps
/// run elsewhere and report back to `queue`: the commit (fsync + rename) in the server's group commit, the password
/// check on its auth queue, the sender's DNS check on its blocking queue.
final class SessionDriver: @unchecked Sendable {
    let connection: Connection
    private unowned let server: SMTPServer
    private let queue: DispatchQueue
    private var session: ServerSession
    private var logger: Logger
    private var message: IncomingMessage?
    private var messageError: SpoolError?
    /// The command timeout (see `armTimer`); created with the driver, its Dispatch source at the first arm.
    private lazy var timer = DeadlineTimer(queue: queue) { [weak self] in self?.timerFired() }
    private var finished = false
    /// Input since the command timer was last armed (see `received`).
    private var bytesSinceTimerArmed = 0
    static let progressBytes = 4096
    private let kind: ListenerKind
    /// The TLS filter, once STARTTLS was answered 220 (or from the start on an implicit-TLS listener).
    private var tls: TLSSession?
    /// Set when the handshake completed.
    private var tlsDescription: TLSDescription?
    private var greeted = false
    private var authFailures = 0
    /// Actions held back by a fault rule's delay (reading is paused meanwhile); nil when nothing is held.
    private var held: [ServerAction]?
    /// A fault rule's reset: the coming close sends a RST.
    private var resetOnClose = false

    init(server: SMTPServer, connection: Connection, queue: DispatchQueue, mayRelay: Bool, kind: ListenerKind) {
        self.server = server
        self.connection = connection
        self.queue = queue
        self.kind = kind
        var configuration = server.configuration.session
        configuration.tlsAvailable = server.configuration.tlsContext != nil
        configuration.submission = kind.requiresAuthentication
        var logger = server.logger
        logger[metadataKey: "client"] = "\(connection.peer.ip.smtpLiteral)"
        if kind != .smtp { logger[metadataKey: "service"] = "\(kind.rawValue)" }
        configuration.faults = InboundFaults.hook(
            book: server.configuration.faults, connection: connection, logger: logger)
        self.session = ServerSession(
            configuration: configuration, clientAddress: connection.peer.ip, clientMayRelay: mayRelay,
            implicitTLS: kind == .submissions)
        self.logger = logger
    }

    /// Kernel send buffer of a session's socket: replies are short, so this only limits what a peer that never
    /// reads can make the kernel hold for it before our own back-pressure stops reading its commands.
    static let kernelSendBuffer = 64 * 1024

    func start() {
        logger.debug("connect", metadata: ["local": "\(connection.local)"])
        connection.limitKernelSendBuffer(to: Self.kernelSendBuffer)
        // Bytes already waiting before our greeting: an early talker (a spam bot or a smuggling probe).
        let earlyInput = kind == .submissions ? false : connection.hasPendingInput()
        // Reading starts first, so a peer that resets while we greet reaches peerClosed and frees its slot at once.
        connection.startReading(
            { [self] bytes in received(bytes) },
            onClose: { [self] error in peerClosed(error) })
        if kind == .submissions {
            // RFC 8314 §3.3: TLS from the first byte; the greeting goes out once the handshake is done.
            guard beginTLS() else { return }
        } else {
            greeted = true
            perform(session.start(earlyInput: earlyInput))
            guard !finished else { return }
        }
        armTimer()
    }

    /// Called on another queue when the server stops: answer 421 and close.
    func shutDown() {
        queue.async { [self] in
            guard !finished else { return }
            if session.awaitingCommit { return }  // the commit finishes first; its 250 must not be lost
            if !greeted { return abandon() }  // an implicit-TLS handshake in progress: nothing to say
            perform(session.shuttingDown())
        }
    }

    private func received(_ bytes: UnsafeRawBufferPointer) {
        guard !finished else { return }
        // The deadline restarts with each reply (a command was completed) and with every few KiB of DATA, never for
        // a trickle: a slowloris peer sending a byte a second is cut off at command_timeout.
        bytesSinceTimerArmed += bytes.count
        if bytesSinceTimerArmed >= Self.progressBytes { armTimer() }
        guard let tls else { return deliver(bytes) }
        let (events, output) = tls.pump(bytes)
        if !output.isEmpty { connection.write(output) }
        // On an implicit-TLS listener the greeting goes out once the handshake is done; plaintext that came with the
        // handshake is input before the greeting, the same synchronisation error as in the clear.
        var earlyInputTaken = false
        for event in events {
            guard !finished else { return }
            switch event {
            case .established:
                handshakeCompleted(tls)
                guard !greeted else { break }
                greeted = true
                for case .plaintext(let early) in events { _ = session.receive(early) }
                earlyInputTaken = true
                perform(session.start(earlyInput: false))
            case .plaintext(let plaintext):
                if !earlyInputTaken { deliver(plaintext) }
            case .closed:
                peerClosed(nil)
            case .failed(let error, duringHandshake: true):
                logger.notice("tls-handshake-failed", metadata: ["reason": "\(error)"])
                abandon()
            case .failed(let error, duringHandshake: false):
                logger.notice("tls-error", metadata: ["reason": "\(error)"])
                abandon()
            }
        }
    }

    /// Plaintext for the session; starts the TLS filter right after the session answered STARTTLS with 220.
    private func deliver(_ bytes: some Collection<UInt8>) {
        session.storageAvailable = server.storageAvailable()
        perform(session.receive(bytes))
        if session.tlsActive && tls == nil && !finished { _ = beginTLS() }
    }

    /// Creates the server-side TLS session; on failure logs and closes. Returns whether TLS is on.
    private func beginTLS() -> Bool {
        guard let context = server.configuration.tlsContext else {
            logger.error("tls-unavailable", metadata: ["reason": "no TLS context"])
            abandon()
            return false
        }
        do throws(TLSError) {
            tls = try TLSSession(context: context, role: .server)
            return true
        } catch {
            logger.error("tls-unavailable", metadata: ["reason": "\(error)"])
            abandon()
            return false
        }
    }

    private func handshakeCompleted(_ tls: TLSSession) {
        let description = TLSDescription(
            protocolVersion: tls.protocolVersion ?? "unknown", cipher: tls.cipherName ?? "unknown", bits: tls.cipherBits
        )
        tlsDescription = description
        armTimer()
        logger.info("tls", metadata: ["tls": "\(description.protocolVersion)", "cipher": "\(description.cipher)"])
    }

    /// Sends what the TLS session produced for the peer (records, alerts, close_notify).
    private func flushTLS() {
        guard let tls else { return }
        let output = tls.getDataForNetwork()
        if !output.isEmpty { connection.write(output) }
    }

    private func send(_ bytes: [UInt8]) {
        guard let tls else { return connection.write(bytes) }
        // .incomplete: a reply before the handshake finished (a timeout's 421); the peer cannot read it anyway.
        if case .failed(let error) = tls.writePlaintext(bytes), error != .closed {
            logger.notice("tls-error", metadata: ["reason": "\(error)"])
        }
        flushTLS()
    }

    private func perform(_ actions: [ServerAction]) {
        for (position, action) in actions.enumerated() {
            if held != nil {
                held?.append(contentsOf: actions[position...])
                return
            }
            switch action {
            case .send(let bytes):
                armTimer()
                send(bytes)
            case .beginMessage(let transaction):
                beginMessage(transaction)
            case .messageData(let bytes):
                appendToMessage(bytes)
            case .commitMessage(let transaction):
                commit(transaction)
            case .abortMessage:
                abortMessage()
            case .close:
                finish()
            case .log(let reason):
                logger.notice("rejected", metadata: ["reason": "\(reason)"])
            case .warning(let reason):
                logger.warning("warning", metadata: ["reason": "\(reason)"])
            case .authenticate(let credentials):
                authenticate(credentials)
            case .checkSender(let domain):
                checkSender(domain)
            case .pause(let milliseconds):
                hold(for: milliseconds)
            case .reset:
                resetOnClose = true
            }
        }
    }

    /// A fault rule's delay: nothing goes out and nothing is read until it passes, then the held actions run in
    /// order. A Dispatch timer, never a sleep: the queue serves other work meanwhile.
    private func hold(for milliseconds: Int64) {
        held = []
        connection.pauseReading()
        queue.asyncAfter(deadline: .now() + .milliseconds(Int(milliseconds))) { [self] in
            let actions = held ?? []
            held = nil
            guard !finished else { return }
            connection.resumeReading()
            armTimer()
            perform(actions)
        }
    }

    /// Runs the sender's return-path check (DNS) off the connection's queue; without a checker, accept.
    private func checkSender(_ domain: String) {
        guard let checker = server.configuration.senderCheck else {
            perform(session.senderChecked(.accept))
            return
        }
        connection.pauseReading()
        server.blockingQueue.async { [self] in
            let result = checker(domain)
            queue.async { [self] in
                guard !finished else { return }
                perform(session.senderChecked(result))
                if !finished {
                    connection.resumeReading()
                    armTimer()
                }
            }
        }
    }

    /// Runs the password check on the auth queue; a failure is answered after a delay that grows with each failure
    /// in this session (a brute-force client gets ever slower answers, and only `maxAuthFailures` of them).
    private func authenticate(_ credentials: Credentials) {
        guard let users = server.configuration.users else {
            perform(session.authenticationFinished(.temporaryFailure))
            return
        }
        connection.pauseReading()
        let delay = server.configuration.authFailureDelay * (authFailures + 1)
        let keys = AuthFailureTable.keys(address: connection.peer.ip, user: credentials.user)
        let now = Self.monotonicSeconds()
        if let key = server.authFailureTable.withLock({ $0.blocked(keys, now: now) }) {
            return refuseThrottled(user: credentials.user, overLimit: key, after: delay)
        }
        server.authQueue.async { [self] in
            let outcome = users.verify(credentials)
            let wait = outcome == .invalidCredentials ? delay : .zero
            switch outcome {
            case .invalidCredentials:
                server.authFailureTable.withLock { $0.recordFailure(keys, now: Self.monotonicSeconds()) }
            case .success:
                server.authFailureTable.withLock { $0.recordSuccess(user: credentials.user) }
            case .temporaryFailure, .throttled:
                break
            }
            queue.asyncAfter(deadline: .now() + wait.dispatchInterval) { [self] in
                authenticated(outcome, user: credentials.user)
            }
        }
    }

    /// Over the failure limit across connections: no password check at all (a right guess must not tell), the
    /// same growing delay as a failure, then 454 4.7.0.
    private func refuseThrottled(user: String, overLimit key: AuthFailureTable.Key, after delay: Duration) {
        let by = key.isAddress ? "address" : "user"
        logger.notice(
            "auth-throttled", metadata: ["by": "\(by)", "user": "\(PasswordHash.isValidUserName(user) ? user : "?")"])
        DualMTAMetrics.registry.increment(DualMTAMetrics.authThrottled, ["by": by])
        queue.asyncAfter(deadline: .now() + delay.dispatchInterval) { [self] in
            authenticated(.throttled, user: user)
        }
    }

    /// Seconds on a clock that never jumps (the failure table's time base).
    static func monotonicSeconds() -> Double {
        Double(DispatchTime.now().uptimeNanoseconds) / 1e9
    }

    private func authenticated(_ outcome: AuthenticationOutcome, user: String) {
        guard !finished else { return }
        switch outcome {
        case .success:
            logger.info("authenticated", metadata: ["user": "\(PasswordHash.isValidUserName(user) ? user : "?")"])
        case .invalidCredentials, .throttled: authFailures += 1
        case .temporaryFailure:
            logger.error("auth-unavailable", metadata: ["users_file": "\(server.configuration.users?.path ?? "")"])
        }
        perform(session.authenticationFinished(outcome))
        if !finished {
            connection.resumeReading()
            armTimer()
        }
    }

    private func beginMessage(_ transaction: Transaction) {
        messageError = nil
        do throws(SpoolError) {
            let message = try server.spool.begin()
            let header = ReceivedHeader.make(
                heloName: transaction.heloName, clientAddress: connection.peer.ip,
                hostname: server.configuration.session.hostname, protocolName: transaction.protocolName,
                queueID: message.id.rawValue, recipients: transaction.recipients.map(\.path),
                date: MailDate.rfc5322(Int64(Date().timeIntervalSince1970)), tls: tlsDescription,
                authenticatedUser: session.authenticatedUser)
            try message.append(Array(header.utf8))
            if let warning = transaction.returnPathWarning {
                // Header text is ours (planner wording), but keep it one line whatever it says.
                let clean = warning.map { $0.isNewline ? " " : $0 }
                try message.append(Array("X-Dualmta-Return-Path-Warning: \(String(clean))\r\n".utf8))
            }
            self.message = message
        } catch {
            messageError = error
            logger.error("spool-write-failed", metadata: ["reason": "\(error)"])
        }
    }

    private func appendToMessage(_ bytes: [UInt8]) {
        guard let message, messageError == nil else { return }
        do throws(SpoolError) {
            try message.append(bytes)
        } catch {
            messageError = error
            logger.error("spool-write-failed", metadata: ["id": "\(message.id)", "reason": "\(error)"])
        }
    }

    private func abortMessage() {
        if let message { server.spool.abort(message) }
        message = nil
        messageError = nil
    }

    /// Makes the message durable off the session queue; only then does the session send its 250.
    private func commit(_ transaction: Transaction) {
        guard let message, messageError == nil else {
            let reply = messageError?.smtpReply ?? .queueWriteError
            abortMessage()
            perform(session.commitFailed(reply))
            return
        }
        self.message = nil
        connection.pauseReading()
        var arriving = Envelope(
            arriving: message.id, sender: transaction.reversePath.description,
            recipients: transaction.recipients.map {
                RecipientRecord(
                    address: $0.path.description, notify: $0.notify, originalRecipient: $0.originalRecipient)
            },
            client: connection.peer.ip.description, heloName: transaction.heloName,
            protocolName: transaction.protocolName, bodyType: transaction.bodyType?.rawValue,
            smtpUTF8: transaction.smtpUTF8, messageSize: message.size, now: Int64(Date().timeIntervalSince1970),
            dsnReturn: transaction.dsnReturn, envelopeID: transaction.envelopeID)
        arriving.held = server.configuration.holdIncoming
        let envelope = arriving
        server.groupCommit.submit(message, envelope: envelope) { [self] result in
            queue.async { [self] in committed(envelope, result: result) }
        }
    }

    private func committed(_ envelope: Envelope, result: Result<Void, SpoolError>) {
        switch result {
        case .success:
            CrashPoint.hit("server.committed")
            var metadata: Logger.Metadata = [
                "id": "\(envelope.id)", "from": "<\(envelope.sender)>", "size": "\(envelope.messageSize)",
                "nrcpt": "\(envelope.recipients.count)", "helo": "\(envelope.heloName)",
                "proto": "\(envelope.protocolName)", "family": "\(connection.peer.family)",
            ]
            if let tlsDescription {
                metadata["tls"] = "\(tlsDescription.protocolVersion)"
                metadata["cipher"] = "\(tlsDescription.cipher)"
            }
            if let user = session.authenticatedUser, PasswordHash.isValidUserName(user) {
                metadata["user"] = "\(user)"
            }
            if envelope.held { metadata["held"] = "yes" }
            logger.info("accepted", metadata: metadata)
            DualMTAMetrics.registry.increment(
                DualMTAMetrics.messagesAccepted, ["family": connection.local.family.rawValue])
            server.onQueued(envelope.id)
            guard !finished else { return }
            perform(session.commitSucceeded(queueID: envelope.id.rawValue))
            CrashPoint.hit("server.replied")
        case .failure(let error):
            logger.error("commit-failed", metadata: ["id": "\(envelope.id)", "reason": "\(error)"])
            guard !finished else { return }
            perform(session.commitFailed(error.smtpReply))
        }
        if !finished {
            connection.resumeReading()
            armTimer()
        }
    }

    private func peerClosed(_ error: SocketError?) {
        guard !finished else { return }
        if session.awaitingCommit {
            // The commit completes on its own; its 250 has nobody to go to, but the message is safe.
            finished = true
            cleanUp()
            return
        }
        if message != nil { logger.notice("lost-connection", metadata: ["reason": "client closed during DATA"]) }
        abortMessage()
        finished = true
        cleanUp()
    }

    private func finish() {
        guard !finished else { return }
        finished = true
        abortMessage()
        if let tls {
            tls.shutdown()  // close_notify after the last reply
            flushTLS()
        }
        if resetOnClose { connection.reset() } else { connection.close(afterFlush: true) }
        cleanUp()
    }

    /// Closes after a TLS failure: whatever the TLS session still has for the peer (an alert) goes out first.
    private func abandon() {
        guard !finished else { return }
        finished = true
        abortMessage()
        connection.close(afterFlush: true)
        cleanUp()
    }

    private func cleanUp() {
        timer.cancel()
        if !connection.isClosed { connection.close(afterFlush: false) }
        server.sessionEnded(self)
    }

    /// RFC 5321 §4.5.3.2: the server waits a bounded time for each command (and each DATA chunk).
    private func armTimer() {
        bytesSinceTimerArmed = 0
        guard !finished else { return }
        timer.arm(after: server.configuration.commandTimeout)
    }

    private func timerFired() {
        guard !finished else { return }
        if session.awaitingCommit || session.awaitingAuthentication || session.awaitingSenderCheck || held != nil {
            armTimer()
            return
        }
        logger.notice("timeout", metadata: ["reason": "no command within \(server.configuration.commandTimeout)"])
        perform(session.timedOut())
    }
}

extension Duration {
    var dispatchInterval: DispatchTimeInterval {
        let (seconds, attoseconds) = components
        return .nanoseconds(Int(seconds) * 1_000_000_000 + Int(attoseconds / 1_000_000_000))
    }
}
