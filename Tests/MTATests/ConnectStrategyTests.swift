import Delivery
import Testing

@testable import MTA

/// The issue-9 keys: `connect_strategy`, `connection_attempt_delay` (RFC 8305 bounds) and `metrics_listen`.
@Suite struct ConnectStrategyTests {
    @Test("connect_strategy, connection_attempt_delay and metrics_listen parse, render and reject bad values")
    func keys() throws {
        let parsed = try ConfigurationFile.parse(
            "connect_strategy = happy-eyeballs\nconnection_attempt_delay = 100ms\nmetrics_listen = 127.0.0.1:9125\n")
        #expect(parsed.connectStrategy == .happyEyeballs)
        #expect(parsed.connectionAttemptDelay == .milliseconds(100))
        #expect(parsed.httpListen?.description == "127.0.0.1:9125")
        #expect(parsed.httpListenKey == "metrics_listen")
        #expect(try ConfigurationFile.parse(ConfigurationFile.render(parsed)) == parsed)
        #expect(Configuration.defaults.connectStrategy == .sequential)
        #expect(Configuration.defaults.connectionAttemptDelay == .milliseconds(250))
        for bad in [
            "connect_strategy = fastest", "connection_attempt_delay = 5ms", "connection_attempt_delay = 3s",
            "metrics_listen = localhost", "http_listen = localhost", "http_listen = 127.0.0.1:0",
        ] {
            #expect(throws: ConfigurationError.self) { try ConfigurationFile.parse(bad + "\n") }
        }
    }
}

/// `http_listen`: the console's address, its default, `none`, and the `metrics_listen` alias.
@Suite struct HTTPListenKeyTests {
    @Test("default 127.0.0.1:8025 (not explicit), none turns it off, the last of the two keys wins")
    func values() throws {
        #expect(Configuration.defaults.httpListen?.description == "127.0.0.1:8025")
        #expect(Configuration.defaults.httpListenKey == nil)
        let off = try ConfigurationFile.parse("http_listen = none\n")
        #expect(off.httpListen == nil)
        #expect(off.httpListenKey == "http_listen")
        #expect(try ConfigurationFile.parse(ConfigurationFile.render(off)) == off)
        let both = try ConfigurationFile.parse("metrics_listen = 127.0.0.1:9125\nhttp_listen = [::1]:8080\n")
        #expect(both.httpListen?.description == "[::1]:8080")
        #expect(try ConfigurationFile.parse(ConfigurationFile.render(both)) == both)
        #expect(try ConfigurationFile.parse(ConfigurationFile.render(.defaults)).httpListenKey == nil)
    }

    @Test("http_token: unset by default, at least 16 printable characters")
    func token() throws {
        #expect(Configuration.defaults.httpToken == nil)
        #expect(try ConfigurationFile.parse("http_token = lab-token-0123456789\n").httpToken == "lab-token-0123456789")
        for bad in ["http_token = short", "http_token = \"with blank 0123456789\""] {
            #expect(throws: ConfigurationError.self) { try ConfigurationFile.parse(bad + "\n") }
        }
    }
}
