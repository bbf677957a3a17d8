import NetAddress
import SMTPProtocol
import Testing

@Suite struct RecipientPolicyTests {
    private func path(_ text: String) -> ForwardPath {
        if text == "Postmaster" { return .postmaster }
        guard let mailbox = Mailbox(parsing: Substring(text), allowUTF8: true) else {
            Issue.record("test address \(text) does not parse")
            return .postmaster
        }
        return .mailbox(mailbox)
    }

    private func outcome(_ result: Result<RecipientDisposition, Reply>) -> String {
        switch result {
        case .success(.local(let domain, let user)): return "local \(user)@\(domain)"
        case .success(.relay): return "relay"
        case .failure(let reply): return "\(reply.code) \(reply.status?.description ?? "")"
        }
    }

    /// Open-relay rows R01–R14, client 192.0.2.1 not allowed to relay (policy level; syntax rows are session tests).
    @Test(arguments: [
        ("victim@remote.example", "554 5.7.1"),  // R01
        ("victim%remote.example@lab.example", "550 5.1.1"),  // R02
        ("victim%remote.example@[192.0.2.2]", "550 5.1.1"),  // R03
        ("\"victim@remote.example\"@lab.example", "550 5.1.1"),  // R05
        ("remote.example!victim@lab.example", "550 5.1.1"),  // R08
        ("victim@[192.0.2.1]", "554 5.7.1"),  // R09
        ("victim@[IPv6:2001:db8::1]", "554 5.7.1"),  // R09
        ("victim@REMOTE.EXAMPLE", "554 5.7.1"),  // R10
        ("victim@localhost", "554 5.7.1"),  // R11
        ("v@lab.example.remote.example", "554 5.7.1"),  // R12
        ("v@xlab.example", "554 5.7.1"),  // R12
        ("v@example", "554 5.7.1"),  // suffix the other way
    ])
    func relayDenied(address: String, expected: String) {
        let result = Lab.policy().evaluate(path(address), clientMayRelay: false)
        #expect(outcome(result) == expected)
        if case .failure(let reply) = result, reply.code == 554 {
            #expect(reply.lines == ["<\(path(address))>: Relay access denied"])
        }
    }

    @Test(arguments: ["victim@remote.example", "victim@[192.0.2.1]", "x@lab.example.remote.example"])
    func relayAllowedForTrustedClients(address: String) {  // R14
        #expect(outcome(Lab.policy().evaluate(path(address), clientMayRelay: true)) == "relay")
    }

    @Test(arguments: [
        ("Postmaster", "local postmaster@mx.lab.example"),  // A09
        ("POSTMASTER@lab.example", "local postmaster@lab.example"),
        ("postmaster@[192.0.2.2]", "local postmaster@mx.lab.example"),  // A07
        ("postmaster@[IPv6:2001:db8:99::2]", "local postmaster@mx.lab.example"),  // A07
        ("postmaster@mx.lab.example", "local postmaster@mx.lab.example"),
        ("\"postmaster\"@lab.example", "local postmaster@lab.example"),
        ("postmaster@remote.example", "554 5.7.1"),
    ])
    func postmasterAlwaysAccepted(address: String, expected: String) {
        // Even with a local_recipients table that does not list postmaster.
        let policy = Lab.policy(localRecipients: ["alice"])
        #expect(outcome(policy.evaluate(path(address), clientMayRelay: false)) == expected)
    }

    /// T01: local parts that could leave the Maildir tree or look like routing are refused for local delivery.
    @Test(arguments: [
        "\"../../x\"@lab.example", "\"a/b\"@lab.example", "\"..\"@lab.example", "\".\"@lab.example",
        "\".hidden\"@lab.example", "\"\"@lab.example", "a@b@lab.example", "\"a@b\"@lab.example", "a%b@lab.example",
        "a!b@lab.example", "\"a\\\\/b\"@lab.example",
    ])
    func unsafeLocalPartsRefused(address: String) {
        guard let mailbox = Mailbox(parsing: Substring(address), allowUTF8: false) else {
            return  // refused by syntax already (501 at the session): also acceptable for T01
        }
        #expect(outcome(Lab.policy().evaluate(.mailbox(mailbox), clientMayRelay: true)) == "550 5.1.1")
    }

    @Test func controlCharactersRefused() {
        #expect(!RecipientPolicy.isSafeMaildirName("x\u{1}"))
        #expect(!RecipientPolicy.isSafeMaildirName("x\u{7f}"))
        #expect(!RecipientPolicy.isSafeMaildirName("x\u{0}"))
        #expect(RecipientPolicy.isSafeMaildirName("j\u{f6}rg"))
    }

    @Test func c1ControlsAndLineSeparatorsRefused() {
        #expect(!RecipientPolicy.isSafeMaildirName("x\u{85}y"))
        #expect(!RecipientPolicy.isSafeMaildirName("x\u{9b}"))
        #expect(!RecipientPolicy.isSafeMaildirName("x\u{2028}"))
        #expect(outcome(Lab.policy().evaluate(path("x\u{85}y@lab.example"), clientMayRelay: false)) == "550 5.1.1")
    }

    /// Local parts fold ASCII letters only: letters whose Unicode lowercase is ASCII (KELVIN SIGN, the Turkish
    /// dotted capital I, ANGSTROM SIGN) keep their own Maildir instead of landing in another user's.
    @Test(arguments: [
        ("\u{212A}elvin@lab.example", "local \u{212A}elvin@lab.example"),
        ("Kelvin@lab.example", "local kelvin@lab.example"),
        ("\u{130}nfo@lab.example", "local \u{130}nfo@lab.example"),
        ("\u{212B}ngstr\u{f6}m@lab.example", "local \u{212B}ngstr\u{f6}m@lab.example"),
        ("J\u{d6}RG@lab.example", "local j\u{d6}rg@lab.example"),
    ])
    func localPartsFoldASCIIOnly(address: String, expected: String) {
        #expect(outcome(Lab.policy().evaluate(path(address), clientMayRelay: false)) == expected)
    }

    @Test func kelvinSignIsNotALocalRecipientNamedKelvin() {
        var policy = Lab.policy()
        policy = RecipientPolicy(
            hostname: policy.hostname, localDomains: policy.localDomains, ownAddresses: policy.ownAddresses,
            localRecipients: ["kelvin"], relayDomains: [], relayRecipients: nil)
        #expect(outcome(policy.evaluate(path("KELVIN@lab.example"), clientMayRelay: false)).hasPrefix("local"))
        #expect(outcome(policy.evaluate(path("\u{212A}elvin@lab.example"), clientMayRelay: false)) == "550 5.1.1")
    }

    @Test func localUsersAreLowercasedDecodedLocalParts() {
        let policy = Lab.policy()
        #expect(outcome(policy.evaluate(path("Alice@Lab.Example"), clientMayRelay: false)) == "local alice@lab.example")
        #expect(
            outcome(policy.evaluate(path("\"John Smith\"@lab.example"), clientMayRelay: false))
                == "local john smith@lab.example")
        #expect(outcome(policy.evaluate(path("bob@[192.0.2.2]"), clientMayRelay: false)) == "local bob@mx.lab.example")
        #expect(
            outcome(policy.evaluate(path("bob@[IPv6:::ffff:192.0.2.2]"), clientMayRelay: false))
                == "local bob@mx.lab.example")
        #expect(
            outcome(policy.evaluate(path("bob@MX.lab.example"), clientMayRelay: false)) == "local bob@mx.lab.example")
    }

    @Test func localRecipientTable() {
        let policy = Lab.policy(localRecipients: ["Alice", "bob@lab.example"])
        #expect(outcome(policy.evaluate(path("alice@lab.example"), clientMayRelay: false)) == "local alice@lab.example")
        #expect(
            outcome(policy.evaluate(path("ALICE@mx.lab.example"), clientMayRelay: false))
                == "local alice@mx.lab.example")
        #expect(outcome(policy.evaluate(path("bob@lab.example"), clientMayRelay: false)) == "local bob@lab.example")
        #expect(outcome(policy.evaluate(path("bob@mx.lab.example"), clientMayRelay: false)) == "550 5.1.1")
        #expect(outcome(policy.evaluate(path("carol@lab.example"), clientMayRelay: true)) == "550 5.1.1")
        // A05: the quoted local part is looked up decoded.
        let quoted = Lab.policy(localRecipients: ["john smith"])
        #expect(
            outcome(quoted.evaluate(path("\"john smith\"@lab.example"), clientMayRelay: false))
                == "local john smith@lab.example")
    }

    @Test func relayDomains() {
        #expect(outcome(Lab.policy().evaluate(path("any@relay.example"), clientMayRelay: false)) == "relay")
        #expect(outcome(Lab.policy().evaluate(path("any@sub.relay.example"), clientMayRelay: false)) == "554 5.7.1")
        let listed = Lab.policy(relayRecipients: ["known", "x@relay.example"])
        #expect(outcome(listed.evaluate(path("Known@relay.example"), clientMayRelay: false)) == "relay")
        #expect(outcome(listed.evaluate(path("x@relay.example"), clientMayRelay: false)) == "relay")
        #expect(outcome(listed.evaluate(path("y@relay.example"), clientMayRelay: false)) == "550 5.1.1")
        // A trusted client still cannot reach unknown users of a relay domain with a recipient table.
        #expect(outcome(listed.evaluate(path("y@relay.example"), clientMayRelay: true)) == "550 5.1.1")
    }

    @Test func configurationIsNormalized() {
        let policy = RecipientPolicy(
            hostname: "MX.Lab.Example.", localDomains: ["Lab.Example."], ownAddresses: [IPAddress("::ffff:192.0.2.2")!],
            localRecipients: nil, relayDomains: ["Relay.Example"], relayRecipients: nil)
        #expect(outcome(policy.evaluate(path("a@lab.example"), clientMayRelay: false)) == "local a@lab.example")
        #expect(outcome(policy.evaluate(path("a@[192.0.2.2]"), clientMayRelay: false)) == "local a@mx.lab.example")
        #expect(outcome(policy.evaluate(path("a@relay.example"), clientMayRelay: false)) == "relay")
        #expect(outcome(policy.evaluate(.postmaster, clientMayRelay: false)) == "local postmaster@mx.lab.example")
    }
}
