import DNS
import Delivery
import Faults
import Foundation
import NetAddress
import Routing
import SMTPProtocol
import Sockets
import TLS

/// MTA turns the config file into typed settings, sets up logging, and wires the server, the spool and the
/// queue runner together. Only this module knows the file format; every other module takes its own narrow struct.

/// The effective settings of one dualmta instance. Every field has a default, so an empty file works.
public struct Configuration: Sendable, Equatable {
    public var hostname: String
    public var listen: [SocketAddress]
    public var spoolDirectory: String
    public var localDomains: [String]
    public var localRecipients: [String]?
    public var relayDomains: [String]
    public var relayRecipients: [String]?
    public var relayNetworks: [CIDR]
    public var messageSizeLimit: Int
    public var maxConnections: Int
    public var maxConnectionsPerClient: Int
    public var recipientLimit: Int
    public var commandTimeout: Duration
    public var logFormat: LogFormat
    public var logFile: String?
    /// `hold_incoming`: every message accepted over SMTP is queued on hold (released with `dualmta queue release`).
    public var holdIncoming = false

    // Outbound (RFC 3974 engine)
    public var inetProtocols: Set<AddressFamily>
    public var addressPreference: AddressFamily
    public var bindAddress: IPAddress?
    public var bindAddress6: IPAddress?
    public var dnsServers: [NameServer]?
    public var routes: StaticRoutes
    public var transportCacheTTL: Duration
    public var connectTimeout: Duration
    public var smtpReplyTimeout: Duration?
    public var retrySchedule: [Duration]
    public var deliveryConcurrency: Int
    public var familyMismatch: FamilyMismatchPolicy
    public var mxPort: UInt16
    public var allowLoopbackMX: Bool
    public var connectStrategy: ConnectStrategy
    /// Happy Eyeballs: how long an attempt runs alone before the next address starts (RFC 8305 §5).
    public var connectionAttemptDelay: Duration
    /// `smtp_connection_cache`: park outbound sessions that ended in good order for the next message.
    public var smtpConnectionCache = true
    /// `smtp_connection_cache_time`, `smtp_connection_reuse_limit`, `smtp_connection_cache_size`.
    public var smtpConnectionCacheSettings = ConnectionCacheSettings()

    // The web console, its JSON API and `/metrics` (HTTP/1.1)
    /// `http_listen`; nil when turned off with `none`.
    public var httpListen: SocketAddress?
    /// The key that set `httpListen` (`http_listen` or its alias `metrics_listen`); nil while it is the default,
    /// which is only a convenience: when its port is taken the daemon runs without the console.
    public var httpListenKey: String?
    /// `http_token`: the console's queue actions exist only when set (POST with `Authorization: Bearer`).
    public var httpToken: String?

    // TLS and submission (RFC 3207, RFC 6409, RFC 8314)
    public var tlsCertFile: String?
    public var tlsKeyFile: String?
    /// Outbound STARTTLS (`smtp_tls`): `none`, `may` (opportunistic, plain-text retry when the handshake fails),
    /// `encrypt`; the same type the client session and `smtp_tls_policy` use.
    public var smtpTLS: ClientTLSPolicy
    /// `smtp_tls_policy`: per-destination overrides of `smtp_tls`.
    public var smtpTLSPolicy = TLSPolicyTable()
    public var submissionListen: [SocketAddress]
    public var submissionsListen: [SocketAddress]
    public var submissionUsersFile: String?
    /// Server cipher list for TLS 1.2 (OpenSSL syntax); TLS 1.3 suites are OpenSSL's (all AEAD, all forward-secret).
    public var tlsCiphers: String = TLSContext.intermediateCiphers
    /// `run_as_user`: the account a daemon started as root drops to once its listeners are bound.
    public var runAsUser: String? = nil

    // Bounces and queue lifetime (RFC 3464, RFC 5321 §4.5.4)
    public var maxQueueLifetime: Duration
    /// `bounce_queue_lifetime`: how long reports (and other mail from `<>`) stay queued.
    public var bounceQueueLifetime: Duration = .seconds(86_400)
    /// `history_retention`: how long `dualmta trace` keeps a message's story after it left the queue.
    public var historyRetention: Duration = .seconds(7 * 86_400)
    public var delayWarningAfter: Duration
    public var doubleBounceRecipient: String
    public var senderReturnCheck: SenderReturnCheck

    /// `fault`: lab failure rules, in file order (none by default: faults are inert unless configured).
    public var faultRules: [FaultRule] = []

    /// At MAIL FROM, whether to check that the sender's domain can receive our bounces (the paper's Test 3).
    public enum SenderReturnCheck: String, Sendable, Equatable, CaseIterable {
        case off
        case warn
        case reject
    }

    public enum LogFormat: String, Sendable, Equatable, CaseIterable {
        case text
        case json
    }

    /// The embedded defaults: `[::]:2525` and `0.0.0.0:2525`, spool `./spool`, local domain `localhost`,
    /// relaying only for loopback clients.
    public static var defaults: Configuration {
        Configuration(
            hostname: systemHostName(),
            listen: [SocketAddress(parsing: "[::]:2525"), SocketAddress(parsing: "0.0.0.0:2525")].compactMap { $0 },
            spoolDirectory: "spool",
            localDomains: ["localhost"],
            localRecipients: nil,
            relayDomains: [],
            relayRecipients: nil,
            relayNetworks: [CIDR("127.0.0.0/8"), CIDR("[::1]/128")].compactMap { $0 },
            messageSizeLimit: 10 * 1024 * 1024,
            maxConnections: 1000,
            maxConnectionsPerClient: 50,
            recipientLimit: 100,
            commandTimeout: .seconds(300),
            logFormat: .text,
            logFile: nil,
            inetProtocols: [.ipv4, .ipv6],
            addressPreference: .ipv6,
            bindAddress: nil,
            bindAddress6: nil,
            dnsServers: nil,
            routes: StaticRoutes(),
            transportCacheTTL: .seconds(3600),
            connectTimeout: .seconds(30),
            smtpReplyTimeout: nil,
            retrySchedule: [.seconds(60), .seconds(300), .seconds(900), .seconds(1800), .seconds(3600)],
            deliveryConcurrency: 20,
            familyMismatch: .bounce,
            mxPort: 25,
            allowLoopbackMX: false,
            connectStrategy: .sequential,
            connectionAttemptDelay: .milliseconds(250),
            httpListen: SocketAddress(parsing: "127.0.0.1:8025"),
            httpListenKey: nil,
            httpToken: nil,
            tlsCertFile: nil,
            tlsKeyFile: nil,
            smtpTLS: .may,
            submissionListen: [],
            submissionsListen: [],
            submissionUsersFile: nil,
            maxQueueLifetime: .seconds(5 * 86400),
            delayWarningAfter: .seconds(4 * 3600),
            doubleBounceRecipient: "postmaster",
            senderReturnCheck: .off
        )
    }

    /// Every local domain, `hostname` included (it is always local), lowercased and without duplicates.
    public var allLocalDomains: [String] {
        var seen = Set<String>()
        return ([hostname] + localDomains).map { $0.lowercased() }.filter { seen.insert($0).inserted }
    }
}

/// The machine's host name, as `gethostname(2)` reports it; `localhost` when it cannot be read.
func systemHostName() -> String {
    var buffer = [CChar](repeating: 0, count: 256)
    guard gethostname(&buffer, buffer.count - 1) == 0 else { return "localhost" }
    let name = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    return name.isEmpty ? "localhost" : name.lowercased()
}
