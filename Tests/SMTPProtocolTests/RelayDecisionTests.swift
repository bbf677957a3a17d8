import NetAddress
import Testing

@testable import SMTPProtocol

/// The relay decision as one table: who the client is (address, relay networks, AUTH), which recipient it names,
/// and what the server answers. One row per rule, then the edges (address families, /0, case, trailing dot,
/// routing syntax). The end-to-end suites check the same rules over sockets; this pins each one where it is made.
@Suite struct RelayDecisionTests {
    struct Row: CustomTestStringConvertible, Sendable {
        let name: String
        let client: String
        let networks: [String]
        let authenticated: Bool
        let recipient: String
        /// Only these users may be relayed to in relay.example (relay_recipients); nil: anyone.
        let relayRecipients: Set<String>?
        /// The domains were configured in upper case with a trailing dot (`Lab.Example.`).
        let configuredLoosely: Bool
        let expected: String

        init(
            _ name: String, client: String, networks: [String] = [], authenticated: Bool = false,
            recipient: String, relayRecipients: Set<String>? = nil, configuredLoosely: Bool = false,
            expected: String
        ) {
            self.name = name
            self.client = client
            self.networks = networks
            self.authenticated = authenticated
            self.recipient = recipient
            self.relayRecipients = relayRecipients
            self.configuredLoosely = configuredLoosely
            self.expected = expected
        }

        var testDescription: String { name }
    }

    static let denied = "554 5.7.1"
    static let unknown = "550 5.1.1"

    static let rows: [Row] = [
        // The rules.
        Row("outsider to a foreign domain", client: "192.0.2.1", recipient: "v@remote.example", expected: denied),
        Row(
            "client inside relay_networks", client: "192.0.2.77", networks: ["192.0.2.0/24"],
            recipient: "v@remote.example", expected: "relay"),
        Row(
            "client outside relay_networks", client: "198.51.100.7", networks: ["192.0.2.0/24"],
            recipient: "v@remote.example", expected: denied),
        Row(
            "authenticated outsider", client: "198.51.100.7", networks: ["192.0.2.0/24"], authenticated: true,
            recipient: "v@remote.example", expected: "relay"),
        Row(
            "outsider to a local domain", client: "198.51.100.7", recipient: "u@lab.example",
            expected: "local u@lab.example"),
        Row(
            "outsider to the hostname", client: "198.51.100.7", recipient: "u@mx.lab.example",
            expected: "local u@mx.lab.example"),
        Row(
            "outsider to our own literal", client: "198.51.100.7", recipient: "u@[192.0.2.2]",
            expected: "local u@mx.lab.example"),
        Row("outsider to a foreign literal", client: "198.51.100.7", recipient: "u@[192.0.2.3]", expected: denied),
        Row("outsider to a relay domain", client: "198.51.100.7", recipient: "any@relay.example", expected: "relay"),
        Row(
            "relay_recipients lists the user", client: "198.51.100.7", recipient: "known@relay.example",
            relayRecipients: ["known"], expected: "relay"),
        Row(
            "relay_recipients lacks the user", client: "198.51.100.7", recipient: "other@relay.example",
            relayRecipients: ["known"], expected: unknown),
        Row(
            "relay_recipients binds trusted clients too", client: "192.0.2.77", networks: ["192.0.2.0/24"],
            authenticated: true, recipient: "other@relay.example", relayRecipients: ["known"], expected: unknown),
        Row(
            "relay_recipients is only about relay domains", client: "198.51.100.7", authenticated: true,
            recipient: "v@remote.example", relayRecipients: ["known"], expected: "relay"),
        Row(
            "Postmaster from anyone", client: "198.51.100.7", recipient: "Postmaster",
            expected: "local postmaster@mx.lab.example"),
        Row("subdomain of a relay domain", client: "198.51.100.7", recipient: "a@sub.relay.example", expected: denied),

        // Address families and networks.
        Row(
            "IPv4-mapped IPv6 client in an IPv4 network", client: "::ffff:192.0.2.9", networks: ["192.0.2.0/24"],
            recipient: "v@remote.example", expected: "relay"),
        Row(
            "IPv4-mapped IPv6 client is not in an IPv6 network", client: "::ffff:192.0.2.9",
            networks: ["[2001:db8::]/32"], recipient: "v@remote.example", expected: denied),
        Row(
            "::1 in [::1]/128", client: "::1", networks: ["[::1]/128"], recipient: "v@remote.example", expected: "relay"
        ),
        Row(
            "::1 is not in 127.0.0.0/8", client: "::1", networks: ["127.0.0.0/8"], recipient: "v@remote.example",
            expected: denied),
        Row(
            "127.0.0.1 is not in [::1]/128", client: "127.0.0.1", networks: ["[::1]/128"],
            recipient: "v@remote.example", expected: denied),
        Row(
            "0.0.0.0/0 holds any IPv4 client", client: "203.0.113.5", networks: ["0.0.0.0/0"],
            recipient: "v@remote.example", expected: "relay"),
        Row(
            "0.0.0.0/0 holds no IPv6 client", client: "2001:db8::5", networks: ["0.0.0.0/0"],
            recipient: "v@remote.example", expected: denied),
        Row(
            "[::]/0 holds any IPv6 client", client: "2001:db8::5", networks: ["[::]/0"], recipient: "v@remote.example",
            expected: "relay"),
        Row(
            "[::]/0 holds no IPv4-mapped client", client: "::ffff:203.0.113.5", networks: ["[::]/0"],
            recipient: "v@remote.example", expected: denied),
        Row(
            "/32 is that one address", client: "192.0.2.78", networks: ["192.0.2.77/32"], recipient: "v@remote.example",
            expected: denied),
        Row(
            "no networks, no AUTH", client: "127.0.0.1", networks: [], recipient: "v@remote.example",
            expected: denied),

        // Case and the trailing dot.
        Row("upper-case foreign domain", client: "198.51.100.7", recipient: "V@REMOTE.EXAMPLE", expected: denied),
        Row(
            "upper-case local domain", client: "198.51.100.7", recipient: "U@LAB.EXAMPLE",
            expected: "local u@lab.example"),
        Row("upper-case relay domain", client: "198.51.100.7", recipient: "any@Relay.Example", expected: "relay"),
        Row(
            "trailing dot on a local domain", client: "198.51.100.7", recipient: "u@lab.example.",
            expected: "501 syntax"),
        Row(
            "trailing dot on a foreign domain", client: "198.51.100.7", recipient: "v@remote.example.",
            expected: "501 syntax"),
        Row(
            "local domain configured as Lab.Example.", client: "198.51.100.7", recipient: "u@lab.example",
            configuredLoosely: true, expected: "local u@lab.example"),
        Row(
            "relay domain configured as Relay.Example.", client: "198.51.100.7", recipient: "a@RELAY.example",
            configuredLoosely: true, expected: "relay"),
        Row(
            "loosely configured domains do not match a suffix", client: "198.51.100.7", recipient: "a@xlab.example",
            configuredLoosely: true, expected: denied),

        // Routing syntax never relays, not even for trusted clients.
        Row("% hack", client: "198.51.100.7", recipient: "v%remote.example@lab.example", expected: unknown),
        Row(
            "% hack from a trusted client", client: "192.0.2.77", networks: ["192.0.2.0/24"],
            recipient: "v%remote.example@lab.example", expected: unknown),
        Row(
            "% hack at our literal", client: "198.51.100.7", recipient: "v%remote.example@[192.0.2.2]",
            expected: unknown),
        Row("bang path", client: "198.51.100.7", recipient: "remote.example!v@lab.example", expected: unknown),
        Row("quoted @", client: "198.51.100.7", recipient: "\"v@remote.example\"@lab.example", expected: unknown),
        Row(
            "source route through us to a foreign domain", client: "198.51.100.7",
            recipient: "@lab.example:v@remote.example", expected: denied),
        Row(
            "source route to a local user", client: "198.51.100.7", recipient: "@remote.example:u@lab.example",
            expected: "local u@lab.example"),
    ]

    @Test(arguments: rows)
    func decision(row: Row) throws {
        let client = try #require(IPAddress(row.client), "client \(row.client)")
        let networks = try row.networks.map { try #require(CIDR($0), "network \($0)") }
        let policy =
            row.configuredLoosely
            ? RecipientPolicy(
                hostname: "MX.Lab.Example.", localDomains: ["Lab.Example."], ownAddresses: [Lab.ownV4],
                localRecipients: nil, relayDomains: ["Relay.Example."], relayRecipients: row.relayRecipients)
            : Lab.policy(relayRecipients: row.relayRecipients)
        let path: ForwardPath
        switch PathParser.parse(Substring(row.recipient), allowUTF8: false, recipient: true) {
        case .success(.mailbox(let mailbox)): path = .mailbox(mailbox)
        case .success(.postmaster): path = .postmaster
        case .success(.null), .failure:
            #expect("501 syntax" == row.expected, "\(row.name): \(row.recipient) does not parse")
            return
        }
        let result = policy.decide(
            path, client: client, relayNetworks: networks, authenticated: row.authenticated)
        #expect(Self.outcome(result) == row.expected, "\(row.name)")
        if case .failure(let reply) = result, reply.code == 554 {
            #expect(reply.lines == ["<\(path)>: Relay access denied"])
        }
    }

    /// The session's two steps (address at connect time, AUTH later) agree with the one-step decision.
    @Test(arguments: [(false, false), (false, true), (true, false), (true, true)])
    func rightsCombine(inNetworks: Bool, authenticated: Bool) {
        let rights = RelayRights(inRelayNetworks: inNetworks, authenticated: authenticated)
        #expect(rights.mayRelay == (inNetworks || authenticated))
        let network = [CIDR("192.0.2.0/24")!]
        let client = IPAddress(inNetworks ? "192.0.2.5" : "198.51.100.5")!
        #expect(RelayRights(client: client, relayNetworks: network, authenticated: authenticated) == rights)
    }

    static func outcome(_ result: Result<RecipientDisposition, Reply>) -> String {
        switch result {
        case .success(.local(let domain, let user)): return "local \(user)@\(domain)"
        case .success(.relay): return "relay"
        case .failure(let reply): return "\(reply.code) \(reply.status?.description ?? "")"
        }
    }
}
