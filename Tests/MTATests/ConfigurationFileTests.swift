import Foundation
import Logging
import NetAddress
import Testing

@testable import MTA

@Suite struct ConfigurationFileTests {
    @Test func emptyFileGivesTheEmbeddedDefaults() throws {
        let configuration = try ConfigurationFile.parse("# nothing here\n\n")
        #expect(configuration == Configuration.defaults)
        #expect(configuration.listen.map(\.description) == ["[::]:2525", "0.0.0.0:2525"])
        #expect(configuration.spoolDirectory == "spool")
        #expect(configuration.localDomains == ["localhost"])
        #expect(configuration.relayNetworks.map(\.description) == ["127.0.0.0/8", "[::1]/128"])
        #expect(configuration.messageSizeLimit == 10 * 1024 * 1024)
    }

    @Test func valuesOfEveryType() throws {
        let configuration = try ConfigurationFile.parse(
            """
            hostname = MX.Lab.Example.   # trailing dot and case are normalised
            listen = [::1]:2526, 127.0.0.1:2526
            spool_dir = /tmp/x/spool
            local_domains = lab.example other.example
            local_recipients = alice, bob@lab.example
            relay_networks = 127.0.0.1/32
            message_size_limit = 2M
            command_timeout = 5s
            log_format = json
            """)
        #expect(configuration.hostname == "mx.lab.example")
        #expect(configuration.listen.map(\.description) == ["[::1]:2526", "127.0.0.1:2526"])
        #expect(configuration.localDomains == ["lab.example", "other.example"])
        #expect(configuration.allLocalDomains == ["mx.lab.example", "lab.example", "other.example"])
        #expect(configuration.localRecipients == ["alice", "bob@lab.example"])
        #expect(configuration.messageSizeLimit == 2 * 1024 * 1024)
        #expect(configuration.commandTimeout == .seconds(5))
        #expect(configuration.logFormat == .json)
    }

    @Test(arguments: [
        ("lisen = [::]:25", 1, "unknown key \"lisen\""),
        ("\n\nlisten = 0.0.0.0", 3, "not an address with a port"),
        ("hostname = a\nhostname = b", 2, "already set on line 1"),
        ("message_size_limit = lots", 1, "expected a size"),
        ("command_timeout = 5 minutes", 1, "expected a duration"),
        ("relay_networks = 10.0.0.0/33", 1, "not a network"),
        ("max_connections = 0", 1, "expected a number"),
        ("just words", 1, "expected \"key = value\""),
        ("log_format = xml", 1, "expected text or json"),
    ])
    func errorsNameTheLine(text: String, line: Int, fragment: String) {
        #expect {
            try ConfigurationFile.parse(text, file: "test.conf")
        } throws: { error in
            guard let error = error as? ConfigurationError else { return false }
            return error.line == line && error.description.hasPrefix("test.conf:\(line): ")
                && error.message.contains(fragment)
        }
    }

    @Test func crossKeyRulesAreChecked() {
        #expect(throws: ConfigurationError.self) { try ConfigurationFile.parse("recipient_limit = 50") }
        #expect(throws: ConfigurationError.self) { try ConfigurationFile.parse("listen = [::]:25, [::]:25") }
    }

    @Test func showRoundTrips() throws {
        let original = try ConfigurationFile.parse(
            "local_recipients = alice\nlisten = 127.0.0.1:2600\nlog_file = /tmp/l")
        let shown = ConfigurationFile.render(original)
        #expect(try ConfigurationFile.parse(shown) == original)
    }

    @Test func theSampleConfigIsValid() throws {
        let sample = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent(
            "../../etc/dualmta.conf"
        ).standardized.path
        let configuration = try ConfigurationFile.load(path: sample)
        #expect(configuration.listen.count == 2)
    }
}

@Suite struct MailLogFormatterTests {
    @Test func textLinesHaveFieldsInAFixedOrder() {
        let line = MailLogFormatter.format(
            level: .info, message: "delivery",
            fields: ["ms": "3", "family": "ipv6", "id": "Q7F3K2", "reason": "No route to host", "rcpt": "<b@x>"],
            date: Date(timeIntervalSince1970: 0), json: false)
        #expect(
            line
                == "1970-01-01T00:00:00Z info  delivery id=Q7F3K2 rcpt=<b@x> family=ipv6 reason=\"No route to host\" ms=3\n"
        )
    }

    @Test func hostileValuesCannotBreakALine() {
        let line = MailLogFormatter.format(
            level: .notice, message: "rejected", fields: ["reason": "a\r\nfake line"], date: Date(), json: false)
        #expect(line.filter { $0 == "\n" || $0 == "\r\n" }.count == 1)
        #expect(line.contains("reason=\"a\\r\\nfake line\""))
    }

    @Test func jsonLinesParse() throws {
        let line = MailLogFormatter.format(
            level: .info, message: "accepted", fields: ["id": "A", "from": "<\"x\"@y>"], date: Date(), json: true)
        let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: String]
        #expect(object?["event"] == "accepted")
        #expect(object?["from"] == "<\"x\"@y>")
    }
}
