import Dispatch
import Glibc
import SMTPProtocol
import Sockets
import TLS

/// A failed outbound connect, with the text an operator expects in the log ("Connection refused",
/// "No route to host", "connect timed out"). Every connect failure is "this host, not this message":
/// the caller tries the next address, and defers with 4.4.1 when none is left (RFC 5321 §5.1, §4.5.4.1).
public struct ConnectError: Error, Equatable, Sendable, CustomStringConvertible {
    public var address: SocketAddress
    public var error: SocketError

    public init(address: SocketAddress, error: SocketError) {
        self.address = address
        self.error = error
    }

    /// The reason alone: strerror text for a failed connect(), "connect timed out", else the socket error.
    public var reason: String {
        switch error {
        case .system(call: "connect", let code): return errnoText(code)
        case .timedOut: return "connect timed out"
        default: return error.description
        }
    }

    public var description: String { "connect to \(address): \(reason)" }

    /// The temporary reply to record for the recipients (4.4.1: no answer from host).
    public var reply: Reply { Reply(421, EnhancedStatus(4, 4, 1), description) }
}

/// The outcome of one delivery attempt to one address.
public struct DeliveryAttemptResult: Sendable {
    public enum Outcome: Sendable {
        /// No session: the connect failed.
        case connectFailed(ConnectError)
        /// The session ran (to its end or not); per-recipient outcomes inside.
        case session(ClientResult)
        /// The stored message could not be opened or examined; nothing was attempted (local, temporary 4.3.0).
        case messageUnreadable(String)
    }

    public var address: SocketAddress
    public var outcome: Outcome
    /// Our end of the connection, when one was made (for the log).
    public var localAddress: SocketAddress?
    /// The socket error that ended the session, if the connection failed rather than closed (ECONNRESET, ...).
    public var socketError: SocketError?
    /// From the call to `deliver` to the completion.
    public var elapsedMilliseconds: Int
    /// The TLS parameters when the session ran over STARTTLS (for the `tls=` and `cipher=` log items).
    public var tls: TLSDescription? = nil
    /// The outbound TLS policy that applied to this attempt (`tls_policy=` in the log), when one was chosen.
    public var tlsPolicy: ClientTLSPolicy? = nil
    /// Set when a TLS handshake failed with `smtp_tls = may` and this result is from the plaintext retry on a new
    /// connection to the same address (Postfix's behaviour); the handshake's failure reason, for the log.
    public var plaintextRetryReason: String? = nil
    /// The fault rule that made this attempt fail or answer as it did (`fault=` in the log), if one fired.
    public var fault: String? = nil
}

/// One SMTP transaction to one address over TCP: connect, drive a `ClientSession` (one deadline per stage),
/// stream the stored message, close. Routing (which address next) and the spool update are the caller's.
public final class RemoteDelivery {
    private init() {}

    /// The opportunistic client context (RFC 7435: no certificate verification), shared by every attempt; nil
    /// only if OpenSSL cannot make a context at all, which then counts as a failed handshake.
    static let opportunisticTLS: TLSContext? = try? TLSContext.client(verifyPeer: false)

    /// Runs one delivery attempt; `completion` is called exactly once, on `queue` (a serial queue: the connection
    /// and the timers run on it too).
    ///
    /// The message file is opened and measured on the calling thread (two quick system calls) so that a missing
    /// file costs no connection; the body is then read in 64 KiB chunks on a utility queue, one chunk at a time
    /// (the next read starts when the previous chunk is in the kernel), and encoded with `OutboundBody`.
    public static func deliver(
        to address: SocketAddress, _ request: AttemptRequest, queue: DispatchQueue,
        completion: @escaping @Sendable (DeliveryAttemptResult) -> Void
    ) {
        let started = ContinuousClock.now
        guard
            let prepared = prepare(
                to: address, request, queue: queue, started: started, completion: completion,
                unreadable: { result in queue.async { completion(result) } })
        else { return }
        _ = FaultableConnect.connect(
            to: address, from: request.source, timeout: request.connectTimeout, queue: queue,
            fault: request.connectFault
        ) { result in
            switch result {
            case .failure(let error):
                prepared.file.close()
                completion(
                    DeliveryAttemptResult(
                        address: address, outcome: .connectFailed(ConnectError(address: address, error: error)),
                        localAddress: nil, socketError: nil, elapsedMilliseconds: elapsedMilliseconds(since: started)))
            case .success(let connection):
                prepared.run(
                    on: OutboundChannel(connection: connection), address: address, request, started: started,
                    completion: completion)
            }
        }
    }
}

/// Everything one attempt needs besides the address: what to send and how.
public struct AttemptRequest: Sendable {
    /// The local address to bind (same family), or nil.
    public var source: SocketAddress?
    /// Deadline for the TCP handshake.
    public var connectTimeout: Duration
    /// The per-stage SMTP deadlines.
    public var timeouts: ClientTimeouts
    /// Our EHLO/HELO name.
    public var heloName: String
    /// Reverse-path without brackets, "" for `<>`.
    public var sender: String
    /// Forward-paths without brackets.
    public var recipients: [String]
    /// Path of the stored message (CRLF line ends, as the spool keeps it).
    public var messageFile: String
    /// The `BODY=` to declare, or nil.
    public var bodyType: BodyType?
    /// Whether the message needs SMTPUTF8.
    public var smtpUTF8: Bool
    /// `smtp_tls` (or `smtp_tls_policy` for the destination). With `.may`, a failed handshake is retried once on a
    /// new connection without TLS (the result then carries `plaintextRetryReason`).
    public var tlsPolicy: ClientTLSPolicy
    /// SNI for STARTTLS: the MX host name (nil for an address literal).
    public var serverName: String?
    /// NOTIFY/ORCPT/RET/ENVID to pass on when the next hop offers DSN.
    public var dsn: OutboundDSN?
    /// For an 8-bit message, what to send to a next hop without 8BITMIME.
    public var sevenBitBody: SevenBitBody?
    /// Lab fault rules: what replaces the connect, and the hook for the session's replies (OutboundFaults.swift).
    var connectFault: ConnectInjection? = nil
    var faults: OutboundFaults? = nil
    /// Where a session that ends in good order is parked instead of QUIT; nil: always QUIT.
    var connectionCache: ConnectionCache? = nil

    /// The cache key of a session to `address` made with this request.
    func connectionKey(_ address: SocketAddress) -> ConnectionKey {
        ConnectionKey(
            address: address, source: source, heloName: heloName, tlsPolicy: tlsPolicy, serverName: serverName)
    }

    public init(
        source: SocketAddress?, connectTimeout: Duration, timeouts: ClientTimeouts, heloName: String, sender: String,
        recipients: [String], messageFile: String, bodyType: BodyType?, smtpUTF8: Bool,
        tlsPolicy: ClientTLSPolicy = .none, serverName: String? = nil, dsn: OutboundDSN? = nil,
        sevenBitBody: SevenBitBody? = nil
    ) {
        self.dsn = dsn
        self.sevenBitBody = sevenBitBody
        self.source = source
        self.connectTimeout = connectTimeout
        self.timeouts = timeouts
        self.heloName = heloName
        self.sender = sender
        self.recipients = recipients
        self.messageFile = messageFile
        self.bodyType = bodyType
        self.smtpUTF8 = smtpUTF8
        self.tlsPolicy = tlsPolicy
        self.serverName = serverName
    }
}

extension RemoteDelivery {
    /// Runs one delivery attempt over a connection that is already established (the winner of a Happy Eyeballs
    /// race); the connection is closed when the attempt ends. `completion` is called exactly once, on the
    /// connection's queue. `request.source` and `request.connectTimeout` are used only by the plaintext retry of
    /// `smtp_tls = may`, which connects again to the same address. `started` is when the winning connect began, so
    /// `elapsedMilliseconds` includes the handshake.
    public static func deliver(
        over connection: Connection, _ request: AttemptRequest, started: ContinuousClock.Instant = .now,
        completion: @escaping @Sendable (DeliveryAttemptResult) -> Void
    ) {
        let queue = connection.queue
        let address = connection.peer
        guard
            let prepared = prepare(
                to: address, request, queue: queue, started: started, completion: completion,
                unreadable: { result in
                    queue.async {
                        connection.close(afterFlush: false)
                        completion(result)
                    }
                })
        else { return }
        queue.async {
            prepared.run(
                on: OutboundChannel(connection: connection), address: address, request, started: started,
                completion: completion)
        }
    }

    /// Runs one delivery attempt on a parked connection taken from the cache: the session starts at MAIL with what
    /// the connection's first session learnt. `completion` is called exactly once, on the connection's queue.
    static func deliver(
        reusing channel: OutboundChannel, _ request: AttemptRequest,
        completion: @escaping @Sendable (DeliveryAttemptResult) -> Void
    ) {
        let queue = channel.queue
        let address = channel.connection.peer
        let started = ContinuousClock.now
        guard
            let prepared = prepare(
                to: address, request, queue: queue, started: started, completion: completion,
                resuming: channel.resumption,
                unreadable: { result in
                    // Nothing was sent: the session goes back to the cache as it was.
                    queue.async {
                        if let cache = request.connectionCache {
                            cache.park(channel, key: request.connectionKey(address))
                        } else {
                            channel.quit()
                        }
                        completion(result)
                    }
                })
        else { return }
        queue.async {
            prepared.run(on: channel, address: address, request, started: started, completion: completion)
        }
    }

    /// What both entry points need before a session can start: the opened message file, the client session and
    /// the plaintext retry of `smtp_tls = may`. Nil (after `unreadable` got the result) when the file cannot be read.
    fileprivate static func prepare(
        to address: SocketAddress, _ request: AttemptRequest, queue: DispatchQueue, started: ContinuousClock.Instant,
        completion: @escaping @Sendable (DeliveryAttemptResult) -> Void,
        resuming: ClientSession.Resumption? = nil,
        unreadable: (DeliveryAttemptResult) -> Void
    ) -> PreparedAttempt? {
        let file: OutboundMessageFile
        do throws(OutboundMessageFile.OpenError) {
            file = try OutboundMessageFile(path: request.messageFile)
        } catch {
            unreadable(
                DeliveryAttemptResult(
                    address: address, outcome: .messageUnreadable(error.description), localAddress: nil,
                    socketError: nil, elapsedMilliseconds: elapsedMilliseconds(since: started)))
            return nil
        }
        var session = ClientSession(
            heloName: request.heloName, sender: request.sender, recipients: request.recipients,
            messageSize: file.size, bodyType: request.bodyType, needsSMTPUTF8: request.smtpUTF8,
            tlsPolicy: request.tlsPolicy, dsn: request.dsn, sevenBit: request.sevenBitBody?.option ?? .unavailable(nil),
            resuming: resuming, keepOpen: request.connectionCache != nil)
        session.faultHook = request.faults?.hook
        let retryInPlaintext = plaintextRetry(
            to: address, request, queue: queue, started: started, completion: completion)
        return PreparedAttempt(
            file: file, session: session, retryInPlaintext: retryInPlaintext, faults: request.faults)
    }

    /// Opportunistic TLS: `may` + a failed handshake → the same address once more, in plaintext (as Postfix does);
    /// nil for any other policy.
    fileprivate static func plaintextRetry(
        to address: SocketAddress, _ request: AttemptRequest, queue: DispatchQueue, started: ContinuousClock.Instant,
        completion: @escaping @Sendable (DeliveryAttemptResult) -> Void
    ) -> (@Sendable (String) -> Void)? {
        guard request.tlsPolicy == .may else { return nil }
        var plaintext = request
        plaintext.tlsPolicy = .none
        plaintext.connectFault = nil  // the rule was for the first connect
        return { @Sendable [plaintext] reason in
            let retryCompletion: @Sendable (DeliveryAttemptResult) -> Void = { second in
                var result = second
                result.plaintextRetryReason = reason
                result.elapsedMilliseconds = elapsedMilliseconds(since: started)
                completion(result)
            }
            deliver(to: address, plaintext, queue: queue, completion: retryCompletion)
        }
    }
}

/// The stored message, opened read-only. The fd is read on the file queue and closed on the connection queue;
/// `DeliveryRun` (below) guarantees the two never overlap (see its invariant).
private final class OutboundMessageFile: @unchecked Sendable {
    // @unchecked Sendable: `fd` and `size` are immutable after init; `close()` is called once, by the owner,
    // when no read is in flight.
    enum OpenError: Error, CustomStringConvertible {
        case open(path: String, errno: Int32)
        case stat(path: String, errno: Int32)

        var description: String {
            switch self {
            case .open(let path, let code): return "open \(path): \(errnoText(code))"
            case .stat(let path, let code): return "fstat \(path): \(errnoText(code))"
            }
        }
    }

    enum Chunk: Sendable {
        case data([UInt8])
        case end
        case failed(Int32)
    }

    static let chunkSize = 64 * 1024

    let path: String
    let fd: Int32
    /// Set (on the connection's queue, before any read of the body) when the 7-bit conversion is sent instead.
    private(set) var size: Int
    private var converted: [UInt8]?

    /// Sends these bytes instead of the file's (the 7-bit form of an 8-bit message).
    func replaceContent(with bytes: [UInt8]) {
        converted = bytes
        size = bytes.count
    }

    init(path: String) throws(OpenError) {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .open(path: path, errno: errno) }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            let code = errno
            _ = Glibc.close(fd)
            throw .stat(path: path, errno: code)
        }
        self.path = path
        self.fd = fd
        size = Int(info.st_size)
    }

    /// Blocking pread of up to `length` bytes at `offset`.
    func read(at offset: Int, length: Int) -> Chunk {
        if let converted {
            guard offset < converted.count else { return .end }
            return .data(Array(converted[offset..<min(offset + length, converted.count)]))
        }
        var buffer = [UInt8](repeating: 0, count: length)
        while true {
            let count = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, length, off_t(offset)) }
            if count > 0 {
                buffer.removeSubrange(count...)
                return .data(buffer)
            }
            if count == 0 { return .end }
            let code = errno
            if code == EINTR { continue }
            return .failed(code)
        }
    }

    func close() {
        _ = Glibc.close(fd)
    }
}

/// One running attempt: performs the session's actions on the connection.
private final class DeliveryRun: @unchecked Sendable {
    // @unchecked Sendable — confinement invariant: every mutable property is touched only on `queue` (the
    // connection's queue: read and close callbacks, write completions, timers, and the read results posted back
    // with `queue.async`). `file.fd` is read on `fileQueue` only while `readInFlight` is true, and closed on
    // `queue` only while it is false.

    private static let fileQueue = DispatchQueue(
        label: "dualmta.remote-delivery.file", qos: .utility,
        attributes: .concurrent)

    private let address: SocketAddress
    private let channel: OutboundChannel
    private let connection: Connection
    private let queue: DispatchQueue
    /// Where the connection goes when the session keeps it open, and under which key.
    private let cache: ConnectionCache?
    private let cacheKey: ConnectionKey
    private let timeouts: ClientTimeouts
    private let file: OutboundMessageFile
    private let started: ContinuousClock.Instant
    private let completion: @Sendable (DeliveryAttemptResult) -> Void
    private let tlsContext: TLSContext?
    /// SNI for STARTTLS.
    private let serverName: String?
    private let retryInPlaintext: (@Sendable (String) -> Void)?
    private let sevenBitBody: SevenBitBody?
    private let faults: OutboundFaults?

    private var session: ClientSession
    /// The TLS filter after the server's 220 to STARTTLS: reads go through it, and so do writes. Kept with the
    /// connection, so a reused session goes on in TLS.
    private var tls: TLSSession? {
        get { channel.tls }
        set { channel.tls = newValue }
    }
    private var tlsDescription: TLSDescription?
    /// The current stage's reply timeout (RFC 5321 §4.5.3.2).
    private lazy var timer = DeadlineTimer(queue: queue) { [weak self] in self?.timerFired() }
    private var encoder = OutboundBody()
    private var offset = 0
    private var streaming = false
    private var readInFlight = false
    private var fileClosed = false
    private var done = false
    private var socketError: SocketError?

    init(
        address: SocketAddress, channel: OutboundChannel, session: ClientSession, timeouts: ClientTimeouts,
        file: OutboundMessageFile, started: ContinuousClock.Instant, tlsContext: TLSContext?, serverName: String?,
        retryInPlaintext: (@Sendable (String) -> Void)?, sevenBitBody: SevenBitBody?, faults: OutboundFaults?,
        cache: ConnectionCache?, cacheKey: ConnectionKey,
        completion: @escaping @Sendable (DeliveryAttemptResult) -> Void
    ) {
        self.channel = channel
        self.cache = cache
        self.cacheKey = cacheKey
        tlsDescription = channel.tlsDescription
        self.sevenBitBody = sevenBitBody
        self.faults = faults
        self.tlsContext = tlsContext
        self.serverName = serverName
        self.retryInPlaintext = retryInPlaintext
        self.address = address
        connection = channel.connection
        queue = connection.queue
        self.session = session
        self.timeouts = timeouts
        self.file = file
        self.started = started
        self.completion = completion
    }

    /// On `queue`, right after the connect.
    func start() {
        // The channel holds `self` until the run detaches or the connection closes: that is the run's lifetime.
        let alive = channel.attach(
            onBytes: { bytes in self.received(bytes) },
            onClose: { error in
                guard !self.done else { return }
                self.socketError = error
                if self.handshaking { return self.handshakeFailed("connection closed during the TLS handshake") }
                let actions = self.session.connectionClosed()
                self.perform(actions)
            })
        perform(session.start())
        // A parked connection that died before it was taken: what was just sent went nowhere.
        if !alive { perform(session.connectionClosed()) }
    }

    // MARK: - TLS

    private var handshaking: Bool { tls.map { !$0.isHandshakeComplete } ?? false }

    private func received(_ bytes: UnsafeRawBufferPointer) {
        guard !done else { return }
        guard let tls else { return perform(session.receive(bytes)) }
        let (events, output) = tls.pump(bytes)
        if !output.isEmpty { connection.write(output) }
        for event in events {
            guard !done else { return }
            switch event {
            case .established:
                tlsDescription = TLSDescription(
                    protocolVersion: tls.protocolVersion ?? "unknown", cipher: tls.cipherName ?? "unknown",
                    bits: tls.cipherBits)
                perform(session.tlsEstablished())
            case .plaintext(let plaintext):
                perform(session.receive(plaintext))
            case .failed(let error, duringHandshake: true):
                return handshakeFailed("\(error)")
            case .closed, .failed:
                // close_notify or a broken record: the session is over either way.
                perform(session.connectionClosed())
            }
        }
    }

    /// After the server's 220 to STARTTLS: the ClientHello goes out at once.
    private func beginTLS() {
        if faults?.failHandshake == true { return handshakeFailed("TLS handshake failed (fault rule)") }
        guard let tlsContext, let session = try? TLSSession(context: tlsContext, role: .client(serverName: serverName))
        else { return handshakeFailed("no TLS client context") }
        tls = session
        arm(.ehlo)
        if case .failed(let error) = session.handshake() {
            flushTLS()
            return handshakeFailed("\(error)")
        }
        flushTLS()
    }

    private func handshakeFailed(_ reason: String) {
        guard !done else { return }
        if let retryInPlaintext {
            // `may`: this connection is dropped and the caller's completion comes from the plaintext retry.
            done = true
            streaming = false
            timer.cancel()
            channel.detach()
            connection.close(afterFlush: false)
            closeFileIfIdle()
            retryInPlaintext(reason)
            return
        }
        perform(session.tlsFailed(reason))
    }

    private func flushTLS() {
        guard let tls else { return }
        let output = tls.getDataForNetwork()
        if !output.isEmpty { connection.write(output) }
    }

    /// Writes plaintext, through TLS once it is on; `completion` when the bytes are in the kernel.
    private func write(_ bytes: [UInt8], completion: (() -> Void)? = nil) {
        guard let tls else { return connection.write(bytes, completion: completion) }
        // A failed write means a broken session; the read side reports the end.
        _ = tls.writePlaintext(bytes)
        connection.write(tls.getDataForNetwork(), completion: completion)
    }

    private func perform(_ actions: [ClientAction]) {
        for action in actions {
            guard !done else { return }
            switch action {
            case .send(let bytes):
                write(bytes)
            case .startTLS:
                beginTLS()
            case .sendBody:
                if session.sendsSevenBitBody, case .converted(let bytes)? = sevenBitBody {
                    file.replaceContent(with: bytes)  // no read is in flight before the body starts
                }
                streaming = true
                readNextChunk()
            case .arm(let stage):
                arm(stage)
            case .close:
                // Nothing useful is pending when the session closes (QUIT answered, or the peer is broken), and a
                // peer that stopped reading would never let a flush finish.
                connection.close(afterFlush: false)
            case .finished(let result):
                finish(result)
            }
        }
    }

    // MARK: - Deadlines

    private func arm(_ stage: ClientStage) {
        timer.arm(after: timeouts[stage])
    }

    private func timerFired() {
        guard !done else { return }
        if handshaking { return handshakeFailed("timeout during the TLS handshake") }
        perform(session.timedOut())
    }

    // MARK: - Body

    /// Reads exactly the size measured at open (the size declared with SIZE=): a spool file never changes after
    /// commit, and a shorter file must not go out as a shorter message (nothing partial ever leaves).
    private func readNextChunk() {
        guard streaming, !done else { return }
        if offset >= file.size {
            // Terminator in the same write as the last block: one segment fewer, no Nagle wait for the `.`.
            endBody([])
            return
        }
        readInFlight = true
        let file = self.file
        let offset = self.offset
        let length = min(OutboundMessageFile.chunkSize, file.size - offset)
        Self.fileQueue.async {
            let chunk = file.read(at: offset, length: length)
            self.queue.async { self.chunkRead(chunk) }
        }
    }

    private func endBody(_ lastBlock: [UInt8]) {
        write(lastBlock + encoder.finish()) {
            guard self.streaming, !self.done else { return }
            self.streaming = false
            self.perform(self.session.bodySent())
        }
    }

    private func chunkRead(_ chunk: OutboundMessageFile.Chunk) {
        readInFlight = false
        guard streaming, !done else {
            closeFileIfIdle()
            return
        }
        switch chunk {
        case .data(let bytes):
            offset += bytes.count
            let wire = encoder.encode(bytes)
            if offset >= file.size {
                endBody(wire)
            } else {
                write(wire) { self.chunkWritten() }
            }
        case .end:
            streaming = false
            perform(session.abort("\(file.path) shrank below its size of \(file.size) octets"))
        case .failed(let code):
            streaming = false
            perform(session.abort("read \(file.path): \(errnoText(code))"))
        }
    }

    private func chunkWritten() {
        guard streaming, !done else { return }
        // RFC 5321 §4.5.3.2.5: the data-block deadline runs per block sent, not for the whole body.
        arm(.dataBlock)
        readNextChunk()
    }

    // MARK: - End

    private func finish(_ result: ClientResult) {
        done = true
        streaming = false
        timer.cancel()
        channel.transactions += 1
        channel.detach()
        if result.keptOpen {
            channel.tlsDescription = tlsDescription
            channel.resumption = ClientSession.Resumption(
                capabilities: result.capabilities ?? ServerCapabilities(), tlsActive: tls != nil,
                greeting: result.greeting)
            if let cache { cache.park(channel, key: cacheKey) } else { channel.quit() }
        } else {
            connection.close(afterFlush: false)
        }
        closeFileIfIdle()
        completion(
            DeliveryAttemptResult(
                address: address, outcome: .session(result), localAddress: connection.local,
                socketError: socketError, elapsedMilliseconds: elapsedMilliseconds(since: started),
                tls: tlsDescription))
    }

    private func closeFileIfIdle() {
        guard done, !readInFlight, !fileClosed else { return }
        fileClosed = true
        file.close()
    }
}

private func elapsedMilliseconds(since start: ContinuousClock.Instant) -> Int {
    let elapsed = ContinuousClock.now - start
    let (seconds, attoseconds) = elapsed.components
    return Int(seconds) * 1000 + Int(attoseconds / 1_000_000_000_000_000)
}

/// strerror text ("Connection refused"). glibc returns static strings for known codes.
private func errnoText(_ code: Int32) -> String {
    guard let text = strerror(code) else { return "errno \(code)" }
    return String(cString: text)
}

/// An attempt ready to run as soon as a connection exists (see `RemoteDelivery.prepare`).
private struct PreparedAttempt: @unchecked Sendable {  // handed once to the connection's queue, then used only there
    let file: OutboundMessageFile
    let session: ClientSession
    let retryInPlaintext: (@Sendable (String) -> Void)?
    let faults: OutboundFaults?

    func run(
        on channel: OutboundChannel, address: SocketAddress, _ request: AttemptRequest,
        started: ContinuousClock.Instant, completion: @escaping @Sendable (DeliveryAttemptResult) -> Void
    ) {
        DeliveryRun(
            address: address, channel: channel, session: session, timeouts: request.timeouts, file: file,
            started: started, tlsContext: request.tlsPolicy == .none ? nil : RemoteDelivery.opportunisticTLS,
            serverName: request.serverName, retryInPlaintext: retryInPlaintext, sevenBitBody: request.sevenBitBody,
            faults: faults, cache: request.connectionCache, cacheKey: request.connectionKey(address),
            completion: completion
        ).start()
    }
}
