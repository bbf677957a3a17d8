import NetAddress
import Routing
import SMTPProtocol
import Testing

@testable import Delivery

@Suite struct TLSPolicyTableTests {
    static let table: TLSPolicyTable = {
        do {
            return try TLSPolicyTable(
                parsing: "example.net = encrypt, [192.0.2.7]=none .lab.example=none, a.lab.example=encrypt, "
                    + "[IPv6:2001:db8::25]=may, *=may")
        } catch {
            return TLSPolicyTable()
        }
    }()

    @Test(
        "domain (exact, then longest suffix) beats address beats *",
        arguments: [
            ("example.net", "203.0.113.1", ClientTLSPolicy.encrypt),
            ("EXAMPLE.NET.", "192.0.2.7", .encrypt),  // the domain entry wins over the address entry
            ("other.test", "192.0.2.7", .none),
            ("b.lab.example", "203.0.113.1", .none),
            ("a.lab.example", "192.0.2.7", .encrypt),
            ("lab.example", "203.0.113.1", .may),  // ".lab.example" is for subdomains only
            ("other.test", "2001:db8::25", .may),
            ("other.test", "203.0.113.1", .may),
        ])
    func lookup(domain: String, address: String, expected: ClientTLSPolicy) {
        #expect(Self.table.policy(domain: domain, address: IPAddress(address)) == expected)
    }

    @Test("without a matching entry (and no *) smtp_tls applies")
    func noMatch() throws {
        let table = try TLSPolicyTable(parsing: "example.net=encrypt")
        #expect(table.policy(domain: "other.test", address: nil) == nil)
        var configuration = OutboundConfiguration.forTests
        configuration.tlsPolicy = .may
        configuration.tlsPolicyTable = table
        let attempt = PlannedAttempt(
            mxHost: "mx.example.net", preference: 10,
            endpoint: Endpoint(address: IPAddress("192.0.2.1")!, port: 25))
        #expect(configuration.tlsPolicy(for: attempt, recipients: ["a@example.net"]) == .encrypt)
        #expect(configuration.tlsPolicy(for: attempt, recipients: ["a@other.test"]) == .may)
        #expect(configuration.tlsServerName(for: attempt) == "mx.example.net")
        let literal = PlannedAttempt(
            mxHost: "[192.0.2.1]", preference: 0, endpoint: Endpoint(address: IPAddress("192.0.2.1")!, port: 25))
        #expect(configuration.tlsServerName(for: literal) == nil)
    }

    @Test(
        "bad entries are typed errors",
        arguments: [
            ("example.net", TLSPolicyTableError.missingEquals("example.net")),
            ("example.net=maybe", .badPolicy("example.net=maybe")),
            ("[nope]=none", .badPattern("[nope]=none")),
            ("exa/mple=none", .badPattern("exa/mple=none")),
            ("a.test=none, a.test=may", .duplicate("a.test=may")),
        ])
    func errors(text: String, expected: TLSPolicyTableError) {
        #expect(throws: expected) { try TLSPolicyTable(parsing: text) }
    }

    @Test("rendering parses back to the same table")
    func roundTrip() throws {
        #expect(try TLSPolicyTable(parsing: Self.table.description) == Self.table)
        #expect(Self.table.entries.count == 6)
    }
}

extension OutboundConfiguration {
    static var forTests: OutboundConfiguration {
        OutboundConfiguration(
            heloName: "mx.lab.example", connectTimeout: .seconds(5), replyTimeout: nil, bindAddress: nil,
            bindAddress6: nil)
    }
}
