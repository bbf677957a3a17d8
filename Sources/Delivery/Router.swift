import DNS
import Foundation
import Logging
import NetAddress
import Routing
import SMTPProtocol
import Synchronization

/// Everything the outbound engine needs to know, as values (built by the MTA module from the config file).
public struct OutboundConfiguration: Sendable {
    public var heloName: String
    public var identity: LocalIdentity
    public var capability: Capability
    public var staticRoutes: StaticRoutes
    public var mxPort: UInt16
    public var familyMismatch: FamilyMismatchPolicy
    public var acceptLoopbackFromDNS: Bool
    public var dnsServers: [NameServer]?
    /// How long a transport that worked stays first in its preference level.
    public var transportCacheTTL: Duration
    /// How long an address that refused or timed out is skipped; kept below the shortest retry interval
    /// (standards.md §1.7), so a retry always finds it usable again.
    public var negativeCacheTTL: Duration
    public var connectTimeout: Duration
    /// Caps every client stage timeout (greeting, EHLO, MAIL, RCPT, DATA, end of data); nil = RFC 5321 values.
    public var replyTimeout: Duration?
    public var bindAddress: IPAddress?
    public var bindAddress6: IPAddress?
    public var retrySchedule: RetrySchedule
    /// Outbound STARTTLS (`smtp_tls`).
    public var tlsPolicy: ClientTLSPolicy = .none
    /// `smtp_tls_policy`: per-destination overrides of `tlsPolicy` (see `tlsPolicy(for:recipients:)`).
    public var tlsPolicyTable = TLSPolicyTable()
    /// `connect_strategy`: RFC 3974 order one address at a time, or Happy Eyeballs within each preference level.
    public var connectStrategy: ConnectStrategy = .sequential
    /// `connection_attempt_delay` (happy-eyeballs only): how long an attempt runs alone before the next starts.
    public var connectionAttemptDelay: Duration = .milliseconds(250)

    public init(
        heloName: String, identity: LocalIdentity, capability: Capability, staticRoutes: StaticRoutes, mxPort: UInt16,
        familyMismatch: FamilyMismatchPolicy, acceptLoopbackFromDNS: Bool, dnsServers: [NameServer]?,
        transportCacheTTL: Duration, connectTimeout: Duration, replyTimeout: Duration?, bindAddress: IPAddress?,
        bindAddress6: IPAddress?, retrySchedule: RetrySchedule
    ) {
        self.heloName = heloName
        self.identity = identity
        self.capability = capability
        self.staticRoutes = staticRoutes
        self.mxPort = mxPort
        self.familyMismatch = familyMismatch
        self.acceptLoopbackFromDNS = acceptLoopbackFromDNS
        self.dnsServers = dnsServers
        self.transportCacheTTL = transportCacheTTL
        let shortestRetry = retrySchedule.intervals.min() ?? .seconds(60)
        self.negativeCacheTTL = min(shortestRetry, .seconds(300))
        self.connectTimeout = connectTimeout
        self.replyTimeout = replyTimeout
        self.bindAddress = bindAddress
        self.bindAddress6 = bindAddress6
        self.retrySchedule = retrySchedule
    }
}

/// How outbound connections are opened (`connect_strategy`, standards.md §5.3).
public enum ConnectStrategy: String, Sendable, Equatable, CaseIterable {
    /// One address at a time, in plan order, each until it connects or fails (RFC 3974; deterministic).
    case sequential
    /// RFC 8305 racing within one MX preference level, never across levels.
    case happyEyeballs = "happy-eyeballs"
}

/// Plans routes with the live DNS and the shared transport cache: the one place both delivery and
/// `dualmta route` get their plans from, so the explainer prints exactly what delivery will do.
/// Its calls block on DNS: use it from worker threads, never from a connection's queue.
public final class Router: Sendable {
    public let configuration: OutboundConfiguration
    private let resolver: RouteResolver
    private let cache: Mutex<TransportCache>
    private let cacheFile: String?
    private let lastSaved = Mutex(Date.distantPast)
    private let logger: Logger

    /// - Parameter cacheFile: where the transport cache survives restarts (`<spool>/state/transport-cache.json`);
    ///   nil keeps it in memory only.
    public init(configuration: OutboundConfiguration, cacheFile: String?, logger: Logger) {
        self.configuration = configuration
        self.resolver = RouteResolver(resolver: SystemResolver(servers: configuration.dnsServers))
        self.cacheFile = cacheFile
        self.logger = logger
        var loaded = TransportCache()
        if let cacheFile, let data = FileManager.default.contents(atPath: cacheFile) {
            if let decoded = try? JSONDecoder().decode(TransportCache.self, from: data) {
                loaded = decoded
            } else {
                logger.warning("transport-cache-unreadable", metadata: ["file": "\(cacheFile)"])
            }
        }
        cache = Mutex(loaded)
    }

    /// The plan for one destination right now.
    public func plan(_ destination: Destination, now: Date = Date(), seed: UInt64 = UInt64.random(in: 0...UInt64.max))
        -> RoutePlan
    {
        let context = RoutingContext(
            identity: configuration.identity, capability: configuration.capability,
            staticRoutes: configuration.staticRoutes, mxPort: configuration.mxPort,
            familyMismatch: configuration.familyMismatch, acceptLoopbackFromDNS: configuration.acceptLoopbackFromDNS,
            transportCache: cache.withLock { $0 }, now: now, seed: seed)
        return resolver.plan(destination, context: context)
    }

    public var transportCache: TransportCache { cache.withLock { $0 } }

    /// A connection to `endpoint` delivered: remember it for `transport_cache_ttl`.
    func recordSuccess(destination: String, mxHost: String, endpoint: Endpoint, now: Date) {
        let changed = cache.withLock { cache in
            let before = cache.success(for: destination, now: now)
            cache.recordSuccess(
                destination: destination, mxHost: mxHost, endpoint: endpoint, now: now,
                ttl: configuration.transportCacheTTL.seconds)
            return before?.endpoint != endpoint || before?.mxHost != mxHost
        }
        // Rewriting the file for every delivery cost ~10 % of the relay path's CPU (perf): when only the expiry
        // moved, write at most once a minute. A restart may then forget up to a minute of renewals: harmless.
        if changed || lastSaved.withLock({ now.timeIntervalSince($0) >= 60 }) { save(now: now) }
    }

    /// A connection-level failure (refused, unreachable, timeout): skip the address for a while.
    func recordFailure(endpoint: Endpoint, reason: String, now: Date) {
        cache.withLock { cache in
            cache.recordFailure(
                endpoint: endpoint, now: now, ttl: configuration.negativeCacheTTL.seconds, reason: reason)
        }
        save(now: now)
    }

    /// Writes the cache with temp file + rename, so a crash leaves the old or the new file, never half of one.
    private func save(now: Date) {
        guard let cacheFile else { return }
        lastSaved.withLock { $0 = now }
        let snapshot = cache.withLock { cache in
            cache.prune(now: now)
            return cache
        }
        guard let data = try? JSONEncoder().encode(snapshot) else { return }
        let temporary = cacheFile + ".tmp.\(UInt32.random(in: 0...UInt32.max))"
        guard FileManager.default.createFile(atPath: temporary, contents: data, attributes: [.posixPermissions: 0o600]),
            rename(temporary, cacheFile) == 0
        else {
            unlink(temporary)
            logger.warning("transport-cache-save-failed", metadata: ["file": "\(cacheFile)"])
            return
        }
    }
}
