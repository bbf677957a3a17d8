import Faults
import NetAddress
import Testing

@Suite struct FaultTableTests {
    private func table(_ rules: String...) throws -> FaultTable {
        var table = FaultTable(randomSeed: 1)
        for rule in rules { table.add(try FaultRule(parsing: rule), now: 0) }
        return table
    }

    private static let v6Attempt = FaultContext(
        family: .ipv6, mx: "MX10.example.test.", addr: IPAddress("2001:db8::10"), port: 25, from: "a@example.org",
        recipients: ["bob@Lab.Example"])

    @Test(arguments: [
        ("outbound connect family=ipv6 unreachable", true),
        ("outbound connect family=ipv4 unreachable", false),
        ("outbound connect mx=mx10.example.test unreachable", true),
        ("outbound connect mx=mx*.example.test unreachable", true),
        ("outbound connect mx=mx20.example.test unreachable", false),
        ("outbound connect addr=2001:db8::/64 refuse", true),
        ("outbound connect addr=192.0.2.0/24 refuse", false),
        ("outbound connect port=25 refuse", true),
        ("outbound connect port=2525 refuse", false),
        ("outbound connect from=*@example.org refuse", true),
        ("outbound connect from=A@EXAMPLE.ORG refuse", true),
        ("outbound connect from=b@* refuse", false),
        ("outbound connect rcpt=bob@lab.example refuse", true),
        ("outbound connect rcpt=*@other.example refuse", false),
        ("outbound connect domain=lab.example refuse", true),
        ("outbound connect domain=*.example refuse", true),
        ("outbound connect domain=example refuse", false),
        ("outbound rcpt family=ipv6 reply 550", false),  // another stage
        ("inbound connect family=ipv6 drop", false),  // another side
    ])
    func outboundMatching(rule: String, fires: Bool) throws {
        var table = try table(rule)
        let hit = table.evaluate(side: .outbound, stage: .connect, Self.v6Attempt, now: 0)
        #expect((hit != nil) == fires)
    }

    @Test(arguments: [
        ("inbound connect client=127.0.0.0/8 drop", true),
        ("inbound connect client=::1 drop", false),
        ("inbound connect listener=127.0.0.1:2525 drop", true),
        ("inbound connect listener=*:2525 drop", true),
        ("inbound connect listener=*:587 drop", false),
        ("inbound connect listener=[::1]:2525 drop", false),
        ("inbound connect family=ipv4 drop", true),
    ])
    func inboundMatching(rule: String, fires: Bool) throws {
        var table = try table(rule)
        // An IPv4 client seen as IPv4-mapped on a dual-stack socket is still an IPv4 client.
        let context = FaultContext(
            family: .ipv4, client: IPAddress("::ffff:127.0.0.5"), listener: (IPAddress("127.0.0.1")!, 2525))
        #expect((table.evaluate(side: .inbound, stage: .connect, context, now: 0) != nil) == fires)
    }

    /// Which of the first twelve matches fire.
    private func firing(_ rule: String) throws -> [Int] {
        var table = try table(rule)
        let context = FaultContext(family: .ipv4, recipients: ["x@y.example"])
        return (1...12).filter { _ in table.evaluate(side: .inbound, stage: .rcpt, context, now: 0) != nil }
    }

    @Test(arguments: [
        ("inbound rcpt drop", Array(1...12)),
        ("inbound rcpt drop first=2", [1, 2]),
        ("inbound rcpt drop after=10", [11, 12]),
        ("inbound rcpt drop every=3", [3, 6, 9, 12]),
        ("inbound rcpt drop after=2 first=3", [3, 4, 5]),
        ("inbound rcpt drop after=1 every=4 first=8", [5, 9]),
        ("inbound rcpt drop probability=0", []),
        ("inbound rcpt drop probability=1", Array(1...12)),
    ])
    func counting(rule: String, expected: [Int]) throws {
        #expect(try firing(rule) == expected)
    }

    @Test func seededProbabilityRepeats() throws {
        let rule = "inbound rcpt drop probability=0.5 seed=20261206"
        let first = try firing(rule)
        #expect(try firing(rule) == first)
        #expect(!first.isEmpty && first.count < 12)
        // Another seed gives another sequence (fixed: these two differ).
        #expect(try firing("inbound rcpt drop probability=0.5 seed=7") != first)
    }

    @Test func untilEndsTheRule() throws {
        var table = try table("inbound rcpt drop until=30s")
        let context = FaultContext(family: .ipv4)
        #expect(table.evaluate(side: .inbound, stage: .rcpt, context, now: 29_999) != nil)
        #expect(table.evaluate(side: .inbound, stage: .rcpt, context, now: 30_000) == nil)
    }

    @Test func firstRuleThatFiresWins() throws {
        var table = try table("inbound rcpt reply 451 4.7.1 first first=1", "inbound rcpt reply 550 5.7.1 second")
        let context = FaultContext(family: .ipv4)
        #expect(table.evaluate(side: .inbound, stage: .rcpt, context, now: 0)?.id == "F1")
        #expect(table.evaluate(side: .inbound, stage: .rcpt, context, now: 0)?.id == "F2")
    }

    @Test func greylistHoldsThenPasses() throws {
        var table = try table("inbound rcpt domain=lab.example greylist 2m")
        func ask(_ rcpt: String, client: String = "192.0.2.1", at now: Int64) -> FaultHit? {
            table.evaluate(
                side: .inbound, stage: .rcpt,
                FaultContext(family: .ipv4, client: IPAddress(client), from: "a@b.example", recipients: [rcpt]),
                now: now)
        }
        let held = ask("x@lab.example", at: 0)
        #expect(
            held?.action == .reply(FaultReply(code: 450, status: (4, 7, 1), text: "Greylisted, please try again later"))
        )
        #expect(ask("x@lab.example", at: 119_999) != nil)
        #expect(ask("x@lab.example", at: 120_000) == nil)
        #expect(ask("X@LAB.example", at: 130_000) == nil)  // the same triplet in another case
        #expect(ask("x@lab.example", client: "192.0.2.2", at: 130_000) != nil)  // a new triplet is held
        #expect(ask("y@other.example", at: 0) == nil)  // not matched
        #expect(table.greylistSize == 2)
        // Expired triplets are forgotten and held again.
        #expect(ask("x@lab.example", at: FaultTable.tripletLifetime + 1) != nil)
    }

    @Test func idsStableAcrossRemovalAndReload() throws {
        var table = FaultTable(randomSeed: 1)
        let a = try FaultRule(parsing: "inbound rcpt drop")
        let b = try FaultRule(parsing: "inbound mail drop")
        let c = try FaultRule(parsing: "inbound data drop")
        table.replaceConfigured([a, b], now: 0)
        #expect(table.entries.map(\.id) == ["F1", "F2"])
        let third = table.add(c, now: 0)
        #expect(third == "F3")
        let removed = table.remove("f2")
        #expect(removed)
        let again = table.remove("F2")
        #expect(!again)
        table.replaceConfigured([a, b], now: 0)  // b is new again; a keeps its id; F3 (run time) stays
        #expect(table.entries.map(\.id) == ["F1", "F3", "F4"])
        table.removeAll()
        #expect(table.isEmpty)
        let fifth = table.add(a, now: 0)
        #expect(fifth == "F5")
    }

    @Test(arguments: [
        ("*", "anything", true), ("a*c", "abbbc", true), ("a*c", "abbbd", false), ("*@*", "x@y", true),
        ("tempfail*@*", "tempfail2@lab.example", true), ("tempfail*@*", "ok@lab.example", false), ("", "", true),
        ("a**b", "ab", true), ("*.example", "example", false),
    ])
    func patterns(pattern: String, text: String, matches: Bool) {
        var match = FaultMatch()
        match.rcpt = pattern
        #expect(match.matches(FaultContext(family: .ipv4, recipients: [text])) == matches)
    }

    @Test func bookRejectsBadRulesWhole() {
        let book = FaultBook(randomSeed: 3)
        #expect(book.isEmpty)
        #expect(throws: FaultRuleError.self) { try book.add("inbound rcpt greylist") }
        #expect(book.isEmpty)
        #expect(book.evaluate(side: .inbound, stage: .rcpt, FaultContext(family: .ipv4)) == nil)
        #expect((try? book.add("inbound rcpt drop")) == "F1")
        #expect(book.evaluate(side: .inbound, stage: .rcpt, FaultContext(family: .ipv4))?.id == "F1")
    }
}
