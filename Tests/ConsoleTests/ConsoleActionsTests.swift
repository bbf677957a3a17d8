import Spool
import Synchronization
import Testing

@testable import Console

/// A source that records the actions it is asked for (pure routing tests; the real one is tested end to end).
private final class RecordingSource: ConsoleSource {
    let actionToken: String?
    let performed = Mutex<[String]>([])

    init(token: String?) { actionToken = token }

    func metricsText() -> String { "" }
    func listeners() -> [ConsoleListener] { [] }
    func queued() -> [Envelope] { [] }
    func queueJSON() -> String { "[]\n" }
    func queueJSON(_ envelopes: [Envelope]) -> String { "[]\n" }
    func envelope(_ id: QueueID) -> Envelope? { nil }
    func expires(_ envelope: Envelope) -> Int64 { 0 }
    func messageJSON(_ id: QueueID) -> String? { nil }
    func chain(_ id: QueueID) -> [ConsoleChainNode]? { nil }
    func traceJSON(_ id: QueueID) -> String? { nil }
    var mailboxDirectory: String { "/nonexistent" }
    func events(since: Int64) -> [ConsoleEvent] { [] }
    func now() -> Int64 { 0 }
    func selfCheck() -> ConsoleSelfCheck? { nil }

    func perform(_ action: ConsoleAction, id: QueueID?) -> ConsoleActionResult {
        performed.withLock { $0.append("\(action.rawValue) \(id?.rawValue ?? "-")") }
        return .done("ok\n")
    }

    func faults() -> [ConsoleFault] {
        [ConsoleFault(id: "F1", origin: "config", matched: 3, fired: 2, rule: "inbound rcpt reply 451 <b>x</b>")]
    }

    let parked = Mutex<[ConsoleParkedConnection]>([])
    func parkedConnections() -> [ConsoleParkedConnection] { parked.withLock { $0 } }

    func changeFaults(_ change: ConsoleFaultChange) -> ConsoleActionResult {
        performed.withLock { $0.append("fault \(change)") }
        if case .delete("F9") = change { return .notFound("error: no fault rule F9\n") }
        return .done("ok\n")
    }
}

@Suite struct ConsoleActionsTests {
    static let token = "0123456789abcdef-lab"
    static let id = "0123456789ABCD"

    func post(
        _ path: String, authorization: String?, token: String?, query: [HTTPRequest.Parameter] = []
    ) -> (HTTPStatus, [String]) {
        let source = RecordingSource(token: token)
        var headers: [HTTPRequest.Header] = []
        if let authorization { headers.append(.init(name: "Authorization", value: authorization)) }
        let request = HTTPRequest(method: "POST", path: path, query: query, version: "HTTP/1.1", headers: headers)
        let response = ConsoleSite(source: source).respond(request)
        return (response.status, source.performed.withLock { $0 })
    }

    @Test(
        "actions: only with a configured token and the right bearer; unknown routes stay read-only",
        arguments: [
            ("/api/message/\(id)/hold", "Bearer \(token)" as String?, token as String?, HTTPStatus.ok, ["hold \(id)"]),
            ("/api/queue/flush", "bearer \(token)", token, .ok, ["flush -"]),
            ("/api/message/\(id)/bounce", nil, token, .unauthorized, []),
            ("/api/message/\(id)/bounce", "Bearer \(token)x", token, .unauthorized, []),
            ("/api/message/\(id)/bounce", "Basic \(token)", token, .unauthorized, []),
            ("/api/message/\(id)/delete", "Bearer \(token)", nil, .methodNotAllowed, []),
            ("/api/message/\(id)/explode", "Bearer \(token)", token, .methodNotAllowed, []),
            ("/queue", "Bearer \(token)", token, .methodNotAllowed, []),
            ("/api/message/lower/hold", "Bearer \(token)", token, .notFound, []),
        ])
    func routes(path: String, authorization: String?, token: String?, status: HTTPStatus, performed: [String]) {
        let (got, done) = post(path, authorization: authorization, token: token)
        #expect(got == status)
        #expect(done == performed)
    }

    @Test("bearer parsing and comparison")
    func bearer() {
        #expect(BearerToken.parse("Bearer abc") == "abc")
        #expect(BearerToken.parse("Basic abc") == nil)
        #expect(BearerToken.parse(nil) == nil)
        #expect(BearerToken.matches("abc", "abc"))
        #expect(!BearerToken.matches("abd", "abc"))
        #expect(!BearerToken.matches("ab", "abc"))
        #expect(!BearerToken.matches("abcd", "abc"))
    }

    @Test(
        "fault rules: add, delete and clear need the token; the list is read-only JSON and an escaped page",
        arguments: [
            (
                "/api/faults/add", "Bearer \(token)" as String?, token as String?, HTTPStatus.ok,
                ["fault add(\"inbound rcpt reply 451\")"]
            ),
            ("/api/faults/F2/delete", "Bearer \(token)", token, .ok, ["fault delete(\"F2\")"]),
            ("/api/faults/F9/delete", "Bearer \(token)", token, .notFound, ["fault delete(\"F9\")"]),
            ("/api/faults/clear", "Bearer \(token)", token, .ok, ["fault clear"]),
            ("/api/faults/clear", nil, token, .unauthorized, []),
            ("/api/faults/clear", "Bearer \(token)", nil, .methodNotAllowed, []),
            ("/api/faults/explode", "Bearer \(token)", token, .badRequest, []),
        ] as [(String, String?, String?, HTTPStatus, [String])])
    func faultActions(path: String, authorization: String?, token: String?, status: HTTPStatus, done: [String]) {
        let (got, performed) = post(
            path, authorization: authorization, token: token,
            query: [.init(name: "rule", value: "inbound rcpt reply 451")])
        #expect(got == status)
        #expect(performed == done)
    }

    @Test func faultListIsJSONAndAnEscapedPage() {
        let site = ConsoleSite(source: RecordingSource(token: nil))
        let json = site.respond(
            HTTPRequest(method: "GET", path: "/api/faults", query: [], version: "HTTP/1.1", headers: []))
        let text = String(decoding: json.body, as: UTF8.self)
        #expect(json.status == .ok && text.contains("\"fired\" : 2") && text.contains("\"id\" : \"F1\""))
        let page = site.respond(
            HTTPRequest(method: "GET", path: "/faults", query: [], version: "HTTP/1.1", headers: []))
        let html = String(decoding: page.body, as: UTF8.self)
        #expect(html.contains("&lt;b&gt;x&lt;/b&gt;") && !html.contains("<b>x</b>"))
    }

    @Test func parkedConnectionsOnTheOverviewAndAsJSON() {
        let source = RecordingSource(token: nil)
        let get = { (site: ConsoleSite, path: String) in
            String(
                decoding: site.respond(
                    HTTPRequest(method: "GET", path: path, query: [], version: "HTTP/1.1", headers: [])
                ).body, as: UTF8.self)
        }
        let empty = ConsoleSite(source: source)
        #expect(get(empty, "/").contains("<p id=\"no-parked\">None.</p>"))
        let none = get(empty, "/api/connections")
        #expect(none.hasPrefix("[") && !none.contains("address"))

        source.parked.withLock {
            $0 = [
                ConsoleParkedConnection(address: "[2001:db8::25]:25", family: "ipv6", count: 3),
                ConsoleParkedConnection(address: "192.0.2.25:25", family: "ipv4", count: 1),
            ]
        }
        let site = ConsoleSite(source: source)
        let page = get(site, "/")
        #expect(page.contains("<tr><td>[2001:db8::25]:25</td><td class=\"ipv6\">ipv6</td><td>3</td></tr>"))
        #expect(page.contains("<tr><td>192.0.2.25:25</td><td class=\"ipv4\">ipv4</td><td>1</td></tr>"))
        #expect(!page.contains("no-parked"))
        let json = get(site, "/api/connections")
        #expect(json.contains("\"address\" : \"[2001:db8::25]:25\"") && json.contains("\"parked\" : 3"))
    }
}
