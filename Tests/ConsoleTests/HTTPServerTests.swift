import Glibc
import Testing

@testable import Console
@testable import Sockets

extension ConsoleIO {
    @Suite struct HTTPServerTests {
        @Test(
            "a request over loopback, both families; 404 and 405 over the wire", arguments: ["127.0.0.1:0", "[::1]:0"])
        func serve(listen: String) throws {
            let server = try HTTPServer.start(on: try address(listen)) { request in
                request.path == "/metrics" ? .text(.ok, "dualmta_test 42\n") : .text(.notFound, "not found\n")
            }
            defer { server.close() }
            let reply = try #require(exchange(server.localAddress, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"))
            #expect(reply.hasPrefix("HTTP/1.1 200 OK\r\n"))
            #expect(reply.contains("Content-Security-Policy: default-src 'none'"))
            #expect(reply.hasSuffix("\r\n\r\ndualmta_test 42\n"))
            let missing = try #require(exchange(server.localAddress, "GET /other HTTP/1.0\r\n\r\n"))
            #expect(missing.hasPrefix("HTTP/1.1 404 Not Found\r\n"))
            let post = try #require(exchange(server.localAddress, "DELETE /metrics HTTP/1.1\r\n\r\n"))
            #expect(post.hasPrefix("HTTP/1.1 405 Method Not Allowed\r\n"))
        }

        @Test("a slow client gets 408 after the deadline; the connection limit answers 503 and frees its slot")
        func slowAndFull() throws {
            var settings = HTTPServer.Settings()
            settings.requestTimeout = .milliseconds(300)
            settings.maxConnections = 1
            let server = try HTTPServer.start(on: try address("127.0.0.1:0"), settings: settings) { _ in
                .text(.ok, "ok\n")
            }
            defer { server.close() }
            // One client sends half a head and stalls; it occupies the only slot.
            let stalled = try #require(connectSocket(server.localAddress))
            defer { close(stalled) }
            _ = send(stalled, "GET / HT", 8, 0)
            let deadline = ContinuousClock.now + .seconds(5)
            while server.openConnections < 1, ContinuousClock.now < deadline { usleep(2000) }
            #expect(server.openConnections == 1)
            let refused = try #require(exchange(server.localAddress, "GET / HTTP/1.1\r\n\r\n"))
            #expect(refused.hasPrefix("HTTP/1.1 503 Service Unavailable\r\n"))
            let slow = try #require(readAll(stalled))
            #expect(slow.hasPrefix("HTTP/1.1 408 Request Timeout\r\n"))
            #expect(server.openConnections == 0)
            let again = try #require(exchange(server.localAddress, "GET / HTTP/1.1\r\n\r\n"))
            #expect(again.hasPrefix("HTTP/1.1 200 OK\r\n"))
        }

        @Test("admission: served up to the limit, refused with 503 up to as many again, then closed at once")
        func admission() {
            #expect(HTTPServer.admission(open: 0, refusing: 0, maxConnections: 2) == .serve)
            #expect(HTTPServer.admission(open: 1, refusing: 5, maxConnections: 2) == .serve)
            #expect(HTTPServer.admission(open: 2, refusing: 0, maxConnections: 2) == .refuse)
            #expect(HTTPServer.admission(open: 2, refusing: 1, maxConnections: 2) == .refuse)
            #expect(HTTPServer.admission(open: 2, refusing: 2, maxConnections: 2) == .drop)
        }

        @Test("an oversized head is refused with 431 before its end arrives")
        func oversized() throws {
            let server = try HTTPServer.start(on: try address("127.0.0.1:0")) { _ in .text(.ok, "ok\n") }
            defer { server.close() }
            let head = "GET / HTTP/1.1\r\n" + String(repeating: "X-Filler: 0123456789abcdef\r\n", count: 400)
            let reply = try #require(exchange(server.localAddress, head))
            #expect(reply.hasPrefix("HTTP/1.1 431 Request Header Fields Too Large\r\n"))
        }

        func connectSocket(_ target: SocketAddress) -> Int32? {
            let fd = socket(target.family == .ipv6 ? AF_INET6 : AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            guard fd >= 0 else { return nil }
            var limit = timeval(tv_sec: 10, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
            guard target.withSockAddr({ connect(fd, $0, $1) }) == 0 else {
                close(fd)
                return nil
            }
            return fd
        }

        /// Reads until the server closes; nil on an error or after the 10 s receive deadline.
        func readAll(_ fd: Int32) -> String? {
            var received: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let count = recv(fd, &buffer, buffer.count, 0)
                if count == 0 { return String(decoding: received, as: UTF8.self) }
                if count < 0 { return received.isEmpty ? nil : String(decoding: received, as: UTF8.self) }
                received += buffer[0..<count]
            }
        }

        /// Sends `request` with a plain blocking client socket and reads until the server closes.
        func exchange(_ target: SocketAddress, _ request: String) -> String? {
            guard let fd = connectSocket(target) else { return nil }
            defer { close(fd) }
            let bytes = Array(request.utf8)
            guard send(fd, bytes, bytes.count, 0) == bytes.count else { return nil }
            return readAll(fd)
        }
    }
}

func address(_ text: String) throws -> SocketAddress {
    try #require(SocketAddress(parsing: text))
}

/// The console's socket tests run one at a time (they bind and count descriptors).
@Suite(.serialized) enum ConsoleIO {}
