import Delivery
import Logging
import Testing

@testable import MTA

/// `smtp_connection_cache*`: defaults, values, refusals, and what the wiring builds from them.
@Suite struct ConnectionCacheConfigTests {
    @Test func defaultsAreOnTwoSecondsAHundredUsesThirtyTwoSessions() throws {
        let configuration = try ConfigurationFile.parse("")
        #expect(configuration.smtpConnectionCache)
        #expect(
            configuration.smtpConnectionCacheSettings
                == ConnectionCacheSettings(idleTime: .seconds(2), reuseLimit: 100, size: 32))
        #expect(configuration.connectionCache(logger: Logger(label: "test"))?.settings.size == 32)
    }

    @Test func valuesAreReadAndRenderedBack() throws {
        let configuration = try ConfigurationFile.parse(
            """
            smtp_connection_cache = no
            smtp_connection_cache_time = 500ms
            smtp_connection_reuse_limit = 7
            smtp_connection_cache_size = 3
            """)
        #expect(!configuration.smtpConnectionCache)
        #expect(
            configuration.smtpConnectionCacheSettings
                == ConnectionCacheSettings(idleTime: .milliseconds(500), reuseLimit: 7, size: 3))
        #expect(configuration.connectionCache(logger: Logger(label: "test")) == nil)
        let shown = ConfigurationFile.render(configuration)
        #expect(shown.contains("smtp_connection_cache = no"))
        #expect(shown.contains("smtp_connection_cache_time = 500ms"))
        #expect(shown.contains("smtp_connection_reuse_limit = 7"))
        #expect(shown.contains("smtp_connection_cache_size = 3"))
    }

    @Test(arguments: [
        ("smtp_connection_cache = maybe", "expected yes or no"),
        ("smtp_connection_cache_time = 0s", "more than zero"),
        ("smtp_connection_cache_time = 10m", "at most 300s"),
        ("smtp_connection_reuse_limit = 0", "expected a number in 1...100000"),
        ("smtp_connection_cache_size = lots", "expected a number in 1...10000"),
    ])
    func badValuesNameTheLine(line: String, message: String) {
        #expect {
            _ = try ConfigurationFile.parse("# reuse\n" + line + "\n", file: "test.conf")
        } throws: { error in
            let text = "\(error)"
            return text.contains("test.conf:2") && text.contains(message)
        }
    }
}
