import NetAddress

/// The metrics dualmta exports (`/metrics` on `http_listen`, `dualmta stats`), in one process-wide registry. Modules
/// count at their existing log points; labels are the address family (`ipv4`/`ipv6`) and the MX rank (1 = the most
/// preferred level of the route plan, 2 = the next, ...), so every label has a small, bounded set of values.
public enum DualMTAMetrics {
    public static let connectAttempts = MetricFamily(
        name: "dualmta_connect_attempts_total",
        help: "Outbound TCP connects started, by address family and MX rank.", kind: .counter)
    public static let connectSuccesses = MetricFamily(
        name: "dualmta_connect_successes_total",
        help: "Outbound TCP connects that completed (and, with happy-eyeballs, won), by family and MX rank.",
        kind: .counter)
    public static let connectFailures = MetricFamily(
        name: "dualmta_connect_failures_total",
        help:
            "Outbound connections that failed, by family, MX rank and reason (refused, unreachable, timeout, tls).",
        kind: .counter)
    public static let connectLost = MetricFamily(
        name: "dualmta_connect_lost_total",
        help: "Happy Eyeballs attempts closed because another address connected first, by family and MX rank.",
        kind: .counter)
    public static let outboundConnections = MetricFamily(
        name: "dualmta_outbound_connections_total",
        help:
            "Outbound SMTP sessions by the connection they ran on: new (connected for it) or reused (from the cache).",
        kind: .counter)
    public static let connectionCacheClosed = MetricFamily(
        name: "dualmta_connection_cache_closed_total",
        help:
            "Outbound connections closed instead of parked, or dropped from the cache, by reason (limit, full, evicted,"
            + " expired, peer-closed, peer-spoke, shutdown).",
        kind: .counter)
    public static let connectionCacheParked = MetricFamily(
        name: "dualmta_connection_cache_parked",
        help: "Outbound connections parked in the connection cache right now, waiting for the next message.",
        kind: .gauge)
    public static let familyFallbacks = MetricFamily(
        name: "dualmta_family_fallbacks_total",
        help: "Deliveries that succeeded over one family after an attempt over the other failed (from, to).",
        kind: .counter)
    public static let remoteRecipients = MetricFamily(
        name: "dualmta_remote_recipients_total",
        help: "Per-recipient outcomes of outbound SMTP sessions (sent, rejected, deferred), by family and MX rank.",
        kind: .counter)
    public static let deliveryDuration = MetricFamily(
        name: "dualmta_delivery_duration_seconds",
        help: "From the start of a delivery run for a destination to the accepted message, by family and MX rank.",
        kind: .histogram(buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300]))
    public static let queueSize = MetricFamily(
        name: "dualmta_queue_messages", help: "Messages in the queue at scrape time.", kind: .gauge)
    public static let messagesAccepted = MetricFamily(
        name: "dualmta_messages_accepted_total",
        help: "Messages accepted into the queue over SMTP, by the address family of the listener.", kind: .counter)
    public static let bounces = MetricFamily(
        name: "dualmta_bounces_total", help: "Non-delivery reports queued to senders.", kind: .counter)
    public static let doubleBounces = MetricFamily(
        name: "dualmta_double_bounces_total",
        help: "Failed non-delivery reports turned into a notice to the postmaster.", kind: .counter)
    public static let authThrottled = MetricFamily(
        name: "dualmta_auth_throttled_total",
        help: "AUTH attempts refused with 454 4.7.0 because of earlier failures, by address or by user name.",
        kind: .counter)
    public static let faults = MetricFamily(
        name: "dualmta_faults_total",
        help: "Fault rules that fired (failures on purpose), by side, stage and address family.", kind: .counter)

    public static let all: [MetricFamily] = [
        connectAttempts, connectSuccesses, connectFailures, connectLost, outboundConnections, connectionCacheClosed,
        connectionCacheParked, familyFallbacks, remoteRecipients,
        deliveryDuration, queueSize, messagesAccepted, bounces, doubleBounces, authThrottled, faults,
    ]

    /// The process-wide registry; the label-less samples start at 0 so a scrape lists them from the start.
    public static let registry: MetricsRegistry = {
        let registry = MetricsRegistry(all)
        registry.increment(bounces, by: 0)
        registry.increment(doubleBounces, by: 0)
        registry.set(queueSize, to: 0)
        return registry
    }()

    /// `family` and `mx_rank` labels.
    public static func labels(_ family: AddressFamily, rank: Int) -> [String: String] {
        ["family": family.rawValue, "mx_rank": String(rank)]
    }
}
