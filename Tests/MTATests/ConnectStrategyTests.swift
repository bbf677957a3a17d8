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
        #expect(parsed.metricsListen?.description == "127.0.0.1:9125")
        #expect(try ConfigurationFile.parse(ConfigurationFile.render(parsed)) == parsed)
        #expect(Configuration.defaults.connectStrategy == .sequential)
        #expect(Configuration.defaults.connectionAttemptDelay == .milliseconds(250))
        for bad in [
            "connect_strategy = fastest", "connection_attempt_delay = 5ms", "connection_attempt_delay = 3s",
            "metrics_listen = localhost",
        ] {
            #expect(throws: ConfigurationError.self) { try ConfigurationFile.parse(bad + "\n") }
        }
    }
}
