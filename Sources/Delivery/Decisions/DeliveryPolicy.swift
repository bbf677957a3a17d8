import SMTPProtocol

/// The settings the delivery decisions depend on, as plain values (from the config file's retry, lifetime and
/// bounce keys). Times are whole seconds; the clock is always an argument, never read here.
struct DeliveryPolicy: Equatable, Sendable {
    /// `retry_schedule`: the wait after the 1st, 2nd, ... run that ended with recipients deferred; the last repeats.
    var retrySchedule: RetrySchedule
    /// After a temporary local failure (disk full, I/O error, a report that could not be queued).
    var localRetryDelay: Int64
    /// Reports, delay notices and expiry; nil: failures are only logged (no report is ever made).
    var bounces: Bounces?
    /// Whether an outbound transport exists; without one, remote recipients wait and no retry is scheduled for them.
    var remoteDelivery: Bool

    struct Bounces: Equatable, Sendable {
        /// `max_queue_lifetime` in seconds.
        var maxQueueLifetime: Int64
        /// `bounce_queue_lifetime` in seconds: the lifetime of messages from `<>` and of our own reports, so a
        /// report nobody can take ends in a double bounce within this time rather than `maxQueueLifetime`.
        var bounceQueueLifetime: Int64
        /// `delay_warning_after` in seconds; 0 turns delay notices off.
        var delayWarningAfter: Int64
        /// The sender of double-bounce notices (`double-bounce@<hostname>`): a failure of one of those is dropped.
        var internalSender: String
    }
}
