import Foundation
import SMTPProtocol
import Spool

/// `dualmta trace ID [--json]`: a message's story from its journal (`<spool>/state/history/`), followed across
/// queue ids: the message a report is about comes first, then each report it caused (bounce, delay or success
/// notice, double-bounce notice) with its own story, indented below. Works after every message left the queue,
/// for as long as `history_retention` keeps the journals.
public enum MessageTrace {
    /// One message of the chain.
    public struct Node: Equatable {
        public var id: QueueID
        /// The message this one is a report on, if any.
        public var reportOf: QueueID?
        public var depth: Int
        public var events: [HistoryEvent]
    }

    /// The chain containing `id`, root first (depth-first through the reports); nil when no journal exists.
    public static func chain(_ id: QueueID, history: MessageHistory) -> [Node]? {
        guard history.events(id) != nil else { return nil }
        // Up to the original: each report names the message it reports on (bounded, in case of a cycle).
        var root = id
        var seen: Set<QueueID> = [id]
        while let parent = history.events(root)?.first(where: { $0.event == "received" })?["report_of"]
            .flatMap(QueueID.init), history.events(parent) != nil, seen.insert(parent).inserted
        {
            root = parent
        }
        var nodes: [Node] = []
        var visited: Set<QueueID> = []
        func walk(_ current: QueueID, depth: Int, parent: QueueID?) {
            guard visited.insert(current).inserted, depth < 16 else { return }
            let events = history.events(current) ?? []
            nodes.append(Node(id: current, reportOf: parent, depth: depth, events: events))
            for event in events where event.event == "report" || event.event == "double-bounce" {
                if let child = event["id"].flatMap(QueueID.init) { walk(child, depth: depth + 1, parent: current) }
            }
        }
        walk(root, depth: 0, parent: nil)
        return nodes
    }

    public static func renderText(_ nodes: [Node]) -> String {
        var out = ""
        for node in nodes {
            let indent = String(repeating: "    ", count: node.depth)
            let role = node.reportOf.map { " (report on \($0))" } ?? ""
            out += "\(indent)\(node.id)\(role)\n"
            if node.events.isEmpty { out += "\(indent)    (no journal: pruned or never run)\n" }
            for event in node.events {
                let fields = event.fields.map { "\($0.name)=\(quoted($0.value))" }.joined(separator: " ")
                let name = event.event.padding(toLength: 13, withPad: " ", startingAt: 0)
                out += "\(indent)    \(MailDate.iso8601(event.time))  \(name) \(fields)\n"
            }
        }
        return out
    }

    public static func renderJSON(_ nodes: [Node]) -> String {
        let objects: [[String: Any]] = nodes.map { node in
            var object: [String: Any] = [
                "id": node.id.rawValue, "depth": node.depth,
                "events": eventObjects(node.events),
            ]
            if let parent = node.reportOf { object["report_of"] = parent.rawValue }
            return object
        }
        return QueueInspector.jsonText(["chain": objects], empty: "{}\n")
    }

    /// Journal events as JSON objects: time, event and the event's own fields.
    static func eventObjects(_ events: [HistoryEvent]) -> [[String: String]] {
        events.map { event in
            var fields = ["time": MailDate.iso8601(event.time), "event": event.event]
            for field in event.fields { fields[field.name] = field.value }
            return fields
        }
    }

    /// Runs the command; returns the exit status (65 bad id, 69 no journal for the id).
    public static func execute(
        _ text: String, json: Bool, spoolDirectory: String, out: (String) -> Void, err: (String) -> Void
    ) -> Int32 {
        guard let id = QueueID(text) else {
            err("dualmta: bad queue id \(text.debugDescription)\n")
            return SysExit.dataError
        }
        let history: MessageHistory
        do throws(SpoolError) {
            history = MessageHistory(stateDirectory: try Spool(directory: spoolDirectory).stateDirectory)
        } catch {
            err("dualmta: \(error)\n")
            return SysExit.temporaryFailure
        }
        guard let nodes = chain(id, history: history) else {
            err("dualmta: no history for \(id) (never queued here, or pruned after history_retention)\n")
            return SysExit.unavailable
        }
        out(json ? renderJSON(nodes) : renderText(nodes))
        return SysExit.ok
    }

    private static func quoted(_ value: String) -> String {
        value.contains(" ") || value.isEmpty ? "\"\(value)\"" : value
    }
}
