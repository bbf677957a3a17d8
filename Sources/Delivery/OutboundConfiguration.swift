import DNS
import Faults
import Foundation
import Logging
import NetAddress
import Routing
import SMTPProtocol
import Synchronization

/// How the outbound engine talks to other hosts, as values (built by the MTA module from the config file). Where
/// mail goes is the `Router`'s (Routing); this is how each attempt is made.
public struct OutboundConfiguration: Sendable {
    public var heloName: String
    public var connectTimeout: Duration
    /// Caps every client stage timeout (greeting, EHLO, MAIL, RCPT, DATA, end of data); nil = RFC 5321 values.
    public var replyTimeout: Duration?
    public var bindAddress: IPAddress?
    public var bindAddress6: IPAddress?
    /// Outbound STARTTLS (`smtp_tls`).
    public var tlsPolicy: ClientTLSPolicy = .none
    /// `smtp_tls_policy`: per-destination overrides of `tlsPolicy` (see `tlsPolicy(for:recipients:)`).
    public var tlsPolicyTable = TLSPolicyTable()
    /// `connect_strategy`: RFC 3974 order one address at a time, or Happy Eyeballs within each preference level.
    public var connectStrategy: ConnectStrategy = .sequential
    /// `connection_attempt_delay` (happy-eyeballs only): how long an attempt runs alone before the next starts.
    public var connectionAttemptDelay: Duration = .milliseconds(250)
    /// Lab fault rules consulted at each attempt (nil or empty: never consulted).
    public var faults: FaultBook?
    /// Where sessions that ended in good order wait for the next message to the same next hop
    /// (`smtp_connection_cache`); nil: every session ends with QUIT.
    public var connectionCache: ConnectionCache?

    public init(
        heloName: String, connectTimeout: Duration, replyTimeout: Duration?, bindAddress: IPAddress?,
        bindAddress6: IPAddress?
    ) {
        self.heloName = heloName
        self.connectTimeout = connectTimeout
        self.replyTimeout = replyTimeout
        self.bindAddress = bindAddress
        self.bindAddress6 = bindAddress6
    }
}

/// How outbound connections are opened (`connect_strategy`).
public enum ConnectStrategy: String, Sendable, Equatable, CaseIterable {
    /// One address at a time, in plan order, each until it connects or fails (RFC 3974; deterministic).
    case sequential
    /// RFC 8305 racing within one MX preference level, never across levels.
    case happyEyeballs = "happy-eyeballs"
}
