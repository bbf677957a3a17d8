import Foundation
import SMTPProtocol
import Spool

/// Reads the queue for `dualmta queue` (and `mailq`): straight from the spool files, so it works whether or not
/// a daemon is running. It never writes.
public struct QueueInspector {
    let spool: Spool

    public init(spoolDirectory: String) throws(SpoolError) {
        spool = try Spool(directory: spoolDirectory)
    }

    init(spool: Spool) {
        self.spool = spool
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
    /// `expiry` says when the queue gives up on a message (from the configured lifetimes).
    public typealias Expiry = (Envelope) -> Int64

    public static func renderText(_ envelopes: [Envelope], expiry: Expiry) -> String {
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
                out += "    next attempt \(isoDate(envelope.nextAttempt))  expires \(isoDate(expiry(envelope)))\n"
            }
        }
        let count = envelopes.count
        out += "-- \(count) message\(count == 1 ? "" : "s") in the queue\n"
        return out
    }

    /// JSON: an array of messages with id, arrival, size, sender, recipients (address, state, last reply),
    /// next attempt, held, and the number of attempts so far.
    public static func renderJSON(_ envelopes: [Envelope], expiry: Expiry) -> String {
        let objects: [[String: Any]] = envelopes.map { listObject($0, expiry: expiry) }
        return jsonText(objects, empty: "[]\n")
    }

    static func listObject(_ envelope: Envelope, expiry: Expiry) -> [String: Any] {
        [
            "expires": isoDate(expiry(envelope)),
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
                if let status = recipient.lastStatus { object["status"] = status.description }
                if let remote = recipient.remoteMTA { object["remote_mta"] = "\(remote.host) [\(remote.address)]" }
                if recipient.attempts > 0 { object["attempts"] = recipient.attempts }
                if let report = recipient.report { object["report"] = reportText(report) }
                return object
            },
        ]
    }

    /// `queue show --json`: the list object plus client, HELO, protocol, extra fields and every attempt.
    public static func renderShowJSON(_ envelope: Envelope, expiry: Expiry) -> String {
        jsonText(showObject(envelope, expiry: expiry), empty: "{}\n")
    }

    /// The object `queue show --json` prints (the console adds the history to it).
    static func showObject(_ envelope: Envelope, expiry: Expiry) -> [String: Any] {
        var object = listObject(envelope, expiry: expiry)
        object["helo"] = envelope.heloName
        object["protocol"] = envelope.protocolName
        object["failed_runs"] = envelope.failedRuns
        if let bounceOf = envelope.bounceOf { object["bounce_of"] = bounceOf.rawValue }
        object["extra"] = envelope.extra
        object["attempts"] = envelope.attempts.map { attempt -> [String: Any] in
            [
                "time": isoDate(attempt.time), "recipients": attempt.recipients, "mx": attempt.mx,
                "preference": attempt.preference, "address": attempt.address, "family": attempt.family,
                "result": attempt.result, "reply": attempt.reply, "ms": attempt.milliseconds,
            ]
        }
        return object
    }

    /// `queue show`: the envelope, each recipient's state, status and last reply, and every delivery attempt.
    public static func renderShowText(_ envelope: Envelope, expiry: Expiry) -> String {
        func field(_ name: String, _ value: String) -> String {
            (name + ":").padding(toLength: 14, withPad: " ", startingAt: 0) + value + "\n"
        }
        var out = field("id", envelope.id.rawValue)
        out += field("sender", "<\(envelope.sender)>")
        out += field("arrival", isoDate(envelope.arrival))
        out += field("client", "\(envelope.client) (helo \(envelope.heloName), \(envelope.protocolName))")
        out += field("size", "\(envelope.messageSize) bytes")
        out += field("held", envelope.held ? "yes" : "no")
        out += field("next attempt", envelope.isFinished ? "-" : isoDate(envelope.nextAttempt))
        out += field("expires", isoDate(expiry(envelope)))
        if envelope.failedRuns > 0 { out += field("failed runs", "\(envelope.failedRuns)") }
        if let bounceOf = envelope.bounceOf { out += field("report of", bounceOf.rawValue) }
        for key in envelope.extra.keys.sorted() { out += field(key, envelope.extra[key] ?? "") }
        out += "recipients (\(envelope.recipients.count)):\n"
        for recipient in envelope.recipients {
            let state = recipient.state.rawValue.padding(toLength: 9, withPad: " ", startingAt: 0)
            out += "    \(state) <\(recipient.address)>"
            if let status = recipient.lastStatus { out += "  \(status)" }
            if let reply = recipient.lastReply { out += "  \(reply)" }
            if let remote = recipient.remoteMTA { out += "  (\(remote.host) [\(remote.address)])" }
            if let report = recipient.report { out += "  report: \(reportText(report))" }
            out += "\n"
        }
        out += "attempts (\(envelope.attempts.count)):\n"
        for attempt in envelope.attempts {
            out += "    \(isoDate(attempt.time))  mx=\(attempt.mx) pref=\(attempt.preference) addr=\(attempt.address)"
            out += " family=\(attempt.family) result=\(attempt.result) ms=\(attempt.milliseconds)\n"
            out += "        rcpt: \(attempt.recipients.map { "<\($0)>" }.joined(separator: " "))\n"
            if !attempt.reply.isEmpty { out += "        reply: \(attempt.reply)\n" }
        }
        return out
    }

    static func reportText(_ mark: ReportMark) -> String {
        switch mark {
        case .queued(let id): return id.rawValue
        case .none: return "none"
        case .discarded: return "discarded"
        }
    }

    static func jsonText(_ object: Any, empty: String) -> String {
        guard
            let data = try? JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys]),
            let text = String(data: data, encoding: .utf8)
        else { return empty }
        return text + "\n"
    }

    static func isoDate(_ seconds: Int64) -> String {
        MailDate.iso8601(seconds)
    }
}
