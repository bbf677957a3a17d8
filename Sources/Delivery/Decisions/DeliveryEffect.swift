import NetAddress
import Routing
import SMTPProtocol
import Spool

// What the pure delivery decisions ask the shells to do. The decisions never log, count, touch the transport cache
// or the spool themselves: they return these values, and the queue runner executes them in order.

/// One thing the decisions want done, besides the new recipient states they return.
enum DeliveryEffect: Equatable, Sendable {
    /// A log line.
    case log(DeliveryEvent)
    /// Learn from an attempt: the transport cache keeps what worked and skips what refused.
    case cache(CacheUpdate)
    /// A metric sample.
    case metric(DeliveryMetric)
}

/// What the log says, one case per kind of line.
enum DeliveryEvent: Equatable, Sendable {
    /// `delivery`: one line per recipient and attempt.
    case attempt(AttemptLine)
    /// `recipient`: a recipient's state after this run (delivered, failed, deferred).
    case recipient(index: Int, result: RecipientResult, status: EnhancedStatus, reason: String)
    /// `possible-duplicate`: the session broke after the end of data, so the peer may have the message already.
    case possibleDuplicate(address: String, explained: Bool)
    /// `skipped` / `route`: notes of the route plan.
    case skipped(subject: String, reason: String)
    case routeNote(mx: String, address: String, note: String)
    /// `expired`: `max_queue_lifetime` passed while the recipient was still pending.
    case expired(index: Int, status: EnhancedStatus)
    /// `no-report`: the sender's NOTIFY asked for no report of this kind for the recipient.
    case noReport(index: Int, kind: RunDecisions.ReportRequest.Kind)
    /// `discarded`: a failed double-bounce notice, dropped after logging.
    case discarded(recipients: Int)
    /// `deferred`: the message stays queued until `nextAttempt` (unix seconds).
    case deferred(nextAttempt: Int64, failedRuns: Int)
    /// `removed`: nothing is pending any more.
    case removed(delivered: Int, failed: Int)
}

/// The fields of one `delivery` line.
struct AttemptLine: Equatable, Sendable {
    var index: Int
    var attempt: PlannedAttempt
    /// sent, rejected, deferred (a reply) or failed (no usable reply from this host).
    var result: String
    /// `reply=` for a peer's reply, `reason=` otherwise.
    var detail: Detail
    var milliseconds: Int
    /// `tls=` and `cipher=` when the session ran over STARTTLS.
    var tls: TLSNote?
    /// `tls_fallback=`: the handshake failure that made this a plaintext retry.
    var tlsFallback: String?
    /// `tls_policy=`: the outbound TLS policy that applied (none, may, encrypt).
    var tlsPolicy: String?
    /// `fault=`: the lab fault rule behind this attempt's outcome.
    var fault: String? = nil
    /// `conn=`: `new` when the session connected for this attempt, `reused` when it ran on a parked connection;
    /// nil when no session ran (the connect failed).
    var connection: String? = nil

    enum Detail: Equatable, Sendable {
        case reply(String)
        case reason(String)
    }
}

struct TLSNote: Equatable, Sendable {
    var protocolVersion: String
    var cipher: String
}

enum RecipientResult: String, Equatable, Sendable {
    case delivered
    case failed
    case deferred
}

/// Transport cache updates; the shell stamps them with its clock when it applies them.
enum CacheUpdate: Equatable, Sendable {
    /// This MX address took the message for this destination.
    case success(destination: String, mxHost: String, endpoint: Endpoint)
    /// A connect-level failure (refused, unreachable, timed out): skip the address for a while.
    case failure(endpoint: Endpoint, reason: String)
}

/// Metric samples the decisions produce (the connect counters belong to the code that connects).
enum DeliveryMetric: Equatable, Sendable {
    /// `dualmta_remote_recipients_total{result}`: sent, rejected or deferred by a peer.
    case remoteRecipient(family: AddressFamily, rank: Int, result: String)
    /// A TLS failure on an attempt (`dualmta_connect_failures_total{reason="tls"}`).
    case tlsFailure(family: AddressFamily, rank: Int)
    /// The first recipient a destination run delivered: latency, and a family fallback when the message went over
    /// another family than the run's first attempt.
    case firstDelivery(family: AddressFamily, rank: Int, fallbackFrom: AddressFamily?)
}
