import Testing

@testable import Console

@Suite struct HTTPRequestParserTests {
    func parse(_ text: String, limits: HTTPLimits = HTTPLimits()) -> HTTPParseResult {
        HTTPRequestParser.parse(Array(text.utf8), limits: limits)
    }

    @Test("a GET with path, query and headers; CRLF and bare LF alike")
    func get() throws {
        for ending in ["\r\n", "\n"] {
            let head = ["GET /api/message/Q1%2Bx?since=4&a+b=c%20d&flag HTTP/1.1", "Host: x", "X-Y:  v  ", "", ""]
            guard case .request(let request) = parse(head.joined(separator: ending)) else {
                Issue.record("not parsed with \(ending.debugDescription)")
                continue
            }
            #expect(request.method == "GET")
            #expect(request.path == "/api/message/Q1+x")
            #expect(request.segments == ["api", "message", "Q1+x"])
            #expect(request.query.map(\.name) == ["since", "a b", "flag"])
            #expect(request.parameter("a b") == "c d")
            #expect(request.header("host") == "x")
            #expect(request.header("X-Y") == "v")
        }
    }

    @Test(
        "refusals: the status for each kind of bad head",
        arguments: [
            ("EHLO me\r\n\r\n", HTTPStatus.badRequest),
            ("GET /x HTTP/2.0\r\n\r\n", .badRequest),
            ("GET x HTTP/1.1\r\n\r\n", .badRequest),
            ("GET /%zz HTTP/1.1\r\n\r\n", .badRequest),
            ("GET /%00 HTTP/1.1\r\n\r\n", .badRequest),
            ("GET /%ff HTTP/1.1\r\n\r\n", .badRequest),
            ("GET  /x HTTP/1.1\r\n\r\n", .badRequest),
            ("GET /x HTTP/1.1\r\nNoColon\r\n\r\n", .badRequest),
            ("GET /x HTTP/1.1\r\nName : v\r\n\r\n", .badRequest),
            ("GET /x HTTP/1.1\r\nA: b\r\n folded\r\n\r\n", .badRequest),
            ("G\u{7F}T /x HTTP/1.1\r\n\r\n", .badRequest),
            ("POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\n", .contentTooLarge),
            ("POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", .contentTooLarge),
        ])
    func refusals(head: String, status: HTTPStatus) {
        guard case .refused(let got, _) = parse(head) else {
            Issue.record("\(head.debugDescription) was not refused")
            return
        }
        #expect(got == status)
    }

    @Test("limits: head size, header count, request line; a partial head is incomplete")
    func limits() {
        var limits = HTTPLimits()
        limits.maxHeadBytes = 100
        limits.maxHeaders = 3
        limits.maxRequestLine = 40
        #expect(parse("GET /x HTTP/1.1\r\nHost: a\r\n", limits: limits) == .incomplete)
        #expect(parse("", limits: limits) == .incomplete)
        let big = "GET /x HTTP/1.1\r\n" + String(repeating: "A: b\r\n", count: 20)
        guard case .refused(.headerFieldsTooLarge, _) = parse(big, limits: limits) else {
            Issue.record("oversized head accepted")
            return
        }
        let many = "GET /x HTTP/1.1\r\n" + String(repeating: "A: b\r\n", count: 4) + "\r\n"
        guard case .refused(.headerFieldsTooLarge, _) = parse(many, limits: limits) else {
            Issue.record("too many headers accepted")
            return
        }
        let long = "GET /" + String(repeating: "x", count: 50)
        guard case .refused(.uriTooLong, _) = parse(long, limits: limits) else {
            Issue.record("long request line not refused before its end")
            return
        }
        // A request line of exactly the limit is fine, also while its CR has arrived and its LF not yet.
        let atLimit = "GET /" + String(repeating: "x", count: 26) + " HTTP/1.1"
        #expect(atLimit.utf8.count == 40)
        #expect(parse(atLimit + "\r", limits: limits) == .incomplete)
        guard case .request = parse(atLimit + "\r\n\r\n", limits: limits) else {
            Issue.record("request line at the limit refused")
            return
        }
        // Piece by piece or all at once: the same refusal for a long line in an oversized head.
        let longAndBig = "GET /" + String(repeating: "y", count: 200)
        for count in [45, 120, 205] {
            guard case .refused(.uriTooLong, _) = parse(String(longAndBig.prefix(count)), limits: limits) else {
                Issue.record("prefix \(count) of a long request line not refused as 414")
                return
            }
        }
        let exact = "GET /x HTTP/1.1\r\n" + String(repeating: "A: b\r\n", count: 3) + "\r\n"
        guard case .request = parse(exact, limits: limits) else {
            Issue.record("head within the limits refused")
            return
        }
    }

    @Test("method gate: PUT and others 405 with Allow; HEAD answers without a body")
    func methods() {
        let handler: HTTPServer.Handler = { _ in .text(.ok, "hello\n") }
        let post = HTTPServer.respond(to: parse("PUT /x HTTP/1.1\r\n\r\n"), handler: handler)
        #expect(post?.0.status == .methodNotAllowed)
        #expect(post?.0.extraHeaders.first?.0 == "Allow")
        let head = HTTPServer.respond(to: parse("HEAD /x HTTP/1.1\r\n\r\n"), handler: handler)
        #expect(head?.head == true)
        let bytes = head?.0.serialized(includeBody: false) ?? []
        let text = String(decoding: bytes, as: UTF8.self)
        #expect(text.hasSuffix("Connection: close\r\n\r\n"))
        #expect(text.contains("Content-Length: 6\r\n"))
        #expect(HTTPServer.respond(to: .incomplete, handler: handler) == nil)
    }
}

@Suite struct HTMLEscapeTests {
    @Test(
        "escaping: markup and attribute breakers become text",
        arguments: [
            ("<script>alert(1)</script>", "&lt;script&gt;alert(1)&lt;/script&gt;"),
            ("\"><img src=x onerror=alert(1)>", "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;"),
            ("a&b 'c'", "a&amp;b &#39;c&#39;"),
            ("tab\tnl\nbell\u{07}", "tab\tnl\nbell\u{FFFD}"),
            ("Grüße", "Grüße"),
        ])
    func escape(input: String, expected: String) {
        #expect(HTML.escape(input) == expected)
    }

    @Test("invalid UTF-8 becomes the replacement character, then is escaped")
    func invalidUTF8() {
        let bytes: [UInt8] = [0x3C, 0xFF, 0xC3, 0x28, 0x3E]
        #expect(HTML.escape(bytes: bytes) == "&lt;\u{FFFD}\u{FFFD}(&gt;")
    }

    @Test("path segments are percent-encoded so a link cannot break out")
    func pathSegment() {
        #expect(HTML.pathSegment("a b/\"<>") == "a%20b%2F%22%3C%3E")
        #expect(HTML.pathSegment("user@example.test") == "user@example.test")
    }
}
