import SMTPProtocol
import Spool

/// The HTML pages (pure: data in, markup out). Every value from a message, a peer or the spool goes through
/// `HTML.escape`; the markup itself is fixed text. No script, no external asset: a page works on its own.
/// Where a live page stands in the journal: the second it was drawn and how many events from that second on it saw.
public struct LiveCursor: Equatable, Sendable {
    public var since: Int64
    public var seen: Int

    public init(since: Int64, seen: Int) {
        self.since = since
        self.seen = seen
    }
}

public enum ConsolePages {
    /// The colour of each address family on the time line and in tables.
    public static func colour(family: String) -> String {
        switch family {
        case "ipv6": return "#2563eb"
        case "ipv4": return "#ea580c"
        default: return "#6b7280"
        }
    }

    static let style = """
        body{font-family:sans-serif;margin:1.5em;color:#111}nav a{margin-right:1em}
        table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left;
        vertical-align:top}th{background:#f3f4f6}pre{background:#f9fafb;padding:.5em;white-space:pre-wrap}
        .ipv6{color:#2563eb}.ipv4{color:#ea580c}.current{font-weight:bold}ul.chain li{list-style:none}
        """

    static func page(_ title: String, _ body: String, live: LiveCursor? = nil) -> String {
        let open = live.map { "<body data-since=\"\($0.since)\" data-seen=\"\($0.seen)\">" } ?? "<body>"
        let script = live == nil ? "" : "<script>\(LiveScript.text)</script>"
        return """
            <!DOCTYPE html>
            <html lang="en"><head><meta charset="utf-8"><title>\(HTML.escape(title)) - dualmta</title>
            <style>\(style)</style></head>\(open)
            <nav><a href="/">Overview</a><a href="/queue">Queue</a><a href="/mailboxes">Mailboxes</a>\
            <a href="/faults">Faults</a><a href="/metrics">Metrics</a></nav>
            <h1>\(HTML.escape(title))</h1>
            \(body)
            \(script)</body></html>

            """
    }

    static func link(_ id: QueueID) -> String {
        "<a href=\"/message/\(HTML.pathSegment(id.rawValue))\">\(HTML.escape(id.rawValue))</a>"
    }

    static func date(_ seconds: Int64) -> String { HTML.escape(MailDate.iso8601(seconds)) }

    public static func overview(
        listeners: [ConsoleListener], selfCheck: ConsoleSelfCheck? = nil, queued: [Envelope], lastHour: FamilyCounts,
        parked: [ConsoleParkedConnection] = [], live: LiveCursor? = nil
    ) -> String {
        var body = "<h2>Listeners</h2><table id=\"listeners\"><tr><th>Key</th><th>Address</th><th>Family</th></tr>"
        for listener in listeners {
            body += "<tr><td>\(HTML.escape(listener.name))</td><td>\(HTML.escape(listener.address))</td>"
            body += "<td class=\"\(HTML.escape(listener.family))\">\(HTML.escape(listener.family))</td></tr>"
        }
        body += "</table><h2>Self-check</h2>"
        if let selfCheck {
            body += "<ul id=\"selfcheck\">"
            for line in selfCheck.listeners { body += "<li class=\"listener\">\(HTML.escape(line))</li>" }
            for line in selfCheck.warnings { body += "<li class=\"warning\"><b>warning</b> \(HTML.escape(line))</li>" }
            for line in selfCheck.notes { body += "<li class=\"note\">note: \(HTML.escape(line))</li>" }
            body += "</ul>"
        } else {
            body += "<p id=\"selfcheck-pending\">Still running.</p>"
        }
        let pending = queued.reduce(0) { $0 + $1.recipients.filter { $0.state == .pending }.count }
        let held = queued.filter(\.held).count
        body += "<h2>Queue</h2><table id=\"counts\">"
        body +=
            "<tr><th>Messages</th><td>\(queued.count)</td></tr><tr><th>Pending recipients</th><td>\(pending)</td></tr>"
        body += "<tr><th>Held</th><td>\(held)</td></tr></table>"
        body += "<h2>Remote attempts in the last hour</h2>" + familyChart(lastHour)
        body += "<h2>Parked outbound connections</h2>" + parkedTable(parked)
        return page("dualmta", body, live: live)
    }

    /// The connection cache's open sessions per next hop, busiest first (what `conn=reused` lines will use next).
    static func parkedTable(_ parked: [ConsoleParkedConnection]) -> String {
        guard !parked.isEmpty else { return "<p id=\"no-parked\">None.</p>" }
        var table = "<table id=\"parked\"><tr><th>Next hop</th><th>Family</th><th>Parked</th></tr>"
        for entry in parked {
            table += "<tr><td>\(HTML.escape(entry.address))</td>"
            table += "<td class=\"\(HTML.escape(entry.family))\">\(HTML.escape(entry.family))</td>"
            table += "<td>\(entry.count)</td></tr>"
        }
        return table + "</table>"
    }

    /// One bar per family: the sent part filled in the family's colour, the rest as an outline; numbers beside.
    static func familyChart(_ counts: FamilyCounts) -> String {
        guard !counts.byFamily.isEmpty else { return "<p id=\"no-recent\">None.</p>" }
        let most = max(1, counts.byFamily.values.map(\.attempts).max() ?? 1)
        let barWidth = 300
        var svg = "<svg id=\"families\" xmlns=\"http://www.w3.org/2000/svg\" width=\"620\""
        svg += " height=\"\(counts.families.count * 28 + 8)\" role=\"img\" aria-label=\"attempts by family\">"
        for (index, family) in counts.families.enumerated() {
            guard let count = counts.byFamily[family] else { continue }
            let y = index * 28 + 4
            let total = barWidth * count.attempts / most
            let sent = barWidth * count.sent / most
            let colour = colour(family: family)
            svg += "<g class=\"family\" data-family=\"\(HTML.escape(family))\" data-attempts=\"\(count.attempts)\""
            svg += " data-sent=\"\(count.sent)\"><text x=\"0\" y=\"\(y + 15)\" font-size=\"13\" fill=\"\(colour)\">"
            svg += "\(HTML.escape(family))</text>"
            svg +=
                "<rect x=\"60\" y=\"\(y)\" width=\"\(max(total, 1))\" height=\"20\" fill=\"#fff\""
                + " stroke=\"\(colour)\"/>"
            svg += "<rect x=\"60\" y=\"\(y)\" width=\"\(sent)\" height=\"20\" fill=\"\(colour)\"/>"
            svg += "<text x=\"\(70 + barWidth)\" y=\"\(y + 15)\" font-size=\"13\">\(count.attempts) attempts, "
            svg += "\(count.sent) sent, \(count.failed) not sent</text></g>"
        }
        return svg + "</svg>"

    }

    public static func queue(
        _ envelopes: [Envelope], filter: QueueFilter, expires: (Envelope) -> Int64, live: LiveCursor? = nil
    ) -> String {
        var form = "<form id=\"filter\" method=\"get\" action=\"/queue\"><label>State <select name=\"state\">"
        form += "<option value=\"\">any</option>"
        for state in RecipientState.allCases {
            let selected = filter.state == state ? " selected" : ""
            form += "<option value=\"\(state.rawValue)\"\(selected)>\(state.rawValue)</option>"
        }
        form += "</select></label>"
        for (name, label, value) in [
            ("sender", "Sender", filter.sender), ("rcpt", "Recipient", filter.recipient),
            ("domain", "Domain", filter.domain),
        ] {
            form +=
                " <label>\(label) <input name=\"\(name)\" value=\"\(HTML.escape(value ?? ""))\" size=\"16\"></label>"
        }
        form += " <label>Sort <select name=\"sort\">"
        for order in QueueFilter.Order.allCases {
            let selected = filter.sort == order ? " selected" : ""
            form += "<option value=\"\(order.rawValue)\"\(selected)>\(order.rawValue)</option>"
        }
        form += "</select></label> <button type=\"submit\">Show</button></form>"
        guard !envelopes.isEmpty else {
            let text = filter.isEmpty ? "The queue is empty." : "No queued message matches."
            return page("Queue", form + "<p id=\"empty\">\(text)</p>", live: live)
        }
        var body = form + "<table id=\"queue\"><tr><th>Id</th><th>Arrival</th><th>Sender</th><th>Recipients</th>"
        body += "<th>Next attempt</th><th>Expires</th></tr>"
        for envelope in envelopes {
            let recipients = envelope.recipients.map { "\(HTML.escape($0.address)) (\($0.state.rawValue))" }
            body += "<tr data-id=\"\(HTML.escape(envelope.id.rawValue))\"><td>\(link(envelope.id))</td>"
            body += "<td>\(date(envelope.arrival))</td><td>\(HTML.escape(display(sender: envelope.sender)))</td>"
            body += "<td>\(recipients.joined(separator: "<br>"))</td>"
            body +=
                "<td>\(envelope.held ? "held" : date(envelope.nextAttempt))</td>"
                + "<td>\(date(expires(envelope)))</td></tr>"
        }
        return page("Queue", body + "</table>", live: live)
    }

    static func display(sender: String) -> String { sender.isEmpty ? "<>" : sender }

    /// The message page: the envelope when queued, the attempts on a time line, the report chain and the journal.
    public static func message(
        _ id: QueueID, envelope: Envelope?, expires: Int64?, chain: [ConsoleChainNode], live: LiveCursor? = nil
    ) -> String {
        var body = ""
        let events = chain.first { $0.id == id }?.events ?? []
        if let envelope {
            body += "<h2>Envelope</h2><table id=\"envelope\">"
            var rows: [(String, String)] = [
                ("Sender", display(sender: envelope.sender)), ("Arrival", MailDate.iso8601(envelope.arrival)),
                ("Client", envelope.client), ("HELO", envelope.heloName), ("Protocol", envelope.protocolName),
                ("Size", "\(envelope.messageSize)"),
                ("Next attempt", envelope.held ? "held" : MailDate.iso8601(envelope.nextAttempt)),
            ]
            if let expires { rows.append(("Expires", MailDate.iso8601(expires))) }
            for (name, value) in rows { body += "<tr><th>\(name)</th><td>\(HTML.escape(value))</td></tr>" }
            body += "</table>"
            if let original = envelope.bounceOf { body += "<p>Report on \(reportOfLink(original))</p>" }
            body += "<h2>Recipients</h2><table id=\"recipients\"><tr><th>Address</th><th>State</th><th>Status</th>"
            body += "<th>Last reply</th><th>Attempts</th><th>Report</th></tr>"
            for recipient in envelope.recipients {
                body += "<tr><td>\(HTML.escape(recipient.address))</td><td>\(recipient.state.rawValue)</td>"
                body += "<td>\(HTML.escape(recipient.lastStatus.map { "\($0)" } ?? ""))</td>"
                body += "<td>\(HTML.escape(recipient.lastReply ?? ""))</td><td>\(recipient.attempts)</td><td>"
                switch recipient.report {
                case .some(.queued(let report)): body += link(report)
                case .some(.none): body += "none wanted"
                case .some(.discarded): body += "discarded"
                case nil: body += ""
                }
                body += "</td></tr>"
            }
            body += "</table>"
        } else {
            body += "<p id=\"gone\">No longer in the queue; its history follows.</p>"
            if let original = chain.first(where: { $0.id == id })?.reportOf {
                body += "<p>Report on \(reportOfLink(original))</p>"
            }
        }
        body += "<h2>Attempts</h2>" + timeline(events)
        body += "<h2>Reports</h2>" + chainList(chain, current: id)
        body += "<h2>History</h2>" + journal(events)
        return page("Message \(id.rawValue)", body, live: live)
    }

    static func reportOfLink(_ original: QueueID) -> String {
        "<a class=\"report-of\" href=\"/message/\(HTML.pathSegment(original.rawValue))\">"
            + "\(HTML.escape(original.rawValue))</a>"
    }

    /// One row per address (in the order first tried), one mark per attempt in time order, coloured by family:
    /// a filled mark for a sent attempt, a ring for any other result; the title carries time, result and reply.
    public static func timeline(_ events: [HistoryEvent]) -> String {
        // Attempts, plus the Happy Eyeballs connects that lost a race (they never carried a session, so they have
        // no attempt of their own); won and failed connects are already attempts.
        let attempts = events.filter { $0.event == "attempt" || ($0.event == "connect" && $0["result"] == "lost") }
        guard !attempts.isEmpty else { return "<p id=\"no-attempts\">No remote attempts.</p>" }
        var rows: [String] = []
        for attempt in attempts {
            let address = attempt["addr"] ?? "?"
            if !rows.contains(address) { rows.append(address) }
        }
        let labelWidth = 330
        let step = 40
        let rowHeight = 28
        let width = max(labelWidth + step * (attempts.count + 1), labelWidth + 520)
        let height = rowHeight * rows.count + 38
        var svg = "<svg id=\"timeline\" xmlns=\"http://www.w3.org/2000/svg\" width=\"\(width)\" height=\"\(height)\""
        svg += " role=\"img\" aria-label=\"delivery attempts by address\">"
        for (index, address) in rows.enumerated() {
            let first = attempts.first { $0["addr"] == address }
            let family = first?["family"] ?? "unknown"
            let y = rowHeight * index + rowHeight / 2 + 4
            svg += "<g class=\"row\" data-addr=\"\(HTML.escape(address))\" data-family=\"\(HTML.escape(family))\">"
            svg += "<line x1=\"\(labelWidth)\" y1=\"\(y)\" x2=\"\(width - 10)\" y2=\"\(y)\" stroke=\"#ddd\"/>"
            let label = "\(first?["mx"] ?? "") \(address)"
            svg += "<text x=\"4\" y=\"\(y + 4)\" font-size=\"12\" fill=\"\(colour(family: family))\">"
            svg += "\(HTML.escape(label))</text>"
            for (sequence, attempt) in attempts.enumerated() where attempt["addr"] == address {
                let result = attempt["result"] ?? "?"
                let colour = colour(family: attempt["family"] ?? family)
                let x = labelWidth + step * (sequence + 1)
                let fill = result == "sent" ? colour : "#fff"
                let dashes = result == "lost" ? " stroke-dasharray=\"3 3\"" : ""
                svg += "<circle class=\"mark\" data-seq=\"\(sequence)\" data-result=\"\(HTML.escape(result))\""
                svg += " data-family=\"\(HTML.escape(attempt["family"] ?? family))\" cx=\"\(x)\" cy=\"\(y)\" r=\"8\""
                svg += " fill=\"\(fill)\" stroke=\"\(colour)\" stroke-width=\"3\"\(dashes)><title>"
                let detail = attempt["reply"] ?? attempt["reason"] ?? ""
                svg += HTML.escape(
                    "\(MailDate.iso8601(attempt.time)) \(attempt["rcpt"] ?? "") \(result) \(detail) "
                        + "(\(attempt["ms"] ?? "?") ms)")
                svg += "</title></circle>"
            }
            svg += "</g>"
        }
        svg += "<text x=\"\(labelWidth)\" y=\"\(height - 18)\" font-size=\"11\" fill=\"#555\">"
        svg += "attempts in time order; filled = sent, ring = not sent, dashed = lost a Happy Eyeballs race</text>"
        svg += "<text x=\"\(labelWidth)\" y=\"\(height - 4)\" font-size=\"11\" fill=\"#555\">"
        svg += "blue = IPv6, orange = IPv4</text></svg>"
        return svg
    }

    static func chainList(_ chain: [ConsoleChainNode], current: QueueID) -> String {
        guard chain.count > 1 else { return "<p id=\"no-reports\">No reports.</p>" }
        var html = "<ul id=\"chain\" class=\"chain\">"
        for node in chain {
            let fate = node.events.last.map { " &mdash; \(HTML.escape($0.event)) \(date($0.time))" } ?? ""
            let role = node.reportOf.map { " report on \(HTML.escape($0.rawValue))" } ?? " original"
            let indent = node.depth * 2
            html += "<li data-id=\"\(HTML.escape(node.id.rawValue))\" data-depth=\"\(node.depth)\""
            html += " style=\"margin-left:\(indent)em\"\(node.id == current ? " class=\"current\"" : "")>"
            html += "\(link(node.id))\(role)\(fate)</li>"
        }
        return html + "</ul>"
    }

    static func journal(_ events: [HistoryEvent]) -> String {
        guard !events.isEmpty else { return "<p>No journal (pruned or never run).</p>" }
        var html = "<table id=\"journal\"><tr><th>Time</th><th>Event</th><th>Details</th></tr>"
        for event in events {
            let details = event.fields.map { "\($0.name)=\($0.value)" }.joined(separator: " ")
            html += "<tr><td>\(date(event.time))</td><td>\(HTML.escape(event.event))</td>"
            html += "<td>\(HTML.escape(details))</td></tr>"
        }
        return html + "</table>"
    }

    public static func mailboxes(_ boxes: [Maildirs.Mailbox]) -> String {
        guard !boxes.isEmpty else { return page("Mailboxes", "<p id=\"empty\">No local mailboxes.</p>") }
        var body = "<table id=\"mailboxes\"><tr><th>Mailbox</th><th>Messages</th></tr>"
        for box in boxes {
            let href = "/mailboxes/\(HTML.pathSegment(box.domain))/\(HTML.pathSegment(box.user))"
            body += "<tr><td><a href=\"\(href)\">\(HTML.escape(box.user))@\(HTML.escape(box.domain))</a></td>"
            body += "<td>\(box.count)</td></tr>"
        }
        return page("Mailboxes", body + "</table>")
    }

    public static func mailbox(domain: String, user: String, entries: [Maildirs.Entry]) -> String {
        let base = "/mailboxes/\(HTML.pathSegment(domain))/\(HTML.pathSegment(user))"
        var body = "<table id=\"messages\"><tr><th>Date</th><th>From</th><th>Subject</th><th>Size</th></tr>"
        for entry in entries {
            let headers = MailHeaders(fields: entry.headers, body: [])
            let href = "\(base)/\(entry.folder)/\(HTML.pathSegment(entry.name))"
            let from = HTML.escape(EncodedWords.decode(headers.value("From") ?? ""))
            let subject = HTML.escape(EncodedWords.decode(headers.value("Subject") ?? "(no subject)"))
            body += "<tr><td>\(date(entry.modified))</td><td>\(from)</td>"
            body += "<td><a href=\"\(href)\">\(subject)</a></td>"
            body += "<td>\(entry.size)</td></tr>"
        }
        return page("Mailbox \(user)@\(domain)", body + "</table>")
    }

    /// A message as text: its header fields in a table, the body as preformatted text, and a link to the raw file.
    public static func mailMessage(_ bytes: [UInt8], rawLink: String) -> String {
        let message = MailHeaders.parse(bytes)
        let download = rawLink.dropLast(3) + "eml"
        var body =
            "<p><a id=\"raw\" href=\"\(rawLink)\">raw</a> <a id=\"eml\" href=\"\(download)\">download .eml</a></p>"
        body += "<table id=\"headers\">"
        for field in message.fields {
            body +=
                "<tr><th>\(HTML.escape(field.name))</th><td>\(HTML.escape(EncodedWords.decode(field.value)))</td></tr>"
        }
        body += "</table><pre id=\"body\">\(HTML.escape(bytes: message.body))</pre>"
        return page(EncodedWords.decode(message.value("Subject") ?? "(no subject)"), body)
    }

    /// `/faults`: the fault rules in force, and how often each matched and fired.
    public static func faults(_ rules: [ConsoleFault], writable: Bool) -> String {
        var body = ""
        if rules.isEmpty {
            body += "<p>No fault rules: nothing fails on purpose.</p>\n"
        } else {
            body +=
                "<table id=\"faults\"><tr><th>id</th><th>from</th><th>matched</th><th>fired</th><th>rule</th></tr>\n"
            for rule in rules {
                body += "<tr><td>\(HTML.escape(rule.id))</td><td>\(HTML.escape(rule.origin))</td>"
                body +=
                    "<td>\(rule.matched)</td><td>\(rule.fired)</td><td><code>\(HTML.escape(rule.rule))</code></td></tr>\n"
            }
            body += "</table>\n"
        }
        body +=
            writable
            ? "<p>Change them with <code>POST /api/faults/add?rule=RULE</code>, <code>/api/faults/ID/delete</code> or "
                + "<code>/api/faults/clear</code> (bearer token), or <code>dualmta fault</code>.</p>\n"
            : "<p>Change them with <code>dualmta fault add|delete|clear</code>.</p>\n"
        return page("Fault rules", body)
    }
}
