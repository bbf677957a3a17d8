import Dispatch
import Foundation
import Logging
import SMTPProtocol
import Spool
import Synchronization

/// Delivery takes committed messages out of the spool and delivers them. The queue runner schedules: it wakes as
/// soon as the server commits a message (no polling), runs a bounded number of deliveries at once, and re-runs a
/// message whose retry time has come. Each run loads the envelope, delivers the pending recipients it can, records
/// each recipient's state with the atomic envelope update, and removes the message when nobody is pending.

public struct DeliveryConfiguration: Sendable {
    /// Decides which recipients are local (Maildir) and which are for other hosts.
    public var policy: RecipientPolicy
    /// Deliveries running at once.
    public var concurrency: Int
    /// When a local delivery fails for a temporary reason (disk full, I/O error), try again after this long.
    public var localRetryDelay: Duration
    /// The outbound engine's router; nil leaves remote recipients queued (no outbound transport).
    public var router: Router?
    /// Reports, delay notices and expiry; nil: failures are only logged.
    public var bounces: BounceSettings?

    public init(
        policy: RecipientPolicy, concurrency: Int = 20, localRetryDelay: Duration = .seconds(60), router: Router? = nil,
        bounces: BounceSettings? = nil
    ) {
        self.policy = policy
        self.concurrency = concurrency
        self.localRetryDelay = localRetryDelay
        self.router = router
        self.bounces = bounces
    }
}

public struct BounceSettings: Sendable {
    public var hostname: String
    public var maxQueueLifetime: Duration
    /// Zero turns delay notices off.
    public var delayWarningAfter: Duration
    /// `postmaster` (= postmaster@hostname) or a full address.
    public var doubleBounceRecipient: String

    public init(
        hostname: String, maxQueueLifetime: Duration, delayWarningAfter: Duration, doubleBounceRecipient: String
    ) {
        self.hostname = hostname
        self.maxQueueLifetime = maxQueueLifetime
        self.delayWarningAfter = delayWarningAfter
        self.doubleBounceRecipient = doubleBounceRecipient
    }
}

public final class QueueRunner: Sendable {
    private let spool: Spool
    /// Replaced as a whole by a config reload (SIGHUP); a delivery run reads it once per use.
    private let settings: Mutex<DeliveryConfiguration>
    private var configuration: DeliveryConfiguration { settings.withLock { $0 } }
    private let logger: Logger
    private let localDelivery: LocalDelivery
    private let scheduler = DispatchQueue(label: "dualmta.queue-runner")
    private let workers = DispatchQueue(label: "dualmta.delivery", attributes: .concurrent)
    private let state = Mutex(SchedulerState())
    private let timers = RetryTimers()

    struct SchedulerState {
        /// Messages waiting for a worker, in arrival order, without duplicates.
        var ready: [QueueID] = []
        var readySet: Set<QueueID> = []
        /// Messages a worker is on; a wake-up for one of them marks it to run again afterwards.
        var running: Set<QueueID> = []
        var runAgain: Set<QueueID> = []
        var stopped = false
    }

    public init(spool: Spool, configuration: DeliveryConfiguration, logger: Logger) {
        self.spool = spool
        self.settings = Mutex(configuration)
        self.logger = logger
        self.localDelivery = LocalDelivery(spool: spool, logger: logger)
    }

    /// A reloaded config: runs that start from now on use it; runs in progress finish with the old one.
    public func update(_ configuration: DeliveryConfiguration) { settings.withLock { $0 = configuration } }

    /// Schedules every message already in the queue (after start-up recovery).
    public func start() {
        workers.async { [self] in
            do throws(SpoolError) {
                for id in try spool.queuedIDs() { wake(id) }
            } catch {
                logger.error("queue-scan-failed", metadata: ["reason": "\(error)"])
            }
        }
    }

    /// A message was committed (or should be retried now): deliver it as soon as a worker is free.
    public func wake(_ id: QueueID) {
        let start: Bool = state.withLock { state in
            guard !state.stopped else { return false }
            if state.running.contains(id) {
                state.runAgain.insert(id)
                return false
            }
            if state.readySet.insert(id).inserted { state.ready.append(id) }
            return true
        }
        scheduler.async { [timers] in timers.cancel(id) }
        if start { dispatchWork() }
    }

    /// Stops scheduling; deliveries in progress finish on their own.
    public func stop() {
        state.withLock { $0.stopped = true }
        scheduler.async { [timers] in timers.cancelAll() }
    }

    /// Number of deliveries in progress.
    public var busy: Int { state.withLock { $0.running.count } }

    private func dispatchWork() {
        while let id = state.withLock({ state -> QueueID? in
            guard !state.stopped, state.running.count < configuration.concurrency, !state.ready.isEmpty else {
                return nil
            }
            let id = state.ready.removeFirst()
            state.readySet.remove(id)
            state.running.insert(id)
            return id
        }) {
            workers.async { [self] in
                let retryAt = run(id)
                finished(id, retryAt: retryAt)
            }
        }
    }

    private func finished(_ id: QueueID, retryAt: Date?) {
        let again = state.withLock { state in
            state.running.remove(id)
            return state.runAgain.remove(id) != nil
        }
        if again {
            wake(id)
        } else if let retryAt {
            schedule(id, at: retryAt)
        }
        dispatchWork()
    }

    private func schedule(_ id: QueueID, at date: Date) {
        let delay = max(0, date.timeIntervalSinceNow)
        scheduler.async { [self] in
            let timer = DispatchSource.makeTimerSource(queue: scheduler)
            timer.schedule(deadline: .now() + .milliseconds(Int(delay * 1000)))
            timer.setEventHandler { [weak self] in self?.wake(id) }
            timers.replace(id, with: timer)
            timer.resume()
        }
    }

    /// One delivery run for one message, under the message's lock. Returns when it should run again, or nil when
    /// nothing is left to do now.
    private func run(_ id: QueueID) -> Date? {
        // `dualmta queue hold/bounce/flush` edit the envelope under flock(LOCK_EX) on queue/<id>.msg (never renamed);
        // holding the same lock from the first read to the last write means neither side overwrites the other.
        let lock = open(spool.messagePath(id), O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        if lock >= 0 { flock(lock, LOCK_EX) }
        defer { if lock >= 0 { close(lock) } }
        return runLocked(id)
    }

    private func runLocked(_ id: QueueID) -> Date? {
        var envelope: Envelope
        do throws(SpoolError) {
            envelope = try spool.envelope(id)
        } catch .notFound {
            return nil  // delivered and removed by an earlier run
        } catch {
            logger.error("queue-file-corrupt", metadata: ["id": "\(id)", "reason": "\(error)"])
            try? spool.quarantine(id, reason: "\(error)")
            return nil
        }
        if envelope.held { return nil }
        let now = Date()
        if Double(envelope.nextAttempt) > now.timeIntervalSince1970 {
            return Date(timeIntervalSince1970: Double(envelope.nextAttempt))
        }

        var localRetry = false
        var remoteIndices: [Int] = []
        for index in envelope.recipients.indices where envelope.recipients[index].state == .pending {
            let address = envelope.recipients[index].address
            switch RecipientTarget.classify(address, policy: configuration.policy) {
            case .local(let domain, let user):
                let outcome = localDelivery.deliver(
                    envelope: envelope, recipientIndex: index, domain: domain, user: user)
                envelope.recipients[index].updated = Int64(now.timeIntervalSince1970)
                switch outcome {
                case .delivered:
                    envelope.recipients[index].state = .delivered
                    envelope.recipients[index].lastReply = "delivered to Maildir"
                    envelope.recipients[index].lastStatus = "2.0.0"
                case .temporaryFailure(let reason):
                    envelope.recipients[index].lastReply = reason
                    envelope.recipients[index].lastStatus = "4.3.0"
                    localRetry = true
                case .permanentFailure(let reason, let status):
                    envelope.recipients[index].state = .failed
                    envelope.recipients[index].lastReply = reason
                    envelope.recipients[index].lastStatus = status
                }
                logFinal(envelope, index)
            case .remote:
                remoteIndices.append(index)
            case .invalid(let reason):
                envelope.recipients[index].state = .failed
                envelope.recipients[index].lastReply = reason
                envelope.recipients[index].lastStatus = "5.1.1"
                logFinal(envelope, index)
            }
        }

        var remoteDeferred = false
        if !remoteIndices.isEmpty {
            if let router = configuration.router {
                let outbound = OutboundDelivery(router: router, logger: logger, spool: spool)
                let result = outbound.deliver(&envelope, indices: remoteIndices, now: now)
                remoteDeferred = !result.deferred.isEmpty
            } else {
                logger.info(
                    "waiting",
                    metadata: [
                        "id": "\(id)", "nrcpt": "\(remoteIndices.count)",
                        "reason": "remote recipients stay queued: no outbound transport is configured",
                    ])
            }
        }

        expireIfTooOld(&envelope, now: now)
        if !reportFailures(&envelope, now: now) {
            // The report could not be queued (spool full?): keep everything as it was and try again later;
            // the recipients delivered in this run may be delivered again then (a duplicate, never a loss).
            return now.addingTimeInterval(configuration.localRetryDelay.seconds)
        }
        warnIfDelayed(&envelope, now: now)

        if envelope.isFinished {
            do throws(SpoolError) {
                try spool.remove(id)
                logger.info(
                    "removed",
                    metadata: [
                        "id": "\(id)",
                        "delivered": "\(envelope.recipients.filter { $0.state == .delivered }.count)",
                        "failed": "\(envelope.recipients.filter { $0.state == .failed }.count)",
                    ])
            } catch {
                logger.error("queue-remove-failed", metadata: ["id": "\(id)", "reason": "\(error)"])
            }
            return nil
        }

        // Retry intervals count from the end of this run: a slow run must not make the next one overdue at once.
        let finished = Date()
        var retryAt: Date? = nil
        if localRetry {
            retryAt = finished.addingTimeInterval(configuration.localRetryDelay.seconds)
        }
        if remoteDeferred, let router = configuration.router {
            // RFC 5321 §4.5.4.1: keep it and try again later, on the configured schedule.
            let runs = (Int(envelope.extra["runs"] ?? "") ?? 0) + 1
            envelope.extra["runs"] = String(runs)
            let next = Date(
                timeIntervalSince1970: Double(
                    router.configuration.retrySchedule.nextAttempt(
                        afterFailedRuns: runs, now: Int64(finished.timeIntervalSince1970))))
            retryAt = retryAt.map { min($0, next) } ?? next
        }
        if let retryAt {
            // Never sleep past the expiry or the delay warning: both are decided in a run.
            let deadlines = [expiryDate(envelope), delayWarningDate(envelope)].compactMap { $0 }.filter {
                $0 > finished
            }
            let wake = ([retryAt] + deadlines).min() ?? retryAt
            envelope.nextAttempt = Int64(wake.timeIntervalSince1970.rounded(.up))
            logger.info(
                "deferred",
                metadata: [
                    "id": "\(id)", "next_attempt": "\(Int64(wake.timeIntervalSince1970))",
                    "runs": "\(envelope.extra["runs"] ?? "0")",
                ])
        }
        do throws(SpoolError) {
            try spool.update(envelope)
        } catch .notFound {
            return nil  // deleted by the administrator meanwhile
        } catch {
            // The recipients delivered in this run may be delivered again later: a duplicate, never a loss.
            logger.error("envelope-update-failed", metadata: ["id": "\(id)", "reason": "\(error)"])
            return now.addingTimeInterval(configuration.localRetryDelay.seconds)
        }
        return retryAt.map { _ in Date(timeIntervalSince1970: Double(envelope.nextAttempt)) }
    }

    private func logFinal(_ envelope: Envelope, _ index: Int) {
        let recipient = envelope.recipients[index]
        let result: String
        switch recipient.state {
        case .delivered: result = "delivered"
        case .failed: result = "failed"
        case .pending: result = "deferred"
        }
        logger.info(
            "recipient",
            metadata: [
                "id": "\(envelope.id)", "rcpt": "<\(recipient.address)>", "result": "\(result)",
                "status": "\(recipient.lastStatus ?? "")", "reason": "\(recipient.lastReply ?? "")",
            ])
    }

    private func expiryDate(_ envelope: Envelope) -> Date? {
        guard let lifetime = configuration.bounces?.maxQueueLifetime else { return nil }
        return Date(timeIntervalSince1970: Double(envelope.arrival) + lifetime.seconds)
    }

    private func delayWarningDate(_ envelope: Envelope) -> Date? {
        guard let after = configuration.bounces?.delayWarningAfter, after > .zero, !envelope.delayWarned,
            !envelope.sender.isEmpty
        else { return nil }
        return Date(timeIntervalSince1970: Double(envelope.arrival) + after.seconds)
    }

    /// Past `max_queue_lifetime`, what is still pending fails with its last temporary status (else 4.4.7).
    private func expireIfTooOld(_ envelope: inout Envelope, now: Date) {
        guard let expiry = expiryDate(envelope), now >= expiry else { return }
        for index in envelope.recipients.indices where envelope.recipients[index].state == .pending {
            let last = envelope.recipients[index].lastStatus ?? ""
            envelope.recipients[index].state = .failed
            envelope.recipients[index].lastStatus = last.hasPrefix("4.") ? last : "4.4.7"
            let reason = envelope.recipients[index].lastReply.map { "; last error: \($0)" } ?? ""
            envelope.recipients[index].lastReply = "delivery time expired\(reason)"
            logger.info(
                "expired",
                metadata: [
                    "id": "\(envelope.id)", "rcpt": "<\(envelope.recipients[index].address)>",
                    "status": "\(envelope.recipients[index].lastStatus ?? "")",
                ])
        }
    }

    /// Sends one report covering every failed recipient not reported yet. False when it could not be queued.
    private func reportFailures(_ envelope: inout Envelope, now: Date) -> Bool {
        let unreported = envelope.recipients.indices.filter {
            envelope.recipients[$0].state == .failed && envelope.extra["rcpt.\($0).reported"] == nil
        }
        guard !unreported.isEmpty else { return true }
        guard let bouncer = configuration.bounces.map({ bouncer(for: $0) }) else {
            for index in unreported { envelope.extra["rcpt.\(index).reported"] = "none" }
            return true
        }
        do throws(SpoolError) {
            let report = try bouncer.report(.failed, envelope: envelope, indices: unreported, now: now)
            CrashPoint.hit("bounce.committed")
            for index in unreported { envelope.extra["rcpt.\(index).reported"] = report?.rawValue ?? "discarded" }
            if let report { wake(report) }
            return true
        } catch {
            logger.error("bounce-queue-failed", metadata: ["id": "\(envelope.id)", "reason": "\(error)"])
            return false
        }
    }

    /// One delay notice per message, once `delay_warning_after` has passed (never for a `<>` sender).
    private func warnIfDelayed(_ envelope: inout Envelope, now: Date) {
        guard let due = delayWarningDate(envelope), now >= due, let settings = configuration.bounces else { return }
        let pending = envelope.recipients.indices.filter { envelope.recipients[$0].state == .pending }
        guard !pending.isEmpty else { return }
        do throws(SpoolError) {
            if let notice = try bouncer(for: settings).report(.delayed, envelope: envelope, indices: pending, now: now)
            {
                wake(notice)
            }
            envelope.delayWarned = true
        } catch {
            logger.error("delay-notice-failed", metadata: ["id": "\(envelope.id)", "reason": "\(error)"])
        }
    }

    private func bouncer(for settings: BounceSettings) -> Bouncer {
        Bouncer(
            spool: spool, logger: logger, hostname: settings.hostname,
            doubleBounceRecipient: settings.doubleBounceRecipient, maxQueueLifetime: settings.maxQueueLifetime)
    }
}

extension Duration {
    var seconds: Double {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }
}

/// Retry timers by message. Confinement: used only on the runner's `scheduler` queue.
private final class RetryTimers: @unchecked Sendable {
    private var timers: [QueueID: DispatchSourceTimer] = [:]

    func replace(_ id: QueueID, with timer: DispatchSourceTimer) {
        timers.updateValue(timer, forKey: id)?.cancel()
    }

    func cancel(_ id: QueueID) {
        timers.removeValue(forKey: id)?.cancel()
    }

    func cancelAll() {
        timers.values.forEach { $0.cancel() }
        timers = [:]
    }
}
