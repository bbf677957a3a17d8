import Faults
import NetAddress
import Sockets
import Testing

@testable import MTA

@Suite struct FaultConfigTests {
    @Test func faultLinesRepeatInFileOrder() throws {
        let configuration = try ConfigurationFile.parse(
            """
            hostname = mx.lab.example
            fault = outbound connect family=ipv6 mx=mx10.example.test unreachable
            fault = inbound rcpt rcpt=tempfail*@* reply 451 4.7.1 try later first=2
            """)
        #expect(
            configuration.faultRules.map(\.text) == [
                "outbound connect family=ipv6 mx=mx10.example.test unreachable",
                "inbound rcpt rcpt=tempfail*@* reply 451 4.7.1 try later first=2",
            ])
        // `config show` prints one line per rule, and its output parses to the same settings.
        let shown = ConfigurationFile.render(configuration)
        #expect(try ConfigurationFile.parse(shown).faultRules == configuration.faultRules)
    }

    @Test func aBadRuleNamesFileAndLineAndNothingIsKept() {
        let text = "fault = inbound rcpt drop\n\nfault = inbound data-end greylist 1m\n"
        #expect(
            throws: ConfigurationError(
                file: "lab.conf", line: 3, message: "fault: greylist works at the inbound rcpt stage only")
        ) { try ConfigurationFile.parse(text, file: "lab.conf") }
    }

    @Test func otherKeysStillRefuseRepetition() {
        #expect(throws: ConfigurationError.self) {
            try ConfigurationFile.parse("hostname = a.example\nhostname = b.example\n")
        }
    }

    @Test(arguments: [
        // (rule, listeners, warns)
        ("inbound rcpt drop", ["127.0.0.1:25", "[::1]:25"], false),
        ("inbound rcpt drop", ["[::]:25"], true),
        ("inbound rcpt drop", ["192.0.2.1:25"], true),
        ("inbound rcpt listener=127.0.0.1:25 drop", ["127.0.0.1:25", "192.0.2.1:25"], false),
        ("inbound rcpt listener=*:25 drop", ["127.0.0.1:25", "192.0.2.1:25"], true),
        ("inbound rcpt listener=*:587 drop", ["192.0.2.1:25"], false),
        ("outbound connect refuse", ["0.0.0.0:25"], false),
    ])
    func nonLoopbackListenerWarning(rule: String, listeners: [String], warns: Bool) throws {
        let warnings = FaultCheck.warnings(
            rules: [try FaultRule(parsing: rule)], listeners: listeners.compactMap { SocketAddress(parsing: $0) })
        #expect(warnings.count == (warns ? 1 : 0), "\(warnings)")
        if warns { #expect(warnings[0].hasPrefix("fault F1 (\(rule)) applies to the non-loopback listener")) }
    }
}
