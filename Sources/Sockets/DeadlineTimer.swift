import Dispatch

/// A deadline that moves often (every reply, every stage) backed by one Dispatch timer source. Moving it later only
/// records the new time; the source is rescheduled when it fires early, or at once when the new deadline is
/// earlier than the time it is set for. Cancelling and creating a source per move woke Dispatch's event thread each
/// time, several times per message (issue 7, docs/performance.md).
///
/// Confinement: use it only on `queue`, where `onExpiry` runs too.
public final class DeadlineTimer {
    private let queue: DispatchQueue
    private let onExpiry: () -> Void
    private var source: DispatchSourceTimer?
    private var deadline = DispatchTime.distantFuture
    /// When the source is set to fire; never later than `deadline` while armed.
    private var firesAt = DispatchTime.distantFuture

    public init(queue: DispatchQueue, onExpiry: @escaping () -> Void) {
        self.queue = queue
        self.onExpiry = onExpiry
    }

    /// Sets the deadline to `duration` from now; `onExpiry` runs once it passes without another `arm`.
    public func arm(after duration: Duration) {
        let (seconds, attoseconds) = duration.components
        let nanoseconds = max(0, seconds) * 1_000_000_000 + max(0, attoseconds) / 1_000_000_000
        arm(at: .now() + .nanoseconds(Int(clamping: nanoseconds)))
    }

    public func arm(at deadline: DispatchTime) {
        self.deadline = deadline
        if let source {
            if deadline < firesAt {
                firesAt = deadline
                source.schedule(deadline: deadline)
            }
            return
        }
        let source = DispatchSource.makeTimerSource(queue: queue)
        firesAt = deadline
        source.schedule(deadline: deadline)
        source.setEventHandler { [weak self] in self?.fired() }
        self.source = source
        source.activate()
    }

    /// Stops the timer for good (until the next `arm`).
    public func cancel() {
        source?.cancel()
        source = nil
        deadline = .distantFuture
        firesAt = .distantFuture
    }

    deinit {
        source?.cancel()
    }

    private func fired() {
        guard let source else { return }
        if DispatchTime.now() < deadline {
            firesAt = deadline
            source.schedule(deadline: deadline)
            return
        }
        firesAt = .distantFuture  // a one-shot source that fired: the next arm must schedule it again
        onExpiry()
    }
}
