import Faults
import NetAddress
import Testing

@Suite struct FaultRuleParserTests {
    @Test func paperTestOneRule() throws {
        let rule = try FaultRule(parsing: "outbound connect family=ipv6 mx=MX10.example.test. unreachable")
        #expect(rule.side == .outbound)
        #expect(rule.stage == .connect)
        #expect(rule.match.family == .ipv6)
        #expect(rule.match.mx == "mx10.example.test")
        #expect(rule.action == .unreachable)
        #expect(rule.limit == FaultLimit())
    }

    @Test func replyWithStatusTextAndLimit() throws {
        let rule = try FaultRule(parsing: "inbound rcpt rcpt=tempfail*@* reply 451 4.7.1 try later first=2")
        #expect(rule.match.rcpt == "tempfail*@*")
        guard case .reply(let reply) = rule.action else { Issue.record("not a reply"); return }
        #expect(reply.code == 451)
        #expect(reply.status.map { [$0.0, $0.1, $0.2] } == [4, 7, 1])
        #expect(reply.text == "try later")
        #expect(rule.limit.first == 2)
    }

    @Test func replyWithoutStatusOrText() throws {
        let rule = try FaultRule(parsing: "inbound connect family=ipv4 reply 421")
        guard case .reply(let reply) = rule.action else { Issue.record("not a reply"); return }
        #expect(reply.code == 421)
        #expect(reply.status == nil)
        #expect(reply.text == "Fault injected")
    }

    @Test(arguments: [
        ("inbound rcpt domain=lab.example greylist 2m", FaultAction.greylist(milliseconds: 120_000)),
        ("inbound data-end discard", .discard),
        ("inbound ehlo reset", .reset),
        ("inbound mail from=*@spam.example drop", .drop),
        ("inbound data delay 1500ms", .delay(milliseconds: 1500)),
        ("outbound connect addr=192.0.2.0/24 port=25 refuse", .refuse),
        ("outbound connect blackhole", .blackhole),
        ("outbound connect delay 2s", .delay(milliseconds: 2000)),
        ("outbound starttls tls-fail", .tlsFail),
        ("outbound banner drop", .drop),
        (
            "outbound data-end reply 554 5.6.0 no thanks",
            .reply(FaultReply(code: 554, status: (5, 6, 0), text: "no thanks"))
        ),
    ])
    func actions(text: String, expected: FaultAction) throws {
        #expect(try FaultRule(parsing: text).action == expected)
    }

    @Test func limitsAll() throws {
        let rule = try FaultRule(
            parsing: "inbound rcpt reply 450 after=1 every=2 first=5 probability=0.5 seed=42 until=10m")
        #expect(rule.limit.after == 1)
        #expect(rule.limit.every == 2)
        #expect(rule.limit.first == 5)
        #expect(rule.limit.probability == 0.5)
        #expect(rule.limit.seed == 42)
        #expect(rule.limit.untilMilliseconds == 600_000)
    }

    @Test func listenerAndClient() throws {
        let rule = try FaultRule(parsing: "inbound connect client=[::1]/128 listener=[::1]:2525 reply 421 4.7.0 busy")
        #expect(rule.match.client == CIDR("::1/128"))
        #expect(rule.match.listener?.port == 2525)
        #expect(rule.match.listener?.address == IPAddress("::1"))
        let any = try FaultRule(parsing: "inbound connect listener=*:587 drop")
        #expect(any.match.listener?.address == nil)
    }

    @Test(arguments: [
        ("", "empty fault rule"),
        ("sideways connect drop", "unknown side 'sideways' (expected inbound or outbound)"),
        ("inbound", "missing stage after 'inbound'"),
        ("inbound banner drop", "unknown inbound stage 'banner' (expected connect, ehlo, mail, rcpt, data, data-end)"),
        ("inbound rcpt", "missing action"),
        (
            "inbound rcpt bounce",
            "unknown action 'bounce' (expected reply, drop, reset, delay, greylist, discard, refuse, unreachable, blackhole or tls-fail)"
        ),
        (
            "inbound rcpt colour=red drop",
            "unknown match 'colour=' (expected addr, client, domain, family, from, listener, mx, port, rcpt)"
        ),
        ("inbound rcpt family=ipv5 drop", "bad family 'ipv5' (expected ipv4 or ipv6)"),
        ("inbound rcpt family=ipv4 family=ipv6 drop", "match 'family=' given twice"),
        ("inbound connect mx=a.example drop", "'mx=' is an outbound match (inbound rules match client=, listener=)"),
        (
            "outbound connect client=127.0.0.1 refuse",
            "'client=' is an inbound match (outbound rules match mx=, addr=, port=)"
        ),
        ("inbound connect from=a@b drop", "'from=' cannot match at inbound connect: the sender is known from mail on"),
        ("inbound mail rcpt=a@b drop", "'rcpt=' cannot match at inbound mail: recipients are known from rcpt on"),
        ("inbound connect client=300.1.1.1 drop", "bad client '300.1.1.1' (expected an address or CIDR)"),
        (
            "inbound connect listener=localhost drop",
            "bad listener 'localhost' (expected ADDR:PORT, [IPv6]:PORT or *:PORT)"
        ),
        ("outbound connect port=0 refuse", "bad port '0' (expected 1-65535)"),
        ("inbound rcpt reply", "'reply' needs a CODE (like 451)"),
        ("inbound rcpt reply 45", "bad reply code '45' (expected 200-599)"),
        ("inbound rcpt reply 451 5.7.1 x", "enhanced status '5.7.1' does not agree with reply code 451"),
        ("inbound rcpt reply 451 4.7 x", "bad enhanced status '4.7' (expected X.Y.Z with X 2, 4 or 5)"),
        ("inbound rcpt reply 250 ok", "an inbound reply needs a 4xx or 5xx code (got 250)"),
        ("inbound rcpt drop now", "'drop' takes no arguments (got 'now')"),
        ("inbound rcpt delay", "'delay' needs one DURATION (like 30s or 2m)"),
        ("inbound rcpt delay 5 parsecs", "'delay' needs one DURATION (like 30s or 2m)"),
        ("inbound rcpt greylist soon", "bad greylist duration 'soon' (expected a number with ms, s, m, h or d)"),
        ("inbound mail greylist 1m", "greylist works at the inbound rcpt stage only"),
        ("inbound rcpt discard", "discard works at the inbound data-end stage only"),
        ("inbound connect refuse", "refuse is outbound only"),
        ("outbound rcpt refuse", "refuse works at the outbound connect stage only"),
        ("outbound rcpt delay 1s", "delay works at the outbound connect stage only"),
        ("outbound ehlo tls-fail", "tls-fail works at the outbound starttls stage only"),
        (
            "outbound connect reply 421",
            "reply needs a connection: use stage banner (or refuse/unreachable/blackhole at connect)"
        ),
        ("outbound mail reset", "reset is inbound only (outbound, use drop)"),
        ("outbound rcpt greylist 1m", "greylist is inbound only"),
        ("inbound rcpt drop first=0", "bad first '0' (expected a whole number of at least 1)"),
        ("inbound rcpt drop first=1 first=2", "limit 'first=' given twice"),
        ("inbound rcpt drop probability=1.5", "bad probability '1.5' (expected a number from 0 to 1)"),
        ("inbound rcpt drop seed=7", "'seed=' only makes sense with 'probability='"),
        ("inbound rcpt drop until=later", "bad until duration 'later' (expected a number with ms, s, m, h or d)"),
        ("inbound rcpt first=2 drop", "limit 'first=2' must come after the action"),
    ])
    func refused(text: String, message: String) {
        #expect(throws: FaultRuleError(message)) { try FaultRule(parsing: text) }
    }

    @Test func textIsNormalised() throws {
        let rule = try FaultRule(parsing: "  inbound\trcpt   reply 451  4.7.1 later ")
        #expect(rule.text == "inbound rcpt reply 451 4.7.1 later")
    }
}
