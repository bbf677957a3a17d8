import NetAddress
import Sockets
import Testing

@testable import MTA

@Suite struct StatsTests {
    @Test("wildcard metrics_listen addresses are fetched over the loopback of their family")
    func endpoint() throws {
        let v6 = try #require(SocketAddress(parsing: "[::]:9125"))
        let v4 = try #require(SocketAddress(parsing: "0.0.0.0:9125"))
        let specific = try #require(SocketAddress(parsing: "192.0.2.1:9125"))
        #expect(Stats.endpoint(for: v6).description == "[::1]:9125")
        #expect(Stats.endpoint(for: v4).description == "127.0.0.1:9125")
        #expect(Stats.endpoint(for: specific) == specific)
    }

    @Test("the body of a 200; other statuses and truncated answers are errors")
    func body() throws {
        #expect(try Stats.body(of: Array("HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\nx 1\n".utf8)) == "x 1\n")
        #expect(throws: Stats.Failure.self) { try Stats.body(of: Array("HTTP/1.0 404 Not Found\r\n\r\n".utf8)) }
        #expect(throws: Stats.Failure.self) { try Stats.body(of: Array("HTTP/1.0 200 OK\r\n".utf8)) }
    }

    @Test("the summary drops comments and buckets unless raw")
    func summary() {
        let text = "# HELP a A.\n# TYPE a counter\na 1\nh_bucket{le=\"1\"} 2\nh_sum 0.5\nh_count 2\n"
        #expect(Stats.summary(text, raw: false) == "a 1\nh_sum 0.5\nh_count 2\n")
        #expect(Stats.summary(text, raw: true) == text)
    }
}
