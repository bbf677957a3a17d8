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
}

@Suite struct ConsoleActionsTests {
    static let token = "0123456789abcdef-lab"
    static let id = "0123456789ABCD"

    func post(_ path: String, authorization: String?, token: String?) -> (HTTPStatus, [String]) {
        let source = RecordingSource(token: token)
        var headers: [HTTPRequest.Header] = []
        if let authorization { headers.append(.init(name: "Authorization", value: authorization)) }
        let request = HTTPRequest(method: "POST", path: path, query: [], version: "HTTP/1.1", headers: headers)
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
}
