import Foundation
import NetAddress
import Testing

@testable import MTA

/// Settings that parse one by one but that `serve` would refuse or run badly: each is a `config check` error that
/// names the file and the line of the key at fault.
@Suite struct ConfigurationValidationTests {
    static func failure(_ text: String) -> String? {
        do throws(ConfigurationError) {
            _ = try ConfigurationFile.parse(text, file: "f", checkingFiles: true)
            return nil
        } catch {
            return error.description
        }
    }

    @Test(arguments: [
        ("# x\ncommand_timeout = 0", "f:2: command_timeout: must be more than zero"),
        ("command_timeout = 0s", "f:1: command_timeout: must be more than zero"),
        ("listen = 127.0.0.1:0", "f:1: listen: \"127.0.0.1:0\": port 0 is not a port to listen on"),
        ("metrics_listen = [::1]:0", "f:1: metrics_listen: \"[::1]:0\": port 0 is not a port to listen on"),
        ("# x\n\nlisten = 127.0.0.1:2600, 127.0.0.1:2600", "f:3: listen: 127.0.0.1:2600 is listed twice"),
        (
            "listen = 0.0.0.0:2600, 127.0.0.1:2600",
            "f:1: listen: 127.0.0.1:2600 overlaps 0.0.0.0:2600 (a wildcard and an address on the same port)"
        ),
        (
            "listen = [::1]:2600\nmetrics_listen = [::]:2600",
            "f:2: metrics_listen: [::]:2600 overlaps [::1]:2600 (a wildcard and an address on the same port) "
                + "(also in listen)"
        ),
        (
            "listen = 127.0.0.1:2600\nmetrics_listen = 127.0.0.1:2600",
            "f:2: metrics_listen: 127.0.0.1:2600 is listed twice (also in listen)"
        ),
        (
            "tls_cert_file = /nonexistent/cert.pem\ntls_key_file = /nonexistent/key.pem",
            "f:1: tls_cert_file: cannot read /nonexistent/cert.pem: open: No such file or directory"
        ),
        ("hostname = a.example\ntls_key_file = /x.pem", "f:2: tls_cert_file and tls_key_file: set both or neither"),
        (
            "submission_listen = 127.0.0.1:2587\nsubmission_users_file = /nonexistent/users",
            "f:2: submission_users_file: cannot read /nonexistent/users: open: No such file or directory"
        ),
    ])
    func refused(text: String, expected: String) {
        #expect(Self.failure(text) == expected)
    }

    /// Wildcards of the two families do not overlap (IPv6 sockets are V6ONLY); different ports never do.
    @Test(arguments: [
        "listen = [::]:2600, 0.0.0.0:2600",
        "listen = 127.0.0.1:2600, 127.0.0.2:2600",
        "listen = 0.0.0.0:2600\nmetrics_listen = 0.0.0.0:2601",
    ])
    func accepted(text: String) {
        #expect(Self.failure(text) == nil)
    }

    @Test func openRelayNetworksWarn() {
        let inputs = SelfCheck.Inputs(
            hostname: "mx.example", listeners: [], hostnameAddresses: [], localAddresses: [], deliveryFamilies: [],
            ipv6: .init(hasGlobalAddress: true, hasRoute: true),
            relayNetworks: ["0.0.0.0/0", "[::]/0", "10.0.0.0/8"].compactMap { CIDR($0) })
        #expect(
            SelfCheck.evaluate(inputs).warnings == [
                "relay_networks 0.0.0.0/0 lets every ipv4 client relay: this is an open relay",
                "relay_networks [::]/0 lets every ipv6 client relay: this is an open relay",
            ])
    }
}
