import Glibc
import Testing

@testable import Console
@testable import Sockets

extension ConsoleIO {
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

        /// Sends `request` with a plain blocking client socket and reads until the server closes; nil on an error
        /// or after the 10 s receive deadline.
        func exchange(_ target: SocketAddress, _ request: String) -> String? {
            let fd = socket(target.family == .ipv6 ? AF_INET6 : AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            guard fd >= 0 else { return nil }
            defer { close(fd) }
            var limit = timeval(tv_sec: 10, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
            guard target.withSockAddr({ connect(fd, $0, $1) }) == 0 else { return nil }
            let bytes = Array(request.utf8)
            guard send(fd, bytes, bytes.count, 0) == bytes.count else { return nil }
            var received: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let count = recv(fd, &buffer, buffer.count, 0)
                if count == 0 { return String(decoding: received, as: UTF8.self) }
                if count < 0 { return nil }
                received += buffer[0..<count]
            }
        }
    }
}

func address(_ text: String) throws -> SocketAddress {
    try #require(SocketAddress(parsing: text))
}

/// The console's socket tests run one at a time (they bind and count descriptors).
@Suite(.serialized) enum ConsoleIO {}
