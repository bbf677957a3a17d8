import DNS
import Foundation
import Logging
import NetAddress
import Synchronization

/// Plans routes with live DNS answers and the shared transport cache: the one place delivery, `dualmta route` and
/// the sender return-path check get their plans from, so the explainer prints exactly what delivery will do. The
/// resolver and the clock are parameters (tests give a lab resolver and fixed times). Its calls block on DNS: use
/// it from worker threads, never from a connection's queue.
public final class Router: Sendable {
    public let policy: RoutingPolicy
    /// How long a transport that worked stays first in its preference level.
    public let transportCacheTTL: Duration
    /// How long an address that refused or timed out is skipped; kept below the shortest retry interval, so a
    /// retry always finds it usable again.
    public let negativeCacheTTL: Duration
    private let resolver: RouteResolver
    private let cache: Mutex<TransportCache>
    private let cacheFile: String?
    private let lastSaved = Mutex(Date.distantPast)
    private let logger: Logger

    /// - Parameter cacheFile: where the transport cache survives restarts (`<spool>/state/transport-cache.json`);
    ///   nil keeps it in memory only.
    public init(
        policy: RoutingPolicy, resolver: any DNSResolver, transportCacheTTL: Duration, negativeCacheTTL: Duration,
        cacheFile: String?, logger: Logger
    ) {
        self.policy = policy
        self.transportCacheTTL = transportCacheTTL
        self.negativeCacheTTL = negativeCacheTTL
        self.resolver = RouteResolver(resolver: resolver)
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
    public func plan(_ destination: Destination, now: Date, seed: UInt64 = UInt64.random(in: 0...UInt64.max))
        -> RoutePlan
    {
        let context = RoutingContext(policy: policy, transportCache: cache.withLock { $0 }, now: now, seed: seed)
        return resolver.plan(destination, context: context)
    }

    public var transportCache: TransportCache { cache.withLock { $0 } }

    /// A connection to `endpoint` delivered: remember it for `transport_cache_ttl`.
    public func recordSuccess(destination: String, mxHost: String, endpoint: Endpoint, now: Date) {
        let changed = cache.withLock { cache in
            let before = cache.success(for: destination, now: now)
            cache.recordSuccess(
                destination: destination, mxHost: mxHost, endpoint: endpoint, now: now,
                ttl: Self.timeInterval(transportCacheTTL))
            return before?.endpoint != endpoint || before?.mxHost != mxHost
        }
        // Rewriting the file for every delivery cost ~10 % of the relay path's CPU (perf): when only the expiry
        // moved, write at most once a minute. A restart may then forget up to a minute of renewals: harmless.
        if changed || lastSaved.withLock({ now.timeIntervalSince($0) >= 60 }) { save(now: now) }
    }

    /// A connection-level failure (refused, unreachable, timeout): skip the address for a while.
    public func recordFailure(endpoint: Endpoint, reason: String, now: Date) {
        cache.withLock { cache in
            cache.recordFailure(
                endpoint: endpoint, now: now, ttl: Self.timeInterval(negativeCacheTTL), reason: reason)
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

    private static func timeInterval(_ duration: Duration) -> TimeInterval {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }
}
