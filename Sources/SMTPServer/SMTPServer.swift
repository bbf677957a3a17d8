import Dispatch
import Faults
import Logging
import NetAddress
import SMTPProtocol
import Sockets
import Spool
import Synchronization
import TLS

/// SMTPServer owns the listening sockets and the live sessions: it binds every configured address on its own
/// socket (IPv6 ones with IPV6_V6ONLY, so `[::]:N` and `0.0.0.0:N` coexist), enforces connection limits, and hands
/// each accepted socket to a `SessionDriver`, which feeds bytes to the pure `ServerSession` and performs its actions.
/// It never imports Delivery: `onQueued` tells whoever wired it that a message was committed.
///
/// Three kinds of listener share one server: `listen` (MX, STARTTLS offered when a certificate is loaded),
/// `submissionListen` (RFC 6409: STARTTLS, then AUTH before MAIL) and `submissionsListen` (RFC 8314: TLS from the
/// first byte, AUTH at once). TLS is a byte filter in the driver (`TLSSession` over memory BIOs).

/// Which service a listening socket offers.
public enum ListenerKind: String, Sendable {
    case smtp
    case submission
    case submissions

    var requiresAuthentication: Bool { self != .smtp }
}

/// What the server needs to know; built by the MTA module from the config file.
public struct ServerConfiguration: Sendable {
    public var listen: [SocketAddress]
    public var session: ServerSession.Configuration
    public var relayNetworks: [CIDR]
    public var maxConnections: Int
    public var maxConnectionsPerClient: Int
    public var commandTimeout: Duration
    /// Server TLS context; nil: no STARTTLS (454 if asked) and no submission listeners.
    public var tlsContext: TLSContext?
    public var submissionListen: [SocketAddress] = []
    public var submissionsListen: [SocketAddress] = []
    /// The submission users; required when a submission listener is configured.
    public var users: UserDatabase?
    /// A failed AUTH is answered after this delay times the number of failures so far in the session.
    public var authFailureDelay: Duration = .seconds(1)
    /// Failed AUTH attempts allowed per client address and per user name across all connections within
    /// `authFailureWindow`; past that, AUTH gets 454 4.7.0 without a password check.
    public var authFailureLimit = 10
    public var authFailureWindow: Duration = .seconds(15 * 60)
    /// `sender_return_check`: given the sender's domain, may bounces reach it? Blocking (DNS); run off the
    /// connection queue. Nil accepts every sender.
    public var senderCheck: (@Sendable (String) -> SenderCheckResult)?
    /// Lab fault rules; nil or empty, and sessions never consult them.
    public var faults: FaultBook?
    /// Queue every accepted message on hold: it gets no delivery attempt until released (lab inspection, and the
    /// benchmark's accept-only runs).
    public var holdIncoming = false

    public init(
        listen: [SocketAddress], session: ServerSession.Configuration, relayNetworks: [CIDR], maxConnections: Int,
        maxConnectionsPerClient: Int, commandTimeout: Duration
    ) {
        self.listen = listen
        self.session = session
        self.relayNetworks = relayNetworks
        self.maxConnections = maxConnections
        self.maxConnectionsPerClient = maxConnectionsPerClient
        self.commandTimeout = commandTimeout
    }
}

public enum ServerError: Error, CustomStringConvertible, Sendable {
    case cannotListen(SocketAddress, SocketError)
    case noListener
    /// Submission listeners need a TLS context and a users database.
    case submissionUnavailable(String)

    public var description: String {
        switch self {
        case .cannotListen(let address, let error): return "cannot listen on \(address): \(error)"
        case .noListener: return "no listening socket could be opened"
        case .submissionUnavailable(let reason): return "submission service unavailable: \(reason)"
        }
    }
}

public final class SMTPServer: Sendable {
    /// Replaced by a config reload (`reload`); sessions read it when they need a value.
    let settings: Mutex<ServerConfiguration>
    var configuration: ServerConfiguration { settings.withLock { $0 } }
    let spool: Spool
    let logger: Logger
    let onQueued: @Sendable (QueueID) -> Void
    /// Sessions run on their own serial queues, all targeting this concurrent one, so both cores serve clients.
    let sessionTarget = DispatchQueue(label: "dualmta.sessions", attributes: .concurrent)
    /// Blocking work other than commits (the sender's DNS check) runs here, never on a session's queue.
    let blockingQueue = DispatchQueue(label: "dualmta.blocking", attributes: .concurrent)
    /// Messages are made durable here, in batches shared by the sessions that finish DATA together.
    let groupCommit: GroupCommit
    /// Password hashing (deliberately slow) and the users file read run here.
    let authQueue = DispatchQueue(label: "dualmta.auth", attributes: .concurrent)
    /// Failed AUTH attempts across sessions (see `AuthFailureTable`); touched from session queues.
    let authFailureTable: Mutex<AuthFailureTable>
    let acceptQueue = DispatchQueue(label: "dualmta.accept")
    let state = Mutex(State())
    private let storage: StorageMonitor

    struct State {
        var listeners: [Listener] = []
        /// What each of `listeners` was configured as (same order), for the reload's diff.
        var listenerKeys: [ListenerKey] = []
        var sessions: [ObjectIdentifier: SessionDriver] = [:]
        var perClient: [IPAddress: Int] = [:]
        var stopping = false
        var lastAcceptError: ContinuousClock.Instant? = nil
    }

    public init(
        configuration: ServerConfiguration, spool: Spool, logger: Logger,
        onQueued: @escaping @Sendable (QueueID) -> Void
    ) {
        self.settings = Mutex(configuration)
        self.spool = spool
        self.logger = logger
        self.onQueued = onQueued
        self.groupCommit = GroupCommit(spool: spool)
        self.authFailureTable = Mutex(
            AuthFailureTable(
                limit: configuration.authFailureLimit,
                window: Double(configuration.authFailureWindow.components.seconds)))
        self.storage = StorageMonitor(spool: spool, required: UInt64(configuration.session.maxMessageSize) * 3 / 2)
    }

    /// Binds every listen address and starts accepting. A socket that cannot be bound is a start-up error, except
    /// an address family the kernel does not support (IPv6 disabled): that one is skipped with a warning.
    /// - Returns: the bound addresses (real ports when the config asked for port 0).
    @discardableResult
    public func start() throws(ServerError) -> [SocketAddress] {
        let submission = configuration.submissionListen + configuration.submissionsListen
        if !submission.isEmpty && configuration.tlsContext == nil {
            throw .submissionUnavailable("no TLS certificate")
        }
        if !submission.isEmpty && configuration.users == nil { throw .submissionUnavailable("no users file") }
        var listeners: [Listener] = []
        var kinds: [ListenerKind] = []
        var keys: [ListenerKey] = []
        let wanted =
            configuration.listen.map { ($0, ListenerKind.smtp) }
            + configuration.submissionListen.map { ($0, ListenerKind.submission) }
            + configuration.submissionsListen.map { ($0, ListenerKind.submissions) }
        for (address, kind) in wanted {
            do throws(SocketError) {
                listeners.append(try Listener.bind(address))
                kinds.append(kind)
                keys.append(ListenerKey(address: address, kind: kind))
            } catch .addressFamilyUnsupported {
                logger.warning(
                    "listen-skipped",
                    metadata: ["addr": "\(address)", "reason": "address family not supported by the kernel"])
            } catch {
                listeners.forEach { $0.close() }
                throw .cannotListen(address, error)
            }
        }
        guard !listeners.isEmpty else { throw .noListener }
        state.withLock { state in
            state.listeners = listeners
            state.listenerKeys = keys
        }
        for (listener, kind) in zip(listeners, kinds) {
            logger.info(
                "listening",
                metadata: [
                    "addr": "\(listener.localAddress)", "family": "\(listener.localAddress.family)",
                    "service": "\(kind.rawValue)",
                ])
            listener.start(
                queue: acceptQueue,
                onAccept: { [self] socket in accept(socket, kind: kind) },
                onError: { [self] error in acceptFailed(error) })
        }
        return listeners.map(\.localAddress)
    }

    /// Stops accepting and tells every live session that we are going away (421 4.3.2). Messages already
    /// answered with 250 are on disk; a transaction in progress is dropped and the client will retry.
    public func stop() {
        let (listeners, sessions) = state.withLock { state in
            state.stopping = true
            let result = (state.listeners, Array(state.sessions.values))
            state.listeners = []
            state.listenerKeys = []
            return result
        }
        listeners.forEach { $0.close() }
        sessions.forEach { $0.shutDown() }
    }

    /// Number of sessions still open (used to wait for a clean stop).
    public var activeSessions: Int { state.withLock { $0.sessions.count } }

    func accept(_ socket: AcceptedSocket, kind: ListenerKind) {
        let client = socket.peer.ip
        let hostname = configuration.session.hostname
        let refusal: String? = state.withLock { state in
            if state.stopping { return "421 4.3.2 \(hostname) Service shutting down\r\n" }
            if state.sessions.count >= configuration.maxConnections {
                return "421 4.7.0 \(hostname) Error: too many connections\r\n"
            }
            if state.perClient[client, default: 0] >= configuration.maxConnectionsPerClient {
                return "421 4.7.0 \(hostname) Error: too many connections from \(client)\r\n"
            }
            return nil
        }
        let queue = DispatchQueue(label: "dualmta.session", target: sessionTarget)
        let connection = Connection(socket: socket, queue: queue)
        if let refusal {
            logger.notice("connection-refused", metadata: ["client": "\(client)", "reason": "\(refusal.dropLast(2))"])
            queue.async {
                connection.write(Array(refusal.utf8))
                connection.close(afterFlush: true)
            }
            return
        }
        let mayRelay = RelayRights(client: client, relayNetworks: configuration.relayNetworks).inRelayNetworks
        let driver = SessionDriver(server: self, connection: connection, queue: queue, mayRelay: mayRelay, kind: kind)
        state.withLock { state in
            state.sessions[ObjectIdentifier(driver)] = driver
            state.perClient[client, default: 0] += 1
        }
        queue.async { driver.start() }
    }

    func sessionEnded(_ driver: SessionDriver) {
        state.withLock { state in
            guard state.sessions.removeValue(forKey: ObjectIdentifier(driver)) != nil else { return }
            let client = driver.connection.peer.ip
            let remaining = state.perClient[client, default: 1] - 1
            state.perClient[client] = remaining > 0 ? remaining : nil
        }
    }

    /// accept() failures (EMFILE and friends) are logged at most once per 10 s; the listener already backs off.
    func acceptFailed(_ error: SocketError) {
        let now = ContinuousClock.now
        let shouldLog = state.withLock { state in
            if let last = state.lastAcceptError, now - last < .seconds(10) { return false }
            state.lastAcceptError = now
            return true
        }
        if shouldLog { logger.error("accept-failed", metadata: ["reason": "\(error)"]) }
    }

    /// Whether the spool has room for one more message of the maximum size (checked at MAIL).
    func storageAvailable() -> Bool { storage.available() }
}

/// Free space of the spool filesystem (f_bavail), re-read at most once per second: statvfs is cheap, but a
/// busy server asks for every MAIL.
final class StorageMonitor: Sendable {
    private let spool: Spool
    private let required: UInt64
    private let cache = Mutex<(checked: ContinuousClock.Instant, available: Bool)?>(nil)

    init(spool: Spool, required: UInt64) {
        self.spool = spool
        self.required = required
    }

    func available() -> Bool {
        let now = ContinuousClock.now
        if let cached = cache.withLock({ $0 }), now - cached.checked < .seconds(1) { return cached.available }
        let available = (spool.availableBytes() ?? UInt64.max) >= required
        cache.withLock { $0 = (now, available) }
        return available
    }
}
