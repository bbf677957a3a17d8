import Foundation
import Logging
import Metrics
import Routing
import SMTPProtocol
import Sockets
import Spool
import Synchronization

/// Carries out what the delivery decisions return: writes the log lines, counts the metrics and updates the
/// transport cache (stamped with the clock now). The log line formats live here, once.
struct EffectExecutor: Sendable {
    let logger: Logger
    let router: Router?
    /// The run's journal entries (`dualmta trace`): the log events are collected here as well, and the run writes
    /// them at its end in one append.
    var history: HistoryBuffer? = nil

    /// - Parameter destinationStarted: when the destination's attempts began (the delivery latency metric).
    func execute(
        _ effects: [DeliveryEffect], envelope: Envelope, destinationStarted: ContinuousClock.Instant? = nil
    ) {
        var journal: [HistoryEvent] = []
        let now = Int64(Date().timeIntervalSince1970)
        for effect in effects {
            switch effect {
            case .log(let event):
                log(event, envelope: envelope)
                if let entry = Self.historyEvent(event, envelope: envelope, now: now) { journal.append(entry) }
            case .cache(let update): apply(update)
            case .metric(let metric): count(metric, destinationStarted: destinationStarted)
            }
        }
        history?.add(journal)
    }

    /// The journal entry of a log event (nil for route notes, which belong to the route, not the message).
    static func historyEvent(_ event: DeliveryEvent, envelope: Envelope, now: Int64) -> HistoryEvent? {
        typealias Field = HistoryEvent.Field
        func rcpt(_ index: Int) -> Field { Field("rcpt", envelope.recipients[index].address) }
        switch event {
        case .attempt(let line):
            var fields = [
                rcpt(line.index), Field("mx", line.attempt.mxHost), Field("pref", "\(line.attempt.preference)"),
                Field("addr", "\(line.attempt.address)"), Field("family", "\(line.attempt.family)"),
                Field("result", line.result), Field("ms", "\(line.milliseconds)"),
            ]
            switch line.detail {
            case .reply(let text): fields.append(Field("reply", text))
            case .reason(let text): fields.append(Field("reason", text))
            }
            return HistoryEvent(time: now, event: "attempt", fields: fields)
        case .recipient(let index, let result, let status, let reason):
            return HistoryEvent(
                time: now, event: result.rawValue,
                fields: [rcpt(index), Field("status", "\(status)"), Field("reason", reason)])
        case .expired(let index, let status):
            return HistoryEvent(time: now, event: "expired", fields: [rcpt(index), Field("status", "\(status)")])
        case .discarded(let count):
            return HistoryEvent(time: now, event: "discarded", fields: [Field("nrcpt", "\(count)")])
        case .deferred(let next, let runs):
            return HistoryEvent(
                time: now, event: "next-attempt",
                fields: [Field("next_attempt", MailDate.iso8601(next)), Field("runs", "\(runs)")])
        case .removed(let delivered, let failed):
            return HistoryEvent(
                time: now, event: "removed", fields: [Field("delivered", "\(delivered)"), Field("failed", "\(failed)")])
        case .noReport(let index, let kind):
            return HistoryEvent(time: now, event: "no-report", fields: [rcpt(index), Field("kind", "\(kind)")])
        case .possibleDuplicate(let address, _):
            return HistoryEvent(time: now, event: "possible-duplicate", fields: [Field("addr", address)])
        case .skipped, .routeNote:
            return nil
        }
    }

    private func log(_ event: DeliveryEvent, envelope: Envelope) {
        func rcpt(_ index: Int) -> Logger.MetadataValue { "<\(envelope.recipients[index].address)>" }
        switch event {
        case .attempt(let line):
            var metadata: Logger.Metadata = [
                "rcpt": rcpt(line.index), "mx": "\(line.attempt.mxHost)", "pref": "\(line.attempt.preference)",
                "addr": "[\(line.attempt.address)]", "family": "\(line.attempt.family)", "result": "\(line.result)",
                "ms": "\(line.milliseconds)",
            ]
            switch line.detail {
            case .reply(let text): metadata["reply"] = "\(text)"
            case .reason(let text): metadata["reason"] = "\(text)"
            }
            if let tls = line.tls {
                metadata["tls"] = "\(tls.protocolVersion)"
                metadata["cipher"] = "\(tls.cipher)"
            }
            if let fallback = line.tlsFallback { metadata["tls_fallback"] = "\(fallback)" }
            if let policy = line.tlsPolicy { metadata["tls_policy"] = "\(policy)" }
            if let fault = line.fault { metadata["fault"] = "\(fault)" }
            if let connection = line.connection { metadata["conn"] = "\(connection)" }
            logger.info("delivery", metadata: metadata)
        case .recipient(let index, let result, let status, let reason):
            logger.info(
                "recipient",
                metadata: [
                    "rcpt": rcpt(index), "result": "\(result.rawValue)", "status": "\(status)", "reason": "\(reason)",
                ])
        case .possibleDuplicate(let address, let explained):
            var metadata: Logger.Metadata = ["addr": "[\(address)]"]
            if explained {
                metadata["reason"] = "no reply after the end of data: the message may be delivered twice"
            }
            logger.warning("possible-duplicate", metadata: metadata)
        case .skipped(let subject, let reason):
            logger.info("skipped", metadata: ["subject": "\(subject)", "reason": "\(reason)"])
        case .routeNote(let mx, let address, let note):
            logger.info("route", metadata: ["mx": "\(mx)", "addr": "[\(address)]", "note": "\(note)"])
        case .expired(let index, let status):
            logger.info("expired", metadata: ["rcpt": rcpt(index), "status": "\(status)"])
        case .discarded(let count):
            logger.error(
                "discarded",
                metadata: [
                    "nrcpt": "\(count)",
                    "reason": "an undeliverable double-bounce notice is logged and dropped (triple bounce)",
                ])
        case .deferred(let next, let runs):
            logger.info("deferred", metadata: ["next_attempt": "\(MailDate.iso8601(next))", "runs": "\(runs)"])
        case .noReport(let index, let kind):
            logger.info(
                "no-report",
                metadata: [
                    "rcpt": rcpt(index), "kind": "\(kind)",
                    "reason": "NOTIFY=\(envelope.recipients[index].notify?.parameterValue ?? "")",
                ])
        case .removed(let delivered, let failed):
            logger.info("removed", metadata: ["delivered": "\(delivered)", "failed": "\(failed)"])
        }
    }

    private func apply(_ update: CacheUpdate) {
        guard let router else { return }
        switch update {
        case .success(let destination, let mxHost, let endpoint):
            router.recordSuccess(destination: destination, mxHost: mxHost, endpoint: endpoint, now: Date())
        case .failure(let endpoint, let reason):
            router.recordFailure(endpoint: endpoint, reason: reason, now: Date())
        }
    }

    private func count(_ metric: DeliveryMetric, destinationStarted: ContinuousClock.Instant?) {
        switch metric {
        case .remoteRecipient(let family, let rank, let result):
            DualMTAMetrics.registry.increment(
                DualMTAMetrics.remoteRecipients,
                DualMTAMetrics.labels(family, rank: rank).merging(["result": result]) { $1 })
        case .tlsFailure(let family, let rank):
            DualMTAMetrics.registry.increment(
                DualMTAMetrics.connectFailures,
                DualMTAMetrics.labels(family, rank: rank).merging(["reason": "tls"]) { $1 })
        case .firstDelivery(let family, let rank, let fallbackFrom):
            if let destinationStarted {
                let (seconds, attoseconds) = (ContinuousClock.now - destinationStarted).components
                DualMTAMetrics.registry.observe(
                    DualMTAMetrics.deliveryDuration, DualMTAMetrics.labels(family, rank: rank),
                    Double(seconds) + Double(attoseconds) / 1e18)
            }
            if let fallbackFrom {
                DualMTAMetrics.registry.increment(
                    DualMTAMetrics.familyFallbacks, ["from": fallbackFrom.rawValue, "to": family.rawValue])
            }
        }
    }
}

/// The journal entries of one delivery run, written in one append when the run ends (`flush`) instead of an
/// open-write-close for every batch of effects.
final class HistoryBuffer: Sendable {
    private let journal: MessageHistory
    private let id: QueueID
    private let pending = Mutex<[HistoryEvent]>([])

    init(journal: MessageHistory, id: QueueID) {
        self.journal = journal
        self.id = id
    }

    func add(_ events: [HistoryEvent]) {
        guard !events.isEmpty else { return }
        pending.withLock { $0 += events }
    }

    /// Writes what was collected (blocking file I/O: call it on the work queue).
    func flush() {
        let events = pending.withLock { pending in
            defer { pending = [] }
            return pending
        }
        journal.append(id, events)
    }
}
