import Dispatch
import Foundation
import Logging
import Routing
import SMTPProtocol
import Spool

/// One delivery run of one message: the I/O shell around the decisions (Decisions/). It takes the message lock,
/// loads the envelope, delivers the pending local recipients, hands the remote ones to `OutboundDelivery`, asks
/// `RunDecisions.conclude` what follows (expiry, reports, delay notice, next attempt, removal), executes that, and
/// writes the envelope once. Blocking steps (files, fsync, DNS) run on the work queue; while attempts are on the
/// wire the run is suspended and no thread waits for it.
struct MessageRun: Sendable {
    let id: QueueID
    let spool: Spool
    let recipientPolicy: RecipientPolicy
    let policy: DeliveryPolicy
    let outbound: OutboundTransport?
    let reports: ReportWriter?
    let localDelivery: LocalDelivery
    /// Carries the queue id as metadata: every line of the run names its message.
    let logger: Logger
    let work: BlockingWork
    /// This run's entries for the message journal (`dualmta trace`), written in one append when the run ends.
    let history: HistoryBuffer
    /// Schedules a queued report at once.
    let wake: @Sendable (QueueID) -> Void

    /// Returns when the message should run again, or nil when nothing is left to do now (or a wake-up will come).
    func run() async -> Date? {
        let started = await work.run {
            let started = begin()
            if case .stop = started { history.flush() }
            return started
        }
        guard case .deliver(let lock, var envelope, let remote, var summary) = started else {
            if case .stop(let retryAt) = started { return retryAt }
            return nil
        }
        if !remote.isEmpty {
            if let outbound {
                let delivery = OutboundDelivery(
                    configuration: outbound.configuration, router: outbound.router, logger: logger, spool: spool,
                    work: work, history: history)
                envelope = await delivery.deliver(envelope, indices: remote)
                summary.remoteDeferred = remote.contains { envelope.recipients[$0].state == .pending }
            } else {
                logger.info(
                    "waiting",
                    metadata: [
                        "nrcpt": "\(remote.count)",
                        "reason": "remote recipients stay queued: no outbound transport is configured",
                    ])
            }
        }
        let finalEnvelope = envelope
        let finalSummary = summary
        return await work.run {
            defer {
                history.flush()
                lock?.release()
            }
            return end(finalEnvelope, summary: finalSummary)
        }
    }

    enum Start: Sendable {
        /// Nothing to do now; run again at the date, if any.
        case stop(Date?)
        /// Local recipients are done; `remote` are the indices for the outbound engine.
        case deliver(MessageLock?, Envelope, remote: [Int], RunDecisions.RunSummary)
    }

    /// Lock, load, check whether the message is due, deliver the local recipients.
    private func begin() -> Start {
        let lock: MessageLock?
        do throws(SpoolError) {
            lock = try spool.lockMessage(id)
        } catch .notFound {
            return .stop(nil)  // delivered and removed by an earlier run
        } catch {
            lock = nil  // loading the envelope tells what is wrong
        }
        var envelope: Envelope
        do throws(SpoolError) {
            envelope = try spool.envelope(id)
        } catch .notFound {
            lock?.release()
            return .stop(nil)
        } catch {
            logger.error("queue-file-corrupt", metadata: ["reason": "\(error)"])
            try? spool.quarantine(id, reason: "\(error)")
            lock?.release()
            return .stop(nil)
        }
        let now = Int64(Date().timeIntervalSince1970)
        if !MessageHistory(stateDirectory: spool.stateDirectory).exists(id) {
            history.add([Self.receivedEvent(envelope)])
        }
        if envelope.held || envelope.nextAttempt > now {
            lock?.release()
            return .stop(envelope.held ? nil : Date(timeIntervalSince1970: Double(envelope.nextAttempt)))
        }
        var summary = RunDecisions.RunSummary()
        var remote: [Int] = []
        let effects = EffectExecutor(logger: logger, router: outbound?.router, history: history)
        for index in envelope.recipients.indices where envelope.recipients[index].state == .pending {
            switch RecipientTarget.classify(envelope.recipients[index].address, policy: recipientPolicy) {
            case .local(let domain, let user):
                let outcome = localDelivery.deliver(
                    envelope: envelope, recipientIndex: index, domain: domain, user: user)
                let judged = RunDecisions.judgeLocal(outcome, index: index, envelope: &envelope, now: now)
                summary.localRetry = summary.localRetry || judged.retryLocally
                effects.execute(judged.effects, envelope: envelope)
            case .remote:
                remote.append(index)
            case .invalid(let reason):
                effects.execute(
                    RunDecisions.judgeInvalid(reason: reason, index: index, envelope: &envelope, now: now),
                    envelope: envelope)
            }
        }
        return .deliver(lock, envelope, remote: remote, summary)
    }

    /// The first entry of a journal, written by the first run (so SMTP, `send` and reports share one place).
    static func receivedEvent(_ envelope: Envelope) -> HistoryEvent {
        typealias Field = HistoryEvent.Field
        var fields = [
            Field("from", envelope.sender), Field("client", envelope.client),
            Field("protocol", envelope.protocolName), Field("size", "\(envelope.messageSize)"),
            Field("rcpts", envelope.recipients.map(\.address).joined(separator: " ")),
        ]
        if let original = envelope.bounceOf { fields.append(Field("report_of", original.rawValue)) }
        return HistoryEvent(time: envelope.arrival, event: "received", fields: fields)
    }

    /// Conclude: reports, then the one envelope write (or the removal).
    private func end(_ envelope: Envelope, summary: RunDecisions.RunSummary) -> Date? {
        var envelope = envelope
        let now = Date()
        let conclusion = RunDecisions.conclude(
            &envelope, summary: summary, policy: policy, now: Int64(now.timeIntervalSince1970))
        let effects = EffectExecutor(logger: logger, router: outbound?.router, history: history)
        effects.execute(conclusion.effects.filter { !$0.isRemoval }, envelope: envelope)
        for request in conclusion.reports {
            guard let reports else { break }
            do throws(SpoolError) {
                let reportID = try reports.write(request, envelope: envelope, now: now, history: history)
                if request.kind == .failure { CrashPoint.hit("bounce.committed") }
                RunDecisions.recordReport(request, id: reportID, envelope: &envelope)
                wake(reportID)
            } catch {
                switch request.kind {
                case .failure:
                    // Keep everything as it was and try again later; the recipients delivered in this run may be
                    // delivered again then (a duplicate, never a loss).
                    logger.error("bounce-queue-failed", metadata: ["reason": "\(error)"])
                    return Date(timeIntervalSince1970: Double(conclusion.retryAfterReportFailure))
                case .delay:
                    logger.error("delay-notice-failed", metadata: ["reason": "\(error)"])
                case .success:
                    // Not worth delivering anything twice for: logged, and the message goes its way.
                    logger.error("success-notice-failed", metadata: ["reason": "\(error)"])
                }
            }
        }
        switch conclusion.disposition {
        case .remove:
            do throws(SpoolError) {
                try spool.remove(id)
                effects.execute(conclusion.effects.filter(\.isRemoval), envelope: envelope)
            } catch {
                logger.error("queue-remove-failed", metadata: ["reason": "\(error)"])
            }
            return nil
        case .keep(let nextAttempt):
            do throws(SpoolError) {
                try spool.update(envelope)
            } catch .notFound {
                return nil  // deleted by the administrator meanwhile
            } catch {
                // The recipients delivered in this run may be delivered again later: a duplicate, never a loss.
                logger.error("envelope-update-failed", metadata: ["reason": "\(error)"])
                return Date(timeIntervalSince1970: Double(conclusion.retryAfterReportFailure))
            }
            return nextAttempt.map { Date(timeIntervalSince1970: Double($0)) }
        }
    }
}

extension DeliveryEffect {
    /// The `removed` line is written only once the message really left the queue.
    var isRemoval: Bool {
        if case .log(.removed) = self { return true }
        return false
    }
}

/// Runs blocking work (files, fsync, DNS) on the delivery work queue; the awaiting run is suspended meanwhile.
struct BlockingWork: Sendable {
    let queue: DispatchQueue

    func run<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { continuation in
            queue.async { continuation.resume(returning: body()) }
        }
    }
}

/// Runs the delivery runs' async code on the runner's Dispatch queue instead of Swift's cooperative pool. That pool
/// has one thread per core, and one blocked thread (a slow library call anywhere in the process) would stall every
/// run; the Dispatch queue grows threads as needed. Blocking work still goes through `BlockingWork`.
final class DispatchTaskExecutor: TaskExecutor, @unchecked Sendable {
    // @unchecked Sendable: the only stored property is an immutable DispatchQueue.
    let queue: DispatchQueue

    init(queue: DispatchQueue) {
        self.queue = queue
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        queue.async { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }

    func asUnownedTaskExecutor() -> UnownedTaskExecutor {
        UnownedTaskExecutor(ordinary: self)
    }
}
