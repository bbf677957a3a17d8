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

    public init(policy: RecipientPolicy, concurrency: Int = 20, localRetryDelay: Duration = .seconds(60)) {
        self.policy = policy
        self.concurrency = concurrency
        self.localRetryDelay = localRetryDelay
    }
}

public final class QueueRunner: Sendable {
    private let spool: Spool
    private let configuration: DeliveryConfiguration
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
        self.configuration = configuration
        self.logger = logger
        self.localDelivery = LocalDelivery(spool: spool, logger: logger)
    }

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

    /// One delivery run for one message. Returns when it should run again, or nil when nothing is left to do now.
    private func run(_ id: QueueID) -> Date? {
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

        var changed = false
        var localRetry = false
        var remotePending = 0
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
                case .temporaryFailure(let reason):
                    envelope.recipients[index].lastReply = reason
                    envelope.recipients[index].lastStatus = "4.3.0"
                    localRetry = true
                case .permanentFailure(let reason, let status):
                    envelope.recipients[index].state = .failed
                    envelope.recipients[index].lastReply = reason
                    envelope.recipients[index].lastStatus = status
                }
                changed = true
            case .remote:
                remotePending += 1
            case .invalid(let reason):
                envelope.recipients[index].state = .failed
                envelope.recipients[index].lastReply = reason
                envelope.recipients[index].lastStatus = "5.1.3"
                logger.error(
                    "delivery",
                    metadata: ["id": "\(id)", "rcpt": "<\(address)>", "result": "failed", "reason": "\(reason)"])
                changed = true
            }
        }
        if remotePending > 0 {
            logger.info(
                "waiting",
                metadata: [
                    "id": "\(id)", "nrcpt": "\(remotePending)",
                    "reason": "remote recipients stay queued: no outbound transport is configured in this build",
                ])
        }
        var retryAt: Date? = nil
        if localRetry {
            let next = now.addingTimeInterval(configuration.localRetryDelay.seconds)
            envelope.nextAttempt = Int64(next.timeIntervalSince1970)
            retryAt = next
            changed = true
        }
        if !envelope.recipients.contains(where: { $0.state == .pending }) {
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
        if changed {
            do throws(SpoolError) {
                try spool.update(envelope)
            } catch {
                // The recipients delivered in this run may be delivered again later: a duplicate, never a loss.
                logger.error("envelope-update-failed", metadata: ["id": "\(id)", "reason": "\(error)"])
                return now.addingTimeInterval(configuration.localRetryDelay.seconds)
            }
        }
        return retryAt
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
