import Dispatch
import Logging
import Metrics
import SMTPProtocol
import Sockets
import Synchronization
import TLS

/// The outbound connection cache (Postfix's connection cache, on demand): a session that ended in good order is
/// parked here instead of QUIT, and the next transaction to the same `ConnectionKey` takes it and goes straight to
/// MAIL — no connect, greeting, EHLO or STARTTLS. Bounded in total (`smtp_connection_cache_size`), each session
/// parked at most `smtp_connection_cache_time` and used at most `smtp_connection_reuse_limit` times; a parked
/// session is watched, and dropped at once when the peer closes it or says anything. The decisions are
/// `ConnectionReuse`'s (Decisions/ConnectionReuseDecisions.swift); this class holds the sessions and does the I/O.
///
/// A taken session belongs to one delivery attempt until it is parked again or closed: `take` removes it from the
/// pool under the lock, so two runs to the same next hop never share one.
public final class ConnectionCache: Sendable {
    public let settings: ConnectionCacheSettings
    private let logger: Logger
    private let state = Mutex(State())

    private struct State: ~Copyable {
        /// Oldest first.
        var parked: [Parked] = []
        var shutDown = false
    }

    private struct Parked {
        let key: ConnectionKey
        let channel: OutboundChannel
        let since: ContinuousClock.Instant
    }

    public init(settings: ConnectionCacheSettings, logger: Logger) {
        self.settings = settings
        self.logger = logger
    }

    /// Parked sessions right now.
    public var count: Int { state.withLock { $0.parked.count } }

    /// Parked sessions per next hop (for the console and tests).
    public var parkedByAddress: [SocketAddress: Int] {
        state.withLock { state in state.parked.reduce(into: [:]) { $0[$1.key.address, default: 0] += 1 } }
    }

    /// Takes the most recently parked usable session for `key` (the older ones then expire first, so the pool
    /// shrinks to what the traffic needs), or nil.
    func take(_ key: ConnectionKey) -> OutboundChannel? {
        let now = ContinuousClock.now
        return state.withLock { state -> OutboundChannel? in
            guard
                let index = state.parked.lastIndex(where: {
                    $0.key == key && ConnectionReuse.usable(idle: now - $0.since, settings: settings)
                })
            else { return nil }
            defer { Self.publish(state.parked.count) }
            return state.parked.remove(at: index).channel
        }
    }

    /// The `dualmta_connection_cache_parked` gauge (set under the cache's lock, so updates never cross).
    private static func publish(_ count: Int) {
        DualMTAMetrics.registry.set(DualMTAMetrics.connectionCacheParked, to: Double(count))
    }

    /// A session ended in good order on `channel` (on its queue, nobody attached): park it or say goodbye.
    func park(_ channel: OutboundChannel, key: ConnectionKey) {
        let now = ContinuousClock.now
        var evicted: OutboundChannel?
        let decision = state.withLock { state -> ConnectionReuse.ParkDecision in
            let counts = state.parked.reduce(into: [ConnectionKey: Int]()) { $0[$1.key, default: 0] += 1 }
            let decision = ConnectionReuse.park(
                key: key, transactions: channel.transactions, parked: counts, settings: settings,
                shutDown: state.shutDown)
            switch decision {
            case .park:
                state.parked.append(Parked(key: key, channel: channel, since: now))
            case .parkEvicting(let victim):
                if let index = state.parked.firstIndex(where: { $0.key == victim }) {
                    evicted = state.parked.remove(at: index).channel
                }
                state.parked.append(Parked(key: key, channel: channel, since: now))
            case .close:
                break
            }
            Self.publish(state.parked.count)
            return decision
        }
        if let evicted {
            evicted.queue.async {
                self.dropped(evicted, .evicted)
                evicted.quit()
            }
        }
        switch decision {
        case .park, .parkEvicting:
            channel.watch(
                idleTime: settings.idleTime,
                onExpiry: { [weak self] in self?.expire(channel) },
                onPeerEvent: { [weak self] reason in self?.peerEvent(channel, reason) })
        case .close(let reason):
            dropped(channel, reason)
            channel.quit()
        }
    }

    /// Closes every parked session with QUIT and parks nothing from now on (shutdown, reload). With `wait`, returns
    /// once every QUIT was answered or `wait` passed (shutdown: the peers see a proper end before the process exits).
    public func closeAll(wait: Duration? = nil) {
        let all = state.withLock { state -> [OutboundChannel] in
            state.shutDown = true
            defer {
                state.parked.removeAll()
                Self.publish(0)
            }
            return state.parked.map(\.channel)
        }
        let group = DispatchGroup()
        for channel in all {
            group.enter()
            channel.queue.async {
                self.dropped(channel, .shutdown)
                channel.quit { group.leave() }
            }
        }
        if let wait { _ = group.wait(timeout: .now() + .milliseconds(Int(wait / .milliseconds(1)))) }
    }

    private func remove(_ channel: OutboundChannel) -> Bool {
        state.withLock { state in
            guard let index = state.parked.firstIndex(where: { $0.channel === channel }) else { return false }
            state.parked.remove(at: index)
            Self.publish(state.parked.count)
            return true
        }
    }

    /// On the channel's queue: the idle time passed.
    private func expire(_ channel: OutboundChannel) {
        guard remove(channel) else { return }  // taken in the meantime
        dropped(channel, .expired)
        channel.quit()
    }

    /// On the channel's queue: the peer closed or spoke while parked. The connection is closed even when a run took
    /// it a moment ago; that run then finds it dead and retries on a new connection.
    private func peerEvent(_ channel: OutboundChannel, _ reason: ConnectionDropReason) {
        if remove(channel) { dropped(channel, reason) }
        channel.markDead()
    }

    private func dropped(_ channel: OutboundChannel, _ reason: ConnectionDropReason) {
        DualMTAMetrics.registry.increment(DualMTAMetrics.connectionCacheClosed, ["reason": reason.rawValue])
        logger.info(
            "connection-cache",
            metadata: [
                "event": "closed", "addr": "\(channel.connection.peer)", "reason": "\(reason.rawValue)",
                "transactions": "\(channel.transactions)",
            ])
    }
}

/// An outbound connection with what outlives one session on it: the TLS layer, what the server told the first
/// session, and how many transactions it has run. Confined to the connection's queue.
final class OutboundChannel: @unchecked Sendable {
    // @unchecked Sendable: every mutable property is used on `queue` only (the connection's read, close and timer
    // callbacks, and the attempts that run on it); the cache hands the object between threads under its lock.
    let connection: Connection
    var queue: DispatchQueue { connection.queue }
    /// The TLS layer after STARTTLS; reads and writes go through it.
    var tls: TLSSession?
    var tlsDescription: TLSDescription?
    /// Set when parked: what the next session on this connection starts from.
    var resumption: ClientSession.Resumption?
    /// Transactions run on this connection.
    var transactions = 0

    private var onBytes: ((UnsafeRawBufferPointer) -> Void)?
    private var onClose: ((SocketError?) -> Void)?
    /// The connection ended (or was dropped) while nobody was attached.
    private(set) var dead = false
    private var idleTimer: DeadlineTimer?

    init(connection: Connection) {
        self.connection = connection
        // One read source for the connection's whole life; its events go to whoever is attached now. The handlers
        // hold the channel until the connection closes.
        connection.startReading(
            { bytes in self.received(bytes) },
            onClose: { error in self.closed(error) })
    }

    /// A run takes over the connection. Returns false if it died while parked: the run's first command will go
    /// nowhere, and it should act as if the connection closed.
    func attach(onBytes: @escaping (UnsafeRawBufferPointer) -> Void, onClose: @escaping (SocketError?) -> Void) -> Bool
    {
        idleTimer?.cancel()
        idleTimer = nil
        self.onBytes = onBytes
        self.onClose = onClose
        return !dead && !connection.isClosed
    }

    /// The run is over; nothing is attached until the next `attach` or `watch`.
    func detach() {
        onBytes = nil
        onClose = nil
    }

    /// Parked: any bytes or the end of the connection is reported once; the idle deadline runs.
    func watch(
        idleTime: Duration, onExpiry: @escaping () -> Void, onPeerEvent: @escaping (ConnectionDropReason) -> Void
    ) {
        onBytes = { _ in onPeerEvent(.peerSpoke) }
        onClose = { _ in onPeerEvent(.peerClosed) }
        let timer = DeadlineTimer(queue: queue, onExpiry: onExpiry)
        timer.arm(after: idleTime)
        idleTimer = timer
    }

    /// Closes the connection for good, without a word (the peer is gone or misbehaved).
    func markDead() {
        dead = true
        detach()
        idleTimer?.cancel()
        idleTimer = nil
        connection.close(afterFlush: false)
    }

    /// Sends QUIT and closes once it is answered, the peer closes, or 5 s pass; then `done`.
    func quit(done: (() -> Void)? = nil) {
        idleTimer?.cancel()
        guard !dead, !connection.isClosed else {
            markDead()
            done?()
            return
        }
        var finished = false
        let end = {
            guard !finished else { return }
            finished = true
            self.markDead()
            done?()
        }
        onBytes = { _ in end() }
        onClose = { _ in end() }
        let timer = DeadlineTimer(queue: queue, onExpiry: end)
        timer.arm(after: .seconds(5))
        idleTimer = timer
        send(Array("QUIT\r\n".utf8))
    }

    /// Writes plaintext, through TLS when it is on.
    func send(_ bytes: [UInt8], completion: (() -> Void)? = nil) {
        guard let tls else { return connection.write(bytes, completion: completion) }
        _ = tls.writePlaintext(bytes)  // a failed write means a broken session; the read side reports the end
        connection.write(tls.getDataForNetwork(), completion: completion)
    }

    private func received(_ bytes: UnsafeRawBufferPointer) {
        if let onBytes { return onBytes(bytes) }
        markDead()  // bytes nobody asked for
    }

    private func closed(_ error: SocketError?) {
        if let onClose {
            detach()
            return onClose(error)
        }
        markDead()
    }
}
