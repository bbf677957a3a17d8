import Console
import Delivery
import Faults
import Foundation
import Glibc
import Metrics
import NetAddress
import Sockets
import Spool

/// The console's view of the running daemon: the spool, the journals and the configuration, rendered with the
/// CLI's own functions (QueueInspector, MessageTrace) so `/api/...` and `--json` cannot drift apart.
struct ConsoleData: ConsoleSource {
    let configuration: Configuration
    let spool: Spool
    /// The running daemon's fault rules (the same book `dualmta fault` changes).
    let faultBook: FaultBook
    /// The self-check's report once it has run (it runs off the start path).
    let selfCheckReport: @Sendable () -> SelfCheck.Report?
    /// The queue runner's connection cache now (a reload replaces it).
    let connectionCache: @Sendable () -> ConnectionCache?

    func parkedConnections() -> [ConsoleParkedConnection] {
        let parked = connectionCache()?.parkedByAddress ?? [:]
        return parked.map { ConsoleParkedConnection(address: "\($0.key)", family: "\($0.key.family)", count: $0.value) }
            .sorted { ($0.count, $1.address) > ($1.count, $0.address) }
    }

    func selfCheck() -> ConsoleSelfCheck? {
        selfCheckReport().map { ConsoleSelfCheck(listeners: $0.listeners, warnings: $0.warnings, notes: $0.notes) }
    }

    var history: MessageHistory { MessageHistory(stateDirectory: spool.stateDirectory) }

    func metricsText() -> String {
        if let queued = try? spool.queuedIDs() {
            DualMTAMetrics.registry.set(DualMTAMetrics.queueSize, to: Double(queued.count))
        }
        return DualMTAMetrics.registry.exposition()
    }

    func listeners() -> [ConsoleListener] {
        func rows(_ key: String, _ addresses: [SocketAddress]) -> [ConsoleListener] {
            addresses.map { ConsoleListener(name: key, address: "\($0)", family: $0.family == .ipv6 ? "ipv6" : "ipv4") }
        }
        return rows("listen", configuration.listen) + rows("submission_listen", configuration.submissionListen)
            + rows("submissions_listen", configuration.submissionsListen)
            + rows("http_listen", configuration.httpListen.map { [$0] } ?? [])
    }

    func queued() -> [Envelope] {
        (try? QueueInspector(spool: spool).envelopes().envelopes) ?? []
    }

    func queueJSON() -> String { queueJSON(queued()) }

    func queueJSON(_ envelopes: [Envelope]) -> String { QueueInspector.renderJSON(envelopes, expiry: expires) }

    func envelope(_ id: QueueID) -> Envelope? { try? spool.envelope(id) }

    func expires(_ envelope: Envelope) -> Int64 { configuration.bounceSettings.expiry(of: envelope) }

    func messageJSON(_ id: QueueID) -> String? {
        let envelope = envelope(id)
        let events = history.events(id)
        guard envelope != nil || events != nil else { return nil }
        var object: [String: Any] =
            envelope.map { QueueInspector.showObject($0, expiry: expires) } ?? ["id": id.rawValue]
        object["queued"] = envelope != nil
        object["history"] = MessageTrace.eventObjects(events ?? [])
        return QueueInspector.jsonText(object, empty: "{}\n")
    }

    func chain(_ id: QueueID) -> [ConsoleChainNode]? {
        MessageTrace.chain(id, history: history)?.map {
            ConsoleChainNode(id: $0.id, reportOf: $0.reportOf, depth: $0.depth, events: $0.events)
        }
    }

    func traceJSON(_ id: QueueID) -> String? {
        MessageTrace.chain(id, history: history).map(MessageTrace.renderJSON)
    }

    var mailboxDirectory: String { spool.mailboxDirectory }

    func now() -> Int64 { Int64(Date().timeIntervalSince1970) }

    /// Reads the journals written to at or after `since` (a journal's last write bounds its newest event).
    func events(since: Int64) -> [ConsoleEvent] {
        let history = self.history
        let names = (try? FileManager.default.contentsOfDirectory(atPath: history.directory)) ?? []
        var result: [ConsoleEvent] = []
        for name in names where name.hasSuffix(".log") {
            guard let id = QueueID(String(name.dropLast(4))) else { continue }
            var info = stat()
            guard stat("\(history.directory)/\(name)", &info) == 0, Int64(info.st_mtim.tv_sec) >= since else {
                continue
            }
            for event in history.events(id) ?? [] where event.time >= since {
                result.append(ConsoleEvent(id: id, event: event))
            }
        }
        // Stable: events of one message keep their journal order within a second.
        return result.enumerated().sorted { ($0.element.event.time, $0.offset) < ($1.element.event.time, $1.offset) }
            .map(\.element)
    }

    var actionToken: String? { configuration.httpToken }

    /// The CLI's own queue command, so the console's actions lock, edit, journal and wake exactly as it does.
    func perform(_ action: ConsoleAction, id: QueueID?) -> ConsoleActionResult {
        let value = id?.rawValue
        let command: QueueCommand
        switch action {
        case .flush: command = .flush(value)
        case .hold: command = .hold(value ?? "")
        case .release: command = .release(value ?? "")
        case .delete: command = .delete(value ?? "")
        case .bounce: command = .bounce(value ?? "")
        }
        var output = ""
        let status = QueueControl.execute(
            command, spoolDirectory: spool.directory, lifetimes: configuration.bounceSettings,
            out: { output += $0 }, err: { output += $0 })
        switch status {
        case SysExit.ok: return .done(output)
        case SysExit.unavailable, SysExit.dataError: return .notFound(output)
        default: return .failed(output)
        }
    }

    func faults() -> [ConsoleFault] {
        faultBook.entries.map {
            ConsoleFault(
                id: $0.id, origin: $0.configured ? "config" : "added", matched: $0.matches, fired: $0.fired,
                rule: $0.rule.text)
        }
    }

    func changeFaults(_ change: ConsoleFaultChange) -> ConsoleActionResult {
        let command: FaultControlCommand
        switch change {
        case .add(let text): command = .add(text)
        case .delete(let id): command = .delete(id)
        case .clear: command = .clear
        }
        let reply = command.execute(on: faultBook)
        guard reply.hasPrefix("ok") else {
            return reply.contains("no fault rule") ? .notFound(reply) : .failed(reply)
        }
        return .done(reply)
    }
}
