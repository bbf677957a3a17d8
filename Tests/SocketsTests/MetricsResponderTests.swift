import Dispatch
import Glibc
import Testing

@testable import Sockets

extension SocketIO {
    @Suite struct MetricsResponderTests {
        @Test("request heads: GET /metrics is 200 with the exposition type; other paths and methods 404")
        func responses() {
            func text(_ head: String) -> String {
                String(decoding: MetricsResponder.response(toRequestHead: head, body: { "x 1\n" }), as: UTF8.self)
            }
            #expect(
                text("GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n") == "HTTP/1.0 200 OK\r\n"
                    + "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: 4\r\n"
                    + "Connection: close\r\n\r\nx 1\n")
            #expect(text("GET /metrics?name[]=x HTTP/1.0\r\n\r\n").hasPrefix("HTTP/1.0 200 OK\r\n"))
            #expect(text("GET / HTTP/1.0\r\n\r\n").hasPrefix("HTTP/1.0 404 Not Found\r\n"))
            #expect(text("POST /metrics HTTP/1.0\r\n\r\n").hasPrefix("HTTP/1.0 404 Not Found\r\n"))
            #expect(text("GET /metricsx HTTP/1.0\r\n\r\n").hasPrefix("HTTP/1.0 404 Not Found\r\n"))
            #expect(text("EHLO me\r\n\r\n").hasPrefix("HTTP/1.0 400 Bad Request\r\n"))
        }

        @Test("a scrape over loopback, both families", arguments: ["127.0.0.1:0", "[::1]:0"])
        func scrape(listen: String) throws {
            let responder = try MetricsResponder.start(on: try address(listen)) { "dualmta_test 42\n" }
            defer { responder.close() }
            let reply = try #require(exchange(responder.localAddress, "GET /metrics HTTP/1.0\r\n\r\n"))
            #expect(reply.hasPrefix("HTTP/1.0 200 OK\r\n"))
            #expect(reply.hasSuffix("\r\n\r\ndualmta_test 42\n"))
            let missing = try #require(exchange(responder.localAddress, "GET /other HTTP/1.0\r\n\r\n"))
            #expect(missing.hasPrefix("HTTP/1.0 404 Not Found\r\n"))
        }

        /// Sends `request` and reads until the server closes; nil on a deadline.
        func exchange(_ target: SocketAddress, _ request: String) -> String? {
            let queue = DispatchQueue(label: "test.metrics.client")
            guard case .success(let connection) = connectAndWait(to: target, queue: queue) else { return nil }
            let received = Shared<[UInt8]>([])
            let closed = DispatchSemaphore(value: 0)
            queue.async {
                connection.startReading(
                    { bytes in received.update { $0.append(contentsOf: bytes) } },
                    onClose: { _ in
                        connection.close(afterFlush: false)
                        closed.signal()
                    })
                connection.write(Array(request.utf8))
            }
            guard wait(closed, seconds: 10) else { return nil }
            return String(decoding: received.get(), as: UTF8.self)
        }
    }
}
