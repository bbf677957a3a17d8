import Foundation
import Spool

/// Reads the queue for `dualmta queue` (and `mailq`): straight from the spool files, so it works whether or not
/// a daemon is running. It never writes.
public struct QueueInspector {
    let spool: Spool

    public init(spoolDirectory: String) throws(SpoolError) {
        spool = try Spool(directory: spoolDirectory)
    }

    /// Envelopes in arrival order; unreadable ones are reported, not fatal.
    public func envelopes() throws(SpoolError) -> (envelopes: [Envelope], problems: [String]) {
        var envelopes: [Envelope] = []
        var problems: [String] = []
        for id in try spool.queuedIDs() {
            do throws(SpoolError) {
                envelopes.append(try spool.envelope(id))
            } catch .notFound {
                continue  // delivered while we were listing
            } catch {
                problems.append("\(id): \(error)")
            }
        }
        return (envelopes, problems)
    }

    /// `mailq`-style text: one block per message, one line per recipient.
    public static func renderText(_ envelopes: [Envelope]) -> String {
        if envelopes.isEmpty { return "Mail queue is empty\n" }
        var out = ""
        for envelope in envelopes {
            let held = envelope.held ? " (held)" : ""
            out += "\(envelope.id)\(held)  \(envelope.messageSize) bytes  \(isoDate(envelope.arrival))  "
            out += "<\(envelope.sender)>\n"
            for recipient in envelope.recipients {
                out += "    \(recipient.state.rawValue.padding(toLength: 9, withPad: " ", startingAt: 0))"
                out += " <\(recipient.address)>"
                if let reply = recipient.lastReply, recipient.state != .delivered { out += "  (\(reply))" }
                out += "\n"
            }
            if envelope.recipients.contains(where: { $0.state == .pending }) {
                out += "    next attempt \(isoDate(envelope.nextAttempt))\n"
            }
        }
        let count = envelopes.count
        out += "-- \(count) message\(count == 1 ? "" : "s") in the queue\n"
        return out
    }

    /// JSON: an array of messages with id, arrival, size, sender, recipients (address, state, last reply),
    /// next attempt, held, and the number of attempts so far.
    public static func renderJSON(_ envelopes: [Envelope]) -> String {
        let objects: [[String: Any]] = envelopes.map { envelope in
            [
                "id": envelope.id.rawValue,
                "arrival": isoDate(envelope.arrival),
                "size": envelope.messageSize,
                "sender": envelope.sender,
                "client": envelope.client,
                "held": envelope.held,
                "next_attempt": isoDate(envelope.nextAttempt),
                "attempts": envelope.attempts.count,
                "recipients": envelope.recipients.map { recipient -> [String: Any] in
                    var object: [String: Any] = ["address": recipient.address, "state": recipient.state.rawValue]
                    if let reply = recipient.lastReply { object["last_reply"] = reply }
                    if let status = recipient.lastStatus { object["status"] = status }
                    return object
                },
            ]
        }
        guard
            let data = try? JSONSerialization.data(withJSONObject: objects, options: [.prettyPrinted, .sortedKeys]),
            let text = String(data: data, encoding: .utf8)
        else { return "[]\n" }
        return text + "\n"
    }

    static func isoDate(_ seconds: Int64) -> String {
        MailLogFormatter.timestamp(Date(timeIntervalSince1970: Double(seconds)))
    }
}
