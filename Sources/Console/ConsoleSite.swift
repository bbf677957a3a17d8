import Foundation
import SMTPProtocol
import Spool

/// Maps a request to a page, a JSON document or `/metrics`. Read-only: every route is a GET (or HEAD).
public struct ConsoleSite: Sendable {
    public let source: any ConsoleSource

    public init(source: any ConsoleSource) {
        self.source = source
    }

    public func respond(_ request: HTTPRequest) -> HTTPResponse {
        if request.method == "POST" { return action(request) }
        let segments = request.segments
        switch segments.first {
        case nil:
            let now = source.now()
            let recent = source.events(since: now - 3600).map(\.event)
            return .html(
                ConsolePages.overview(
                    listeners: source.listeners(), selfCheck: source.selfCheck(), queued: source.queued(),
                    lastHour: FamilyCounts(recent), parked: source.parkedConnections(),
                    live: liveCursor()))
        case "metrics" where segments.count == 1:
            return HTTPResponse(
                status: .ok, contentType: "text/plain; version=0.0.4; charset=utf-8",
                body: Array(source.metricsText().utf8))
        case "queue" where segments.count == 1:
            guard let filter = QueueFilter(request) else { return .text(.badRequest, "unknown state or sort\n") }
            return .html(
                ConsolePages.queue(
                    filter.apply(source.queued()), filter: filter, expires: source.expires, live: liveCursor()))
        case "message" where segments.count == 2:
            guard let id = QueueID(segments[1]) else { return notFound }
            let envelope = source.envelope(id)
            let chain = source.chain(id) ?? []
            guard envelope != nil || !chain.isEmpty else { return notFound }
            return .html(
                ConsolePages.message(
                    id, envelope: envelope, expires: envelope.map(source.expires), chain: chain, live: liveCursor()))
        case "mailboxes":
            return mailboxes(Array(segments.dropFirst()), json: false)
        case "faults" where segments.count == 1:
            return .html(ConsolePages.faults(source.faults(), writable: source.actionToken != nil))
        case "api":
            return api(Array(segments.dropFirst()), request)
        default:
            return notFound
        }
    }

    private func liveCursor() -> LiveCursor {
        let now = source.now()
        return LiveCursor(since: now, seen: source.events(since: now).count)
    }

    private var notFound: HTTPResponse { .text(.notFound, "not found\n") }

    /// `POST /api/queue/flush`, `POST /api/message/ID/ACTION`: only with a configured token and the right bearer.
    func action(_ request: HTTPRequest) -> HTTPResponse {
        let segments = request.segments
        if segments.count >= 3, segments[0] == "api", segments[1] == "faults" { return faultAction(request) }
        let target: (ConsoleAction, QueueID?)?
        switch (segments.count, segments.first) {
        case (3, "api") where segments[1] == "queue" && segments[2] == "flush":
            target = (.flush, nil)
        case (4, "api") where segments[1] == "message" && ConsoleAction(rawValue: segments[3]) != nil:
            guard let id = QueueID(segments[2]) else { return notFound }
            target = ConsoleAction(rawValue: segments[3]).map { ($0, id) }
        default:
            target = nil
        }
        guard let (action, id) = target else { return Self.readOnly }
        if let refusal = refusal(request) { return refusal }
        func answer(_ status: HTTPStatus, ok: Bool, _ text: String) -> HTTPResponse {
            var object: [String: Any] = ["action": action.rawValue, "ok": ok, "output": text]
            if let id { object["id"] = id.rawValue }
            var response = HTTPResponse.json(Self.jsonText(object))
            response.status = status
            return response
        }
        switch source.perform(action, id: id) {
        case .done(let text): return answer(.ok, ok: true, text)
        case .notFound(let text): return answer(.notFound, ok: false, text)
        case .failed(let text): return answer(.serviceUnavailable, ok: false, text)
        }
    }

    private func api(_ segments: [String], _ request: HTTPRequest) -> HTTPResponse {
        switch (segments.first, segments.count) {
        case ("queue", 1):
            guard let filter = QueueFilter(request) else { return .text(.badRequest, "unknown state or sort\n") }
            // Unfiltered, it is exactly `queue list --json`; a filter narrows the same rendering.
            return .json(filter.isEmpty ? source.queueJSON() : source.queueJSON(filter.apply(source.queued())))
        case ("message", 2):
            return QueueID(segments[1]).flatMap(source.messageJSON).map(HTTPResponse.json) ?? notFound
        case ("events", 1):
            let text = request.parameter("since") ?? "0"
            guard let since = Int64(text), since >= 0 else { return .text(.badRequest, "since must be unix seconds\n") }
            let events = source.events(since: since)
            let objects = events.map { item -> [String: String] in
                var fields = [
                    "id": item.id.rawValue, "time": MailDate.iso8601(item.event.time), "event": item.event.event,
                ]
                for field in item.event.fields where fields[field.name] == nil { fields[field.name] = field.value }
                return fields
            }
            let cursor = events.last.map(\.event.time) ?? since
            return .json(Self.jsonText(["cursor": cursor, "events": objects] as [String: Any]))
        case ("trace", 2):
            return QueueID(segments[1]).flatMap(source.traceJSON).map(HTTPResponse.json) ?? notFound
        case ("mailboxes", _):
            return mailboxes(Array(segments.dropFirst()), json: true)
        case ("connections", 1):
            return .json(
                Self.jsonText(
                    source.parkedConnections().map {
                        ["address": $0.address, "family": $0.family, "parked": $0.count] as [String: Any]
                    }))
        case ("faults", 1):
            return .json(
                Self.jsonText(
                    source.faults().map {
                        ["id": $0.id, "origin": $0.origin, "matched": $0.matched, "fired": $0.fired, "rule": $0.rule]
                            as [String: Any]
                    }))
        default:
            return notFound
        }
    }

    /// `/mailboxes`, `/mailboxes/DOMAIN/USER`, `/mailboxes/DOMAIN/USER/FOLDER/NAME[/raw]` (and the JSON lists).
    private func mailboxes(_ path: [String], json: Bool) -> HTTPResponse {
        let maildirs = Maildirs(root: source.mailboxDirectory)
        switch path.count {
        case 0:
            let boxes = maildirs.mailboxes()
            guard json else { return .html(ConsolePages.mailboxes(boxes)) }
            return .json(
                Self.jsonText(
                    boxes.map { ["domain": $0.domain, "user": $0.user, "messages": $0.count] as [String: Any] }))
        case 2:
            guard let entries = maildirs.entries(domain: path[0], user: path[1]) else { return notFound }
            guard json else { return .html(ConsolePages.mailbox(domain: path[0], user: path[1], entries: entries)) }
            return .json(
                Self.jsonText(
                    entries.map { entry -> [String: Any] in
                        let headers = MailHeaders(fields: entry.headers, body: [])
                        return [
                            "file": "\(entry.folder)/\(entry.name)", "size": entry.size,
                            "modified": entry.modified, "from": EncodedWords.decode(headers.value("From") ?? ""),
                            "subject": EncodedWords.decode(headers.value("Subject") ?? ""),
                        ]
                    }))
        case 4, 5:
            guard !json, path.count == 4 || path[4] == "raw" || path[4] == "eml",
                let bytes = maildirs.message(domain: path[0], user: path[1], folder: path[2], name: path[3])
            else { return notFound }
            if path.count == 5, path[4] == "eml" {
                // The file name is our own Maildir name, cut to characters that need no quoting in the header.
                let name = String(
                    path[3].unicodeScalars.filter {
                        $0.isASCII && ($0.properties.isAlphabetic || "0123456789.-_".unicodeScalars.contains($0))
                    })
                return HTTPResponse(
                    status: .ok, contentType: "message/rfc822", body: bytes,
                    extraHeaders: [("Content-Disposition", "attachment; filename=\"\(name.prefix(100)).eml\"")])
            }
            if path.count == 5 {
                return HTTPResponse(status: .ok, contentType: "text/plain; charset=utf-8", body: bytes)
            }
            return .html(ConsolePages.mailMessage(bytes, rawLink: "\(HTML.pathSegment(path[3]))/raw"))
        default:
            return notFound
        }
    }

    static func jsonText(_ object: Any) -> String {
        guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
        else { return "[]\n" }
        return String(decoding: data, as: UTF8.self) + "\n"
    }

    /// `POST /api/faults/add?rule=RULE`, `POST /api/faults/ID/delete`, `POST /api/faults/clear`: the
    /// `dualmta fault` commands, with the same token rules as the queue actions.
    func faultAction(_ request: HTTPRequest) -> HTTPResponse {
        let segments = request.segments
        let change: ConsoleFaultChange?
        switch (segments.count, segments[2]) {
        case (3, "add"): change = request.parameter("rule").map(ConsoleFaultChange.add)
        case (3, "clear"): change = .clear
        case (4, _) where segments[3] == "delete": change = .delete(segments[2])
        default: change = nil
        }
        if let refusal = refusal(request) { return refusal }
        guard let change else { return .text(.badRequest, "use add?rule=RULE, clear or ID/delete\n") }
        func answer(_ status: HTTPStatus, ok: Bool, _ text: String) -> HTTPResponse {
            var response = HTTPResponse.json(
                Self.jsonText(["action": "fault", "ok": ok, "output": text] as [String: Any]))
            response.status = status
            return response
        }
        switch source.changeFaults(change) {
        case .done(let text): return answer(.ok, ok: true, text)
        case .notFound(let text): return answer(.notFound, ok: false, text)
        case .failed(let text): return answer(.badRequest, ok: false, text)
        }
    }

    /// Why a write action is refused, or nil when it may run: without `http_token` there are no actions (405), and
    /// with one the request must carry it as `Authorization: Bearer` (401).
    func refusal(_ request: HTTPRequest) -> HTTPResponse? {
        guard let expected = source.actionToken else { return Self.readOnly }
        guard let offered = BearerToken.parse(request.header("Authorization")),
            BearerToken.matches(offered, expected)
        else {
            var response = HTTPResponse.text(.unauthorized, "a valid Authorization: Bearer token is needed\n")
            response.extraHeaders = [("WWW-Authenticate", "Bearer realm=\"dualmta\"")]
            return response
        }
        return nil
    }

    static var readOnly: HTTPResponse {
        var response = HTTPResponse.text(.methodNotAllowed, "read-only: only GET and HEAD here\n")
        response.extraHeaders = [("Allow", "GET, HEAD")]
        return response
    }
}
