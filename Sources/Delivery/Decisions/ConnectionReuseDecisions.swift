import SMTPProtocol
import Sockets

/// What makes two outbound sessions interchangeable: the same next hop (address and port), the same local source
/// address when one is bound, the same EHLO name, and the TLS policy and SNI name the session was made under (so
/// a TLS session carries only mail that the same policy would have sent over a new connection).
public struct ConnectionKey: Hashable, Sendable, CustomStringConvertible {
    public var address: SocketAddress
    public var source: SocketAddress?
    public var heloName: String
    public var tlsPolicy: ClientTLSPolicy
    public var serverName: String?

    public init(
        address: SocketAddress, source: SocketAddress?, heloName: String, tlsPolicy: ClientTLSPolicy,
        serverName: String?
    ) {
        self.address = address
        self.source = source
        self.heloName = heloName
        self.tlsPolicy = tlsPolicy
        self.serverName = serverName
    }

    public var description: String { "\(address)" }
}

/// `smtp_connection_cache*`: how many idle sessions may wait, for how long, and how often one is used.
public struct ConnectionCacheSettings: Equatable, Sendable {
    /// How long a parked session waits for the next message (`smtp_connection_cache_time`).
    public var idleTime: Duration
    /// Transactions per connection; after the last one the session QUITs (`smtp_connection_reuse_limit`).
    public var reuseLimit: Int
    /// Parked sessions in total (`smtp_connection_cache_size`).
    public var size: Int

    public init(idleTime: Duration = .seconds(2), reuseLimit: Int = 100, size: Int = 32) {
        self.idleTime = idleTime
        self.reuseLimit = reuseLimit
        self.size = size
    }
}

/// Why a session was closed instead of parked, or dropped from the pool (the `reason=` of `connection-cache` lines
/// and the label of `dualmta_connection_cache_closed_total`).
public enum ConnectionDropReason: String, Sendable, Equatable, CaseIterable {
    /// The reuse limit was reached.
    case limit
    /// The pool is full and this next hop already holds its share.
    case full
    /// Another next hop needed the slot (the busiest hop gives up its oldest session).
    case evicted
    /// Not taken within `smtp_connection_cache_time`.
    case expired
    /// The peer closed or reset the connection while it was parked.
    case peerClosed = "peer-closed"
    /// The peer sent bytes while nobody had asked it anything.
    case peerSpoke = "peer-spoke"
    /// Shutdown or reload.
    case shutdown
    /// Taken from the pool and found closed (or closing) at the first command: retried on a new connection.
    case deadOnReuse = "dead-on-reuse"
}

/// The pool's decisions, without I/O or clock (table-tested in ConnectionReuseDecisionsTests).
public enum ConnectionReuse {
    public enum ParkDecision: Equatable, Sendable {
        case park
        /// Park, after closing the oldest parked session of `key` to make room.
        case parkEvicting(ConnectionKey)
        case close(ConnectionDropReason)
    }

    /// Whether a session that ended in good order is parked. `transactions` counts the ones it has run, this one
    /// included; `parked` counts the sessions in the pool per key. A full pool makes room only by taking from a
    /// next hop that holds more sessions than this one, so one busy hop cannot keep every slot from the others.
    public static func park(
        key: ConnectionKey, transactions: Int, parked: [ConnectionKey: Int], settings: ConnectionCacheSettings,
        shutDown: Bool
    ) -> ParkDecision {
        if shutDown { return .close(.shutdown) }
        if transactions >= settings.reuseLimit { return .close(.limit) }
        let total = parked.values.reduce(0, +)
        if total < settings.size { return .park }
        let own = parked[key] ?? 0
        // The busiest other hop; ties go to the smallest description so the choice does not depend on hash order.
        let busiest = parked.filter { $0.key != key && $0.value > 0 }.max {
            $0.value != $1.value ? $0.value < $1.value : $0.key.description > $1.key.description
        }
        guard let busiest, busiest.value > own + 1 else { return .close(.full) }
        return .parkEvicting(busiest.key)
    }

    /// Whether a parked session may still be taken after `idle` in the pool (its expiry may not have run yet).
    public static func usable(idle: Duration, settings: ConnectionCacheSettings) -> Bool {
        idle < settings.idleTime
    }

    public enum AfterReuse: Equatable, Sendable {
        /// Judge the attempt like any other.
        case judge
        /// The parked connection was dead when taken: nothing reached the server; try again on a new connection to
        /// the same address without counting this as an attempt. The reason is for the log.
        case retryOnNewConnection(String)
    }

    /// What a session on a reused connection means: closed, reset or `421` before the server answered anything else
    /// is a connection that died while parked (servers close idle clients at will, RFC 5321 §4.5.3.2.7); any later
    /// failure belongs to the transaction and is judged as usual.
    public static func afterReusedSession(_ result: ClientResult) -> AfterReuse {
        guard result.reused, result.repliesRead == 0 else { return .judge }
        switch result.kind {
        case .hostFailed(.connectionLost(let stage)):
            return .retryOnNewConnection("connection lost waiting for \(stage.rawValue) reply")
        case .hostFailed(.closing(let reply)):
            return .retryOnNewConnection("server closing: \(ClientSession.summary(reply))")
        default:
            return .judge
        }
    }
}
