import Dispatch
import Foundation
import Logging
import Routing
import SMTPProtocol
import Spool
import Synchronization

/// Delivery takes committed messages out of the spool and delivers them. The queue runner schedules: it wakes as
/// soon as the server commits a message (no polling), runs a bounded number of deliveries at once, and re-runs a
/// message whose retry time has come. Each run is a `MessageRun` (MessageRun.swift): the I/O shell around the
/// pure decisions in Decisions/.

public struct DeliveryConfiguration: Sendable {
    /// Decides which recipients are local (Maildir) and which are for other hosts.
    public var policy: RecipientPolicy
    /// Deliveries running at once.
    public var concurrency: Int
    /// When a local delivery fails for a temporary reason (disk full, I/O error), try again after this long.
    public var localRetryDelay: Duration
    /// The outbound engine; nil leaves remote recipients queued (no outbound transport).
    public var outbound: OutboundTransport?
    /// `retry_schedule`: when deferred remote recipients are tried again.
    public var retrySchedule: RetrySchedule
    /// Reports, delay notices and expiry; nil: failures are only logged.
    public var bounces: BounceSettings?
    /// `history_retention`: how long a message's journal is kept after it left the queue.
    public var historyRetention: Duration = .seconds(7 * 86_400)
    /// The journals together never exceed this; the oldest of messages no longer queued go first.
    public var historyMaxTotalBytes = 256 * 1024 * 1024

    public init(
        policy: RecipientPolicy, concurrency: Int = 20, localRetryDelay: Duration = .seconds(60),
        outbound: OutboundTransport? = nil,
        retrySchedule: RetrySchedule = RetrySchedule([]), bounces: BounceSettings? = nil
    ) {
        self.policy = policy
        self.concurrency = concurrency
        self.localRetryDelay = localRetryDelay
        self.outbound = outbound
        self.retrySchedule = retrySchedule
        self.bounces = bounces
    }

    /// The decisions' view of these settings.
    var decisionPolicy: DeliveryPolicy {
        DeliveryPolicy(
            retrySchedule: retrySchedule, localRetryDelay: localRetryDelay.wholeSeconds,
            bounces: bounces.map {
                DeliveryPolicy.Bounces(
                    maxQueueLifetime: $0.maxQueueLifetime.wholeSeconds,
                    bounceQueueLifetime: $0.bounceQueueLifetime.wholeSeconds,
                    delayWarningAfter: $0.delayWarningAfter.wholeSeconds,
                    internalSender: "double-bounce@\($0.hostname)")
            }, remoteDelivery: outbound != nil)
    }
}

/// The outbound engine: how attempts are made, and the router that plans where they go.
public struct OutboundTransport: Sendable {
    public var configuration: OutboundConfiguration
    public var router: Router

    public init(configuration: OutboundConfiguration, router: Router) {
        self.configuration = configuration
        self.router = router
    }
}

public struct BounceSettings: Sendable {
    public var hostname: String
    public var maxQueueLifetime: Duration
    /// The lifetime of reports and other mail from `<>` (`bounce_queue_lifetime`).
    public var bounceQueueLifetime: Duration
    /// Zero turns delay notices off.
    public var delayWarningAfter: Duration
    /// `postmaster` (= postmaster@hostname) or a full address.
    public var doubleBounceRecipient: String

    public init(
        hostname: String, maxQueueLifetime: Duration, delayWarningAfter: Duration, doubleBounceRecipient: String,
        bounceQueueLifetime: Duration = .seconds(86_400)
    ) {
        self.hostname = hostname
        self.maxQueueLifetime = maxQueueLifetime
        self.bounceQueueLifetime = bounceQueueLifetime
        self.delayWarningAfter = delayWarningAfter
        self.doubleBounceRecipient = doubleBounceRecipient
    }
}

extension BounceSettings {
    /// When the queue gives up on this message (the rule of `RunDecisions.expiryDate`), for `queue list/show`.
    public func expiry(of envelope: Envelope) -> Int64 {
        let bounces = DeliveryPolicy.Bounces(
            maxQueueLifetime: maxQueueLifetime.wholeSeconds, bounceQueueLifetime: bounceQueueLifetime.wholeSeconds,
            delayWarningAfter: delayWarningAfter.wholeSeconds, internalSender: "double-bounce@\(hostname)")
        let policy = DeliveryPolicy(
            retrySchedule: RetrySchedule([]), localRetryDelay: 0, bounces: bounces, remoteDelivery: true)
        return RunDecisions.expiryDate(envelope, policy: policy) ?? envelope.arrival + maxQueueLifetime.wholeSeconds
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
    private let executor: DispatchTaskExecutor
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
        self.executor = DispatchTaskExecutor(queue: workers)
    }

    /// A reloaded config: runs that start from now on use it; runs in progress finish with the old one. The old
    /// connection cache is closed (QUIT to every parked session; sessions still running QUIT when they end).
    public func update(_ configuration: DeliveryConfiguration) {
        let old = settings.withLock { settings in
            defer { settings = configuration }
            return settings.outbound?.configuration.connectionCache
        }
        if let old, old !== configuration.outbound?.configuration.connectionCache { old.closeAll() }
    }

    /// The outbound connection cache of the configuration in force (nil when it is off).
    public var connectionCache: ConnectionCache? { configuration.outbound?.configuration.connectionCache }

    /// Schedules every message already in the queue (after start-up recovery), and prunes the message journals
    /// now and every hour.
    public func start() {
        workers.async { [self] in
            do throws(SpoolError) {
                for id in try spool.queuedIDs() { wake(id) }
            } catch {
                logger.error("queue-scan-failed", metadata: ["reason": "\(error)"])
            }
        }
        workers.async { [weak self] in self?.pruneHistoryHourly() }
    }

    private func pruneHistoryHourly() {
        guard !state.withLock({ $0.stopped }) else { return }
        pruneHistory()
        workers.asyncAfter(deadline: .now() + .seconds(3600)) { [weak self] in self?.pruneHistoryHourly() }
    }

    /// Drops the journals of messages that left the queue longer than `history_retention` ago (and the oldest when
    /// they grow past their total bound).
    func pruneHistory() {
        let configuration = self.configuration
        let queued = Set((try? spool.queuedIDs()) ?? [])
        let removed = MessageHistory(stateDirectory: spool.stateDirectory).prune(
            now: Int64(Date().timeIntervalSince1970), retention: configuration.historyRetention.wholeSeconds,
            maxTotalBytes: configuration.historyMaxTotalBytes, isQueued: { queued.contains($0) })
        if removed > 0 { logger.info("history-pruned", metadata: ["removed": "\(removed)"]) }
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
        // Parked sessions end with QUIT before the process does (bounded: a peer that does not answer is cut off).
        configuration.outbound?.configuration.connectionCache?.closeAll(wait: .seconds(1))
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
            Task(executorPreference: executor) { [self] in
                let retryAt = await makeRun(id).run()
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

    private func makeRun(_ id: QueueID) -> MessageRun {
        let configuration = self.configuration  // one snapshot per run: a reload takes effect at the next run
        var runLogger = logger
        runLogger[metadataKey: "id"] = "\(id)"
        let reports = configuration.bounces.map {
            ReportWriter(
                spool: spool, logger: runLogger, hostname: $0.hostname, doubleBounceRecipient: $0.doubleBounceRecipient,
                policy: configuration.decisionPolicy)
        }
        return MessageRun(
            id: id, spool: spool, recipientPolicy: configuration.policy, policy: configuration.decisionPolicy,
            outbound: configuration.outbound,
            reports: reports, localDelivery: localDelivery, logger: runLogger, work: BlockingWork(queue: workers),
            history: HistoryBuffer(journal: MessageHistory(stateDirectory: spool.stateDirectory), id: id),
            wake: { [weak self] id in self?.wake(id) })
    }
}

extension Duration {
    var seconds: Double {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }

    /// Whole seconds, a started second counting as one.
    var wholeSeconds: Int64 { components.seconds + (components.attoseconds > 0 ? 1 : 0) }
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
