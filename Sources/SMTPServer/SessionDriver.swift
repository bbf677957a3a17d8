import Dispatch
import Foundation
import Logging
import NetAddress
import SMTPProtocol
import Sockets
import Spool

/// Connects one socket to one `ServerSession`: bytes in, actions out. The session decides everything; the driver
/// only performs the actions (write replies, stream the message into the spool, commit it off the queue, close).
///
/// Confinement: every mutable field is touched only on `queue`, the connection's serial queue. The one blocking
/// step, the commit (fsync + rename), runs on the server's commit queue and reports back to `queue`.
final class SessionDriver: @unchecked Sendable {
    let connection: Connection
    private unowned let server: SMTPServer
    private let queue: DispatchQueue
    private var session: ServerSession
    private var logger: Logger
    private var message: IncomingMessage?
    private var messageError: SpoolError?
    private var timer: DispatchSourceTimer?
    private var finished = false

    init(server: SMTPServer, connection: Connection, queue: DispatchQueue, mayRelay: Bool) {
        self.server = server
        self.connection = connection
        self.queue = queue
        self.session = ServerSession(
            configuration: server.configuration.session, clientAddress: connection.peer.ip, clientMayRelay: mayRelay)
        var logger = server.logger
        logger[metadataKey: "client"] = "\(connection.peer.ip.smtpLiteral)"
        self.logger = logger
    }

    func start() {
        logger.debug("connect", metadata: ["local": "\(connection.local)"])
        // Bytes already waiting before our greeting: an early talker (a spam bot or a smuggling probe).
        perform(session.start(earlyInput: connection.hasPendingInput()))
        guard !finished else { return }
        connection.startReading(
            { [self] bytes in received(bytes) },
            onClose: { [self] error in peerClosed(error) })
        armTimer()
    }

    /// Called on another queue when the server stops: answer 421 and close.
    func shutDown() {
        queue.async { [self] in
            guard !finished else { return }
            if session.awaitingCommit { return }  // the commit finishes first; its 250 must not be lost
            perform(session.shuttingDown())
        }
    }

    private func received(_ bytes: UnsafeRawBufferPointer) {
        guard !finished else { return }
        session.storageAvailable = server.storageAvailable()
        armTimer()
        perform(session.receive(bytes))
    }

    private func perform(_ actions: [ServerAction]) {
        for action in actions {
            switch action {
            case .send(let bytes):
                connection.write(bytes)
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
            }
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
                date: RFC5322Date.format(Date()))
            try message.append(Array(header.utf8))
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
            let full = messageError == .insufficientStorage
            abortMessage()
            perform(
                session.commitFailed(
                    full
                        ? Reply(452, EnhancedStatus(4, 3, 1), "Insufficient system storage")
                        : Reply(451, EnhancedStatus(4, 3, 0), "Error: queue file write error")))
            return
        }
        self.message = nil
        connection.pauseReading()
        let now = Int64(Date().timeIntervalSince1970)
        let envelope = Envelope(
            id: message.id, sender: transaction.reversePath.description, arrival: now,
            client: connection.peer.ip.description, heloName: transaction.heloName,
            protocolName: transaction.protocolName, bodyType: transaction.bodyType?.rawValue,
            smtpUTF8: transaction.smtpUTF8, messageSize: message.size, nextAttempt: now, held: false,
            delayWarned: false,
            recipients: transaction.recipients.map {
                RecipientRecord(
                    address: $0.path.description, state: .pending, lastReply: nil, lastStatus: nil, updated: nil)
            },
            attempts: [], extra: [:])
        let spool = server.spool
        server.commitQueue.async { [self] in
            let result: Result<Void, SpoolError>
            do throws(SpoolError) {
                try spool.commit(message, envelope: envelope)
                result = .success(())
            } catch {
                result = .failure(error)
            }
            queue.async { [self] in committed(envelope, result: result) }
        }
    }

    private func committed(_ envelope: Envelope, result: Result<Void, SpoolError>) {
        switch result {
        case .success:
            logger.info(
                "accepted",
                metadata: [
                    "id": "\(envelope.id)", "from": "<\(envelope.sender)>", "size": "\(envelope.messageSize)",
                    "nrcpt": "\(envelope.recipients.count)", "helo": "\(envelope.heloName)",
                    "proto": "\(envelope.protocolName)", "family": "\(connection.peer.family)",
                ])
            server.onQueued(envelope.id)
            guard !finished else { return }
            perform(session.commitSucceeded(queueID: envelope.id.rawValue))
        case .failure(let error):
            logger.error("commit-failed", metadata: ["id": "\(envelope.id)", "reason": "\(error)"])
            guard !finished else { return }
            let reply =
                error == .insufficientStorage
                ? Reply(452, EnhancedStatus(4, 3, 1), "Insufficient system storage")
                : Reply(451, EnhancedStatus(4, 3, 0), "Error: queue file write error")
            perform(session.commitFailed(reply))
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
        connection.close(afterFlush: true)
        cleanUp()
    }

    private func cleanUp() {
        timer?.cancel()
        timer = nil
        if !connection.isClosed { connection.close(afterFlush: false) }
        server.sessionEnded(self)
    }

    /// RFC 5321 §4.5.3.2: the server waits a bounded time for each command (and each DATA chunk).
    private func armTimer() {
        timer?.cancel()
        let timer = DispatchSource.makeTimerSource(queue: queue)
        timer.schedule(deadline: .now() + server.configuration.commandTimeout.dispatchInterval)
        timer.setEventHandler { [weak self] in self?.timerFired() }
        timer.resume()
        self.timer = timer
    }

    private func timerFired() {
        guard !finished else { return }
        if session.awaitingCommit {
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

/// RFC 5322 §3.3 date-time in UTC, e.g. `Sun, 29 Nov 2026 01:33:35 +0000`.
public enum RFC5322Date {
    public static func format(_ date: Date) -> String {
        var time = time_t(date.timeIntervalSince1970)
        var parts = tm()
        gmtime_r(&time, &parts)
        let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return "\(days[Int(parts.tm_wday)]), \(two(parts.tm_mday)) \(months[Int(parts.tm_mon)]) "
            + "\(parts.tm_year + 1900) \(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)) +0000"
    }
}
