import NetAddress
import SMTPProtocol
import Testing

/// Dialogues with the pure session: each string in a `groups` array is one client write (an RFC 2920 group).
@Suite struct ServerSessionTests {
    static let ehlo = "EHLO t.example\r\n"
    static let mailFrom = "MAIL FROM:<a@r.example>\r\n"
    static let rcptLocal = "RCPT TO:<u@lab.example>\r\n"

    private func run(
        _ groups: [String], _ chunking: Chunking = .whole,
        configuration: ServerSession.Configuration = Lab.configuration(),
        client: IPAddress = Lab.outsider, mayRelay: Bool = false
    ) -> Harness {
        var harness = Harness(configuration: configuration, client: client, mayRelay: mayRelay)
        harness.writes(groups, chunking)
        return harness
    }

    /// Codes after the 220 greeting.
    private func codes(_ groups: [String], _ chunking: Chunking = .whole, mayRelay: Bool = false) -> [String] {
        Array(run(groups, chunking, mayRelay: mayRelay).codes.dropFirst())
    }

    // MARK: Greeting, EHLO, HELO

    @Test func greeting() {
        let harness = Harness()
        #expect(harness.replies == ["220 mx.lab.example ESMTP dualmta"])
        #expect(harness.actions.count == 1)
    }

    @Test func preGreetingInputIsASynchronizationError() {  // P01
        var session = ServerSession(
            configuration: Lab.configuration(), clientAddress: Lab.outsider, clientMayRelay: false)
        let actions = session.start(earlyInput: true)
        #expect(Harness.replies(in: actions) == ["554 5.5.0 Error: SMTP protocol synchronization"])
        #expect(actions.last == .close)
        #expect(session.isClosed)
        #expect(session.receive(Array("EHLO x\r\n".utf8)).isEmpty)

        var buffered = ServerSession(
            configuration: Lab.configuration(), clientAddress: Lab.outsider, clientMayRelay: false)
        #expect(buffered.receive(Array("EHLO x\r\n".utf8)).isEmpty)
        let late = buffered.start(earlyInput: false)
        #expect(Harness.codeAndStatus(Harness.replies(in: late)[0]) == "554 5.5.0")
        #expect(late.last == .close)
    }

    @Test func ehloReplyAdvertisesExtensions() {
        let harness = run([Self.ehlo])
        #expect(
            harness.replies.last == """
                250-mx.lab.example Hello t.example [192.0.2.1]
                250-PIPELINING
                250-SIZE 10485760
                250-8BITMIME
                250-ENHANCEDSTATUSCODES
                250-SMTPUTF8
                250 DSN
                """)
        let v6 = run([Self.ehlo], client: IPAddress("2001:db8:a::25")!)
        #expect(v6.replies.last?.hasPrefix("250-mx.lab.example Hello t.example [IPv6:2001:db8:a::25]\n") == true)
        // R15: a mapped peer is an IPv4 peer.
        let mapped = run([Self.ehlo], client: IPAddress("::ffff:192.0.2.1")!)
        #expect(mapped.session.clientAddress == Lab.outsider)
        #expect(mapped.replies.last?.hasPrefix("250-mx.lab.example Hello t.example [192.0.2.1]\n") == true)
        let tls = run([Self.ehlo], configuration: Lab.configuration { $0.tlsAvailable = true })
        #expect(tls.replies.last?.hasSuffix("250-SMTPUTF8\n250-DSN\n250 STARTTLS") == true)
        #expect(!harnessAdvertises(harness, "AUTH") && !harnessAdvertises(harness, "CHUNKING"))
    }

    private func harnessAdvertises(_ harness: Harness, _ keyword: String) -> Bool {
        harness.replies.last?.split(separator: "\n").contains { $0.dropFirst(4).hasPrefix(keyword) } ?? false
    }

    @Test func heloReply() {
        #expect(run(["HELO t.example\r\n"]).replies.last == "250 mx.lab.example")
        #expect(run(["helo [192.0.2.1]\r\n"]).replies.last == "250 mx.lab.example")
    }

    /// A18: only valid names or literals are accepted, and a refused one is never stored.
    @Test(arguments: [
        "EHLO x)", "EHLO a;b", "EHLO " + String(repeating: "a", count: 300), "EHLO", "EHLO ",
        "HELO", "EHLO a b", "EHLO ../../tmp", "EHLO [2001:db8::1]", "EHLO a.b.",
    ])
    func invalidHelloArguments(line: String) {
        let harness = run([line + "\r\n", Self.mailFrom])
        #expect(Array(harness.codes.dropFirst()) == ["501 5.5.4", "503 5.5.1"])
        #expect(harness.session.helo == nil)
    }

    @Test(arguments: [
        "EHLO [IPv6:2001:db8::25]", "EHLO [192.0.2.25]", "EHLO mx1.site-a.example", "EHLO X", "EHLO 192.0.2.1",
    ])
    func validHelloArguments(line: String) {
        #expect(codes([line + "\r\n", Self.mailFrom]) == ["250", "250 2.1.0"])
    }

    // MARK: Command order (RFC 5321 §4.1.4, A17, P10)

    @Test(arguments: [
        ([mailFrom], ["503 5.5.1"]),
        (["NOOP\r\n", "RSET\r\n", "HELP\r\n", "VRFY x\r\n"], ["250 2.0.0", "250 2.0.0", "214 2.0.0", "252 2.5.2"]),
        ([ehlo, mailFrom, ehlo, rcptLocal], ["250", "250 2.1.0", "250", "503 5.5.1"]),
        ([ehlo, mailFrom, "HELO t.example\r\n", rcptLocal], ["250", "250 2.1.0", "250", "503 5.5.1"]),
        ([ehlo, mailFrom, mailFrom], ["250", "250 2.1.0", "503 5.5.1"]),  // A17
        ([ehlo, rcptLocal], ["250", "503 5.5.1"]),  // A17
        ([ehlo, "DATA\r\n"], ["250", "503 5.5.1"]),
        ([ehlo, mailFrom, "DATA\r\n", "NOOP\r\n"], ["250", "250 2.1.0", "503 5.5.1", "250 2.0.0"]),  // P10
        (
            [ehlo, mailFrom, "RCPT TO:<v@remote.example>\r\n", "DATA\r\n"],
            ["250", "250 2.1.0", "554 5.7.1", "503 5.5.1"]
        ),
        (
            [ehlo, mailFrom, rcptLocal, "RSET\r\n", "DATA\r\n"],
            ["250", "250 2.1.0", "250 2.1.5", "250 2.0.0", "503 5.5.1"]
        ),
        (
            [ehlo, mailFrom, rcptLocal, "EHLO x)\r\n", "DATA\r\n"],
            ["250", "250 2.1.0", "250 2.1.5", "501 5.5.4", "354"]
        ),
        ([ehlo, "MAIL FROM:<>\r\n", "RCPT TO:<Postmaster>\r\n"], ["250", "250 2.1.0", "250 2.1.5"]),
        (
            [ehlo, "RSET\r\n" + mailFrom + rcptLocal + "RSET\r\n" + mailFrom + rcptLocal + "DATA\r\n"],
            ["250", "250 2.0.0", "250 2.1.0", "250 2.1.5", "250 2.0.0", "250 2.1.0", "250 2.1.5", "354"]
        ),  // P02
    ])
    func commandOrder(groups: [String], expected: [String]) {
        for chunking in Chunking.all {
            #expect(codes(groups, chunking) == expected, "\(chunking)")
        }
    }

    @Test func dataWithoutRecipientsSendsNo354() {  // P10
        let harness = run([Self.ehlo, Self.mailFrom, "DATA\r\n"])
        #expect(!harness.replies.contains { $0.hasPrefix("354") })
        #expect(!harness.actions.contains { if case .beginMessage = $0 { true } else { false } })
    }

    // MARK: Individual commands

    @Test(arguments: [
        ("EXPN staff", "502 5.5.1"), ("AUTH PLAIN AGFhAGI=", "502 5.5.1"), ("BDAT 10 LAST", "502 5.5.1"),
        ("FOO", "500 5.5.2"), ("", "500 5.5.2"), ("STARTTLS", "454 4.7.0"), ("STARTTLS x", "501 5.5.4"),  // P09
        ("noop", "250 2.0.0"), ("NOOP anything", "250 2.0.0"), ("VRFY", "501 5.5.4"), ("vrfy alice", "252 2.5.2"),
        ("HELP", "214 2.0.0"), ("RSET x", "501 5.5.4"), ("DATA x", "501 5.5.4"), ("ehlo", "501 5.5.4"),
        ("QUIT", "221 2.0.0"), ("QUITX", "500 5.5.2"), ("NO OP", "500 5.5.2"),
        // Verbs are ASCII: Unicode case mapping would read dotless i as I and long s as S.
        ("ma\u{0131}l from:<a@example.test>", "500 5.5.2"), ("\u{017F}tarttls", "500 5.5.2"),
    ])
    func singleCommands(line: String, expected: String) {
        #expect(codes([Self.ehlo, line + "\r\n"]) == ["250", expected])
    }

    @Test func quitClosesWithBye() {
        let harness = run(["QUIT\r\n"])
        #expect(harness.replies.last == "221 2.0.0 Bye")
        #expect(harness.closed)
        var session = harness.session
        #expect(session.receive(Array("NOOP\r\n".utf8)).isEmpty)
    }

    @Test(arguments: ["GET / HTTP/1.1\r\nHost: x\r\n\r\n", "POST /x HTTP/1.1\r\n", "CONNECT a:25 HTTP/1.1\r\n\r\n"])
    func crossProtocolFirstCommand(request: String) {
        let harness = run([request])
        #expect(Array(harness.codes.dropFirst()) == ["554 5.5.0"])
        #expect(harness.closed)
    }

    @Test func httpVerbLaterIsJustUnknown() {
        #expect(codes(["NOOP\r\n", "GET / HTTP/1.1\r\n"]) == ["250 2.0.0", "500 5.5.2"])
    }

    // MARK: MAIL FROM (A01–A04, A12–A16, B06)

    @Test(arguments: [
        ("MAIL FROM:a@r.example", "501 5.5.4"),  // A01
        ("MAIL FROM: <a@r.example>", "250 2.1.0"),  // A02
        ("MAIL FROM:  <a@r.example>", "250 2.1.0"),
        ("MAIL FROM:<>", "250 2.1.0"),  // A03
        ("MAIL FROM:<@a.example,@b.example:u@c.example>", "250 2.1.0"),  // A04
        ("MAIL FROM:<@[192.0.2.9]:u@c.example>", "250 2.1.0"),
        ("MAIL FROM:<@a.example;u@c.example>", "501 5.1.7"),
        ("mail from:<a@r.example>", "250 2.1.0"),
        ("MAIL FROM:<\"john smith\"@r.example>", "250 2.1.0"),
        ("MAIL FROM:<\"a>b\"@r.example>", "250 2.1.0"),
        ("MAIL FROM:<j\u{f6}rg@r.example>", "553 5.6.7"),  // A12
        ("MAIL FROM:<j\u{f6}rg@r.example> SMTPUTF8", "250 2.1.0"),  // A13
        ("MAIL FROM:<a@b\u{fc}cher.example> SMTPUTF8 BODY=8BITMIME", "250 2.1.0"),
        ("MAIL FROM:<a@r.example> SIZE=abc", "501 5.5.4"),  // A15
        ("MAIL FROM:<a@r.example> SIZE=18446744073709551616", "501 5.5.4"),
        ("MAIL FROM:<a@r.example> SIZE=99999999999", "552 5.3.4"),
        ("MAIL FROM:<a@r.example> SIZE=10485760", "250 2.1.0"),
        ("MAIL FROM:<a@r.example> SIZE=10485761", "552 5.3.4"),
        ("MAIL FROM:<a@r.example> SIZE=+5", "501 5.5.4"),
        ("MAIL FROM:<a@r.example> SIZE=", "501 5.5.4"),
        ("MAIL FROM:<a@r.example> SIZE", "501 5.5.4"),
        ("MAIL FROM:<a@r.example> FOO=BAR", "555 5.5.4"),  // A16
        ("MAIL FROM:<a@r.example> RET=HDRS ENVID=abc+2Bd", "250 2.1.0"),  // RFC 3461
        ("MAIL FROM:<a@r.example> ret=full", "250 2.1.0"),
        ("MAIL FROM:<a@r.example> RET=BODY", "501 5.5.4"),
        ("MAIL FROM:<a@r.example> RET", "501 5.5.4"),
        ("MAIL FROM:<a@r.example> RET=FULL RET=HDRS", "501 5.5.4"),
        ("MAIL FROM:<a@r.example> ENVID=", "501 5.5.4"),
        ("MAIL FROM:<a@r.example> ENVID=a+2", "501 5.5.4"),
        ("MAIL FROM:<a@r.example> ENVID=" + String(repeating: "x", count: 101), "501 5.5.4"),
        ("MAIL FROM:<a@r.example> ENVID=" + String(repeating: "x", count: 100), "250 2.1.0"),
        ("MAIL FROM:<a@r.example> BODY=BINARYMIME", "555 5.5.4"),
        ("MAIL FROM:<a@r.example> BODY", "555 5.5.4"),
        ("MAIL FROM:<a@r.example> BODY=8BITMIME", "250 2.1.0"),
        ("MAIL FROM:<a@r.example> body=7bit", "250 2.1.0"),
        ("MAIL FROM:<a@r.example> SIZE=1 SIZE=2", "501 5.5.4"),
        ("MAIL FROM:<a@r.example> BODY=7BIT body=8BITMIME", "501 5.5.4"),
        ("MAIL FROM:<a@r.example> SMTPUTF8=yes", "501 5.5.4"),
        ("MAIL FROM:<a@r.example>  SIZE=10 ", "250 2.1.0"),
        ("MAIL FROM:<a\u{0}b@x.example>", "501 5.1.7"),  // B06
        ("MAIL FROM:<a\u{1}b@x.example>", "501 5.1.7"),
        ("MAIL FROM:<a@r.example.>", "501 5.1.7"),
        ("MAIL FROM:<a@[300.1.1.1]>", "501 5.1.7"),
        ("MAIL FROM:<a@[IPv6:2001:db8::1]>", "250 2.1.0"),
        ("MAIL FROM:<a@r.example", "501 5.1.7"),
        ("MAIL FROM:<a@r.example>x", "501 5.5.4"),
        ("MAIL TO:<a@r.example>", "501 5.5.4"),
        ("MAIL FROM:", "501 5.5.4"),
        ("MAIL", "501 5.5.4"),
        ("MAIL FROM:<Postmaster>", "501 5.1.7"),
        ("MAIL FROM:<a@b@r.example>", "501 5.1.7"),
        ("MAIL FROM:<" + String(repeating: "a", count: 65) + "@r.example>", "501 5.1.7"),
        ("MAIL FROM:<../../x@r.example>", "501 5.1.7"),  // T02: refused by syntax
    ])
    func mailFromSyntax(line: String, expected: String) {
        #expect(codes([Self.ehlo, line + "\r\n"]) == ["250", expected])
    }

    @Test func invalidUTF8IsRefused() {  // A14
        var harness = Harness()
        harness.write(Self.ehlo)
        harness.write(Array("MAIL FROM:<".utf8) + [0xFF] + Array("@r.example>\r\n".utf8))
        harness.write([0xC3, 0x28, 13, 10])
        #expect(Array(harness.codes.dropFirst()) == ["250", "500 5.5.2", "500 5.5.2"])
        #expect(!harness.session.isClosed)
    }

    @Test func mailParametersNeedEHLO() {
        #expect(codes(["HELO t.example\r\n", "MAIL FROM:<a@r.example> SIZE=10\r\n"]) == ["250", "555 5.5.4"])
    }

    @Test func insufficientStorage() {
        var harness = Harness()
        harness.session.storageAvailable = false
        harness.writes([Self.ehlo, Self.mailFrom])
        #expect(harness.replies.last == "452 4.3.1 Insufficient system storage")
        harness.session.storageAvailable = true
        harness.write(Self.mailFrom)
        #expect(harness.codes.last == "250 2.1.0")
    }

    // MARK: RCPT TO (A05–A11, R01–R13, T01), client 192.0.2.1 not allowed to relay

    static let longDomain =
        [String](repeating: String(repeating: "d", count: 63), count: 3).joined(separator: ".") + ".example"

    @Test(arguments: [
        ("RCPT TO:<u@lab.example>", "250 2.1.5"),
        ("rcpt to: <u@LAB.example>", "250 2.1.5"),
        ("RCPT TO:<\"john smith\"@lab.example>", "250 2.1.5"),  // A05
        ("RCPT TO:<\"a\\\"b\"@lab.example>", "250 2.1.5"),  // A06
        ("RCPT TO:<\"abc@lab.example>", "501 5.1.3"),  // A06
        ("RCPT TO:<postmaster@[IPv6:2001:db8:99::2]>", "250 2.1.5"),  // A07
        ("RCPT TO:<postmaster@[192.0.2.2]>", "250 2.1.5"),  // A07
        ("RCPT TO:<u@[IPv6:2001:db8::g]>", "501 5.1.3"),  // A08
        ("RCPT TO:<u@[2001:db8::1]>", "501 5.1.3"),
        ("RCPT TO:<u@[300.1.1.1]>", "501 5.1.3"),
        ("RCPT TO:<u@[IPv6:1::2::3]>", "501 5.1.3"),
        ("RCPT TO:<Postmaster>", "250 2.1.5"),  // A09
        ("RCPT TO:<POSTMASTER>", "250 2.1.5"),
        ("RCPT TO:<pOstmaster>", "250 2.1.5"),
        ("RCPT TO:<" + String(repeating: "a", count: 64) + "@lab.example>", "250 2.1.5"),  // A10
        ("RCPT TO:<" + String(repeating: "a", count: 65) + "@lab.example>", "501 5.1.3"),
        ("RCPT TO:<u@" + longDomain + ">", "554 5.7.1"),  // A11: syntax ok, then the relay rule
        ("RCPT TO:<u@" + String(repeating: "d", count: 64) + ".example>", "501 5.1.3"),  // A11: 64-octet label
        (
            "RCPT TO:<u@" + [String](repeating: String(repeating: "d", count: 63), count: 4).joined(separator: ".")
                + "x>", "501 5.1.3"
        ),  // A11: 256-octet domain
        ("RCPT TO:<victim@remote.example>", "554 5.7.1"),  // R01
        ("RCPT TO:<victim%remote.example@lab.example>", "550 5.1.1"),  // R02
        ("RCPT TO:<victim%remote.example@[192.0.2.2]>", "550 5.1.1"),  // R03
        ("RCPT TO:<\"victim@remote.example\">", "501 5.1.3"),  // R04
        ("RCPT TO:<\"victim@remote.example\"@lab.example>", "550 5.1.1"),  // R05
        ("RCPT TO:<victim@remote.example@lab.example>", "501 5.1.3"),  // R06
        ("RCPT TO:<@lab.example:victim@remote.example>", "554 5.7.1"),  // R07
        ("RCPT TO:<@[192.0.2.2]:victim@remote.example>", "554 5.7.1"),  // R07
        ("RCPT TO:<remote.example!victim>", "501 5.1.3"),  // R08
        ("RCPT TO:<remote.example!victim@lab.example>", "550 5.1.1"),  // R08
        ("RCPT TO:<victim@[192.0.2.1]>", "554 5.7.1"),  // R09
        ("RCPT TO:<victim@[IPv6:2001:db8::1]>", "554 5.7.1"),  // R09
        ("RCPT TO:<victim@remote.example.>", "501 5.1.3"),  // R10
        ("RCPT TO:<victim@REMOTE.EXAMPLE>", "554 5.7.1"),  // R10
        ("RCPT TO:<victim@localhost>", "554 5.7.1"),  // R11
        ("RCPT TO:<v@lab.example.remote.example>", "554 5.7.1"),  // R12
        ("RCPT TO:<v@xlab.example>", "554 5.7.1"),  // R12
        ("RCPT TO:<../../../etc/x@lab.example>", "501 5.1.3"),  // T01
        ("RCPT TO:<\"../../x\"@lab.example>", "550 5.1.1"),  // T01
        ("RCPT TO:<\"a/b\"@lab.example>", "550 5.1.1"),  // T01
        ("RCPT TO:<\"..\"@lab.example>", "550 5.1.1"),  // T01
        ("RCPT TO:<\".\"@lab.example>", "550 5.1.1"),  // T01
        ("RCPT TO:<\"x\u{1}\"@lab.example>", "501 5.1.3"),  // T01
        ("RCPT TO:<u@lab.example> NOTIFY=NEVER", "250 2.1.5"),
        ("RCPT TO:<u@lab.example> NOTIFY=success,DELAY ORCPT=rfc822;u+2Bx@lab.example", "250 2.1.5"),
        ("RCPT TO:<u@lab.example> NOTIFY=NEVER,SUCCESS", "501 5.5.4"),  // NEVER stands alone
        ("RCPT TO:<u@lab.example> NOTIFY=", "501 5.5.4"),
        ("RCPT TO:<u@lab.example> NOTIFY=SUCCESS,SUCCESS", "501 5.5.4"),
        ("RCPT TO:<u@lab.example> NOTIFY=SOMETIMES", "501 5.5.4"),
        ("RCPT TO:<u@lab.example> NOTIFY=NEVER NOTIFY=NEVER", "501 5.5.4"),  // repeated
        ("RCPT TO:<u@lab.example> ORCPT=u@lab.example", "501 5.5.4"),  // no addr-type
        ("RCPT TO:<u@lab.example> ORCPT=rfc822;u+0Ax@lab.example", "501 5.5.4"),  // decodes to a control char
        ("RCPT TO:<u@lab.example> ORCPT=rfc822;u+zz@lab.example", "501 5.5.4"),  // bad hex
        ("RCPT TO:<u@lab.example> XFOO=1", "555 5.5.4"),  // unknown
        ("RCPT TO:<>", "501 5.1.3"),
        ("RCPT TO:u@lab.example", "501 5.5.4"),
        ("RCPT FROM:<u@lab.example>", "501 5.5.4"),
        ("RCPT TO:<j\u{f6}rg@lab.example>", "553 5.6.7"),
        ("RCPT TO:<u\u{0}@lab.example>", "501 5.1.3"),
        ("RCPT TO:<any@relay.example>", "250 2.1.5"),
    ])
    func rcptToSyntaxAndPolicy(line: String, expected: String) {
        for chunking in [Chunking.whole, .bytes] {
            #expect(codes([Self.ehlo, Self.mailFrom, line + "\r\n"], chunking) == ["250", "250 2.1.0", expected])
        }
    }

    @Test func relayDeniedReplyText() {
        let harness = run([Self.ehlo, Self.mailFrom, "RCPT TO:<victim@remote.example>\r\n"])
        #expect(harness.replies.last == "554 5.7.1 <victim@remote.example>: Relay access denied")
        #expect(harness.logs.contains { $0.contains("victim@remote.example") })
    }

    @Test(arguments: ["MAIL FROM:<postmaster@lab.example>\r\n", "MAIL FROM:<>\r\n", "MAIL FROM:<u@lab.example>\r\n"])
    func senderNeverGrantsRelay(mail: String) {  // R13
        #expect(codes([Self.ehlo, mail, "RCPT TO:<victim@remote.example>\r\n"]) == ["250", "250 2.1.0", "554 5.7.1"])
    }

    @Test(arguments: ["127.0.0.1", "::1"])
    func trustedClientsRelay(address: String) {  // R14
        let harness = run(
            [Self.ehlo, Self.mailFrom, "RCPT TO:<victim@remote.example>\r\n"],
            client: IPAddress(address)!, mayRelay: true)
        #expect(Array(harness.codes.dropFirst()) == ["250", "250 2.1.0", "250 2.1.5"])
    }

    @Test func utf8RecipientWithSMTPUTF8() {
        #expect(
            codes([Self.ehlo, "MAIL FROM:<a@r.example> SMTPUTF8\r\n", "RCPT TO:<j\u{f6}rg@lab.example>\r\n"])
                == ["250", "250 2.1.0", "250 2.1.5"])
    }

    @Test func recipientLimit() {  // L01
        let rcpts = (1...115).map { "RCPT TO:<u\($0)@lab.example>\r\n" }.joined()
        let harness = run([Self.ehlo, Self.mailFrom + rcpts + "DATA\r\n", "x\r\n.\r\n"])
        let codes = Array(harness.codes.dropFirst(3))
        #expect(codes.prefix(100).allSatisfy { $0 == "250 2.1.5" })
        #expect(codes.dropFirst(100).prefix(15).allSatisfy { $0 == "452 4.5.3" })
        #expect(codes.suffix(2) == ["354", "250 2.0.0"])
        #expect(harness.replies.contains("452 4.5.3 Error: too many recipients"))
        #expect(harness.committed.first?.recipients.count == 100)
        #expect(!harness.session.isClosed)

        let limit101 = run([Self.ehlo, Self.mailFrom + (1...101).map { "RCPT TO:<u\($0)@lab.example>\r\n" }.joined()])
        #expect(limit101.codes.filter { $0 == "250 2.1.5" }.count == 100)
        #expect(limit101.codes.last == "452 4.5.3")
    }

    /// Every 452 past the limit counts toward the error limit: a client repeating RCPT forever is cut off.
    @Test func recipientsPastTheLimitEndTheSession() {
        let rcpts = (1...300).map { "RCPT TO:<u\($0)@lab.example>\r\n" }.joined()
        let harness = run([Self.ehlo, Self.mailFrom + rcpts])
        let codes = Array(harness.codes.dropFirst(3))
        #expect(codes.prefix(100).allSatisfy { $0 == "250 2.1.5" })
        #expect(Array(codes.dropFirst(100).dropLast()) == Array(repeating: "452 4.5.3", count: 20))
        #expect(codes.last == "421 4.7.0")
        #expect(harness.session.isClosed)
    }

    // MARK: Command line framing (B01–B09, H01)

    @Test func lineLengthLimit() {  // B01, B02
        let b01 = "NOOP " + String(repeating: "a", count: 505) + "\r\n"
        let b02 = "NOOP " + String(repeating: "a", count: 506) + "\r\n"
        #expect(b01.utf8.count == 512 && b02.utf8.count == 513)
        for chunking in Chunking.all {
            #expect(codes([b01], chunking) == ["250 2.0.0"], "\(chunking)")
            let harness = run([b02, "NOOP\r\n"], chunking)
            #expect(Array(harness.codes.dropFirst()) == ["500 5.5.2", "250 2.0.0"], "\(chunking)")
            #expect(harness.replies[1] == "500 5.5.2 Error: command line too long")
        }
    }

    @Test func hugeLineWithoutCRLFCloses() {  // B03
        for chunking in [Chunking.whole, .random(seed: 7)] {
            var harness = Harness()
            harness.write([UInt8](repeating: UInt8(ascii: "A"), count: 1 << 20), chunking)
            #expect(Array(harness.codes.dropFirst()) == ["500 5.5.2"], "\(chunking)")
            #expect(harness.closed)
        }
        // Below the cap the session keeps waiting, without holding the bytes.
        var waiting = Harness()
        waiting.write([UInt8](repeating: UInt8(ascii: "A"), count: 60_000))
        #expect(waiting.replies.count == 1 && !waiting.session.isClosed)
        waiting.write("\r\nNOOP\r\n")
        #expect(Array(waiting.codes.dropFirst()) == ["500 5.5.2", "250 2.0.0"])
    }

    @Test func tooManyErrors() {  // B04
        let b02 = "NOOP " + String(repeating: "a", count: 506) + "\r\n"
        for chunking in [Chunking.whole, .bytes, .random(seed: 3)] {
            let harness = run([String(repeating: b02, count: 21)], chunking)
            let codes = Array(harness.codes.dropFirst())
            #expect(codes.count == 21, "\(chunking)")
            #expect(codes.prefix(20).allSatisfy { $0 == "500 5.5.2" })
            #expect(harness.replies.last == "421 4.7.0 mx.lab.example Error: too many errors")
            #expect(harness.closed)
        }
        // Exactly maxErrors errors: the session is still open until the next command.
        let twenty = run([String(repeating: "BAD\r\n", count: 20)])
        #expect(!twenty.session.isClosed)
    }

    @Test func errorLimitCountsRejections() {
        let configuration = Lab.configuration { $0.maxErrors = 3 }
        let harness = run(
            [
                Self.ehlo, Self.mailFrom, "RCPT TO:<a@remote.example>\r\n", "RCPT TO:<b@remote.example>\r\n",
                "RCPT TO:<c@remote.example>\r\n", Self.rcptLocal,
            ], configuration: configuration)
        #expect(
            Array(harness.codes.dropFirst()) == [
                "250", "250 2.1.0", "554 5.7.1", "554 5.7.1", "554 5.7.1", "421 4.7.0",
            ])
        #expect(harness.closed)
    }

    @Test func junkCommandLimit() {
        let configuration = Lab.configuration { $0.maxJunkCommands = 3 }
        let harness = run(["NOOP\r\n", "RSET\r\n", "VRFY a\r\n", "HELP\r\n"], configuration: configuration)
        #expect(Array(harness.codes.dropFirst()) == ["250 2.0.0", "250 2.0.0", "252 2.5.2", "421 4.7.0"])
        #expect(harness.closed)
        // The default allows 100.
        let hundred = run(Array(repeating: "NOOP\r\n", count: 101))
        #expect(hundred.codes.filter { $0 == "250 2.0.0" }.count == 100)
        #expect(hundred.codes.last == "421 4.7.0")
    }

    @Test(arguments: [
        ("NO\u{0}OP\r\n", "500 5.5.2", false),  // B05
        ("NOOP \u{0}\r\n", "500 5.5.2", false),
        ("EHLO x\n", "554 5.5.2", true),  // B07
        ("EHLO x\rMAIL FROM:<a@b.example>\r\n", "554 5.5.2", true),  // B08
        ("NOOP\r\r\n", "554 5.5.2", true),  // B09
        ("EHLO a\rX-Injected: 1\r\n", "554 5.5.2", true),  // H01
        ("NOOP\n\r\n", "554 5.5.2", true),
        ("\n", "554 5.5.2", true),
        ("\rNOOP\r\n", "554 5.5.2", true),
    ])
    func controlCharactersInCommands(input: String, expected: String, closes: Bool) {
        for chunking in Chunking.all {
            let harness = run([input], chunking)
            #expect(Array(harness.codes.dropFirst()) == [expected], "\(chunking)")
            #expect(harness.session.isClosed == closes)
            #expect(harness.session.helo == nil)  // B08, H01: nothing from the line is used
        }
    }

    @Test func bareLineEndingText() {
        let harness = run(["NOOP\n"])
        #expect(harness.replies.last == "554 5.5.2 Error: bare <CR> or <LF> received")
        #expect(harness.logs.count == 1)
    }

    // MARK: RFC 2920 synchronisation (P02–P05)

    @Test(arguments: [
        [ehlo + "NOOP\r\n"],  // P05
        ["EHLO a\r\nNOOP\r\n"],
        ["HELO t.example\r\nMAIL FROM:<a@r.example>\r\n"],
        ["NOOP\r\nNOOP\r\n"],
        ["VRFY x\r\nNOOP\r\n"],
        ["QUIT\r\nNOOP\r\n"],
        // P03
        [ehlo, "MAIL FROM:<a@r.example>\r\nRCPT TO:<u@lab.example>\r\nDATA\r\nSubject: x\r\n\r\nbody\r\n.\r\n"],
        [ehlo, mailFrom, rcptLocal, "DATA\r\nx"],
        // A HELO session may not pipeline at all.
        ["HELO t.example\r\n", "MAIL FROM:<a@r.example>\r\nRCPT TO:<u@lab.example>\r\n"],
        ["HELO t.example\r\n", "RSET\r\nNOOP\r\n"],
    ])
    func synchronizationErrors(groups: [String]) {
        let harness = run(groups)
        #expect(harness.replies.last == "554 5.5.0 Error: SMTP protocol synchronization")
        #expect(harness.closed)
        #expect(harness.commits == 0)
        #expect(!harness.replies.contains { $0.hasPrefix("354") })
        #expect(!harness.actions.contains { if case .beginMessage = $0 { true } else { false } })
    }

    @Test func pipelinedGroupGetsAllReplies() {  // P02, P03
        let p02 = run([Self.ehlo, "MAIL FROM:<a@r.example>\r\nRCPT TO:<u@lab.example>\r\nDATA\r\n"])
        #expect(Array(p02.codes.dropFirst()) == ["250", "250 2.1.0", "250 2.1.5", "354"])
        // All replies of one receive() go out in one write.
        #expect(p02.actions.filter { if case .send = $0 { true } else { false } }.count == 3)
        let p03 = run([
            Self.ehlo, "MAIL FROM:<a@r.example>\r\nRCPT TO:<u@lab.example>\r\nDATA\r\nSubject: x\r\n\r\nbody\r\n.\r\n",
        ])
        #expect(Array(p03.codes.dropFirst()) == ["250", "250 2.1.0", "250 2.1.5", "554 5.5.0"])
    }

    @Test func bytesAfterEndOfDataAreLegal() {  // P04
        for chunking in Chunking.all {
            let harness = run(
                [Self.ehlo, Self.mailFrom + Self.rcptLocal + "DATA\r\n", "Subject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n"],
                chunking)
            #expect(
                Array(harness.codes.dropFirst()) == ["250", "250 2.1.0", "250 2.1.5", "354", "250 2.0.0", "221 2.0.0"])
            #expect(harness.closed)
            #expect(harness.commits == 1)
        }
    }

    @Test func secondMessagePipelinedAfterEndOfData() {
        let harness = run([
            Self.ehlo, Self.mailFrom + Self.rcptLocal + "DATA\r\n",
            "one\r\n.\r\nMAIL FROM:<b@r.example>\r\nRCPT TO:<v@lab.example>\r\nDATA\r\n", "two\r\n.\r\n", "QUIT\r\n",
        ])
        #expect(
            Array(harness.codes.dropFirst()) == [
                "250", "250 2.1.0", "250 2.1.5", "354", "250 2.0.0", "250 2.1.0", "250 2.1.5", "354", "250 2.0.0",
                "221 2.0.0",
            ])
        #expect(harness.bodies == [Array("one\r\n".utf8), Array("two\r\n".utf8)])
        #expect(harness.replies[5] == "250 2.0.0 Ok: queued as Q1")
        #expect(harness.replies[9] == "250 2.0.0 Ok: queued as Q2")
    }

    // MARK: Commit hand-off

    private func sessionAwaitingCommit() -> (ServerSession, [ServerAction]) {
        var session = ServerSession(
            configuration: Lab.configuration(), clientAddress: Lab.outsider, clientMayRelay: false)
        var actions = session.start(earlyInput: false)
        for group in [Self.ehlo, Self.mailFrom + Self.rcptLocal + "DATA\r\n", "body\r\n.\r\n"] {
            actions += session.receive(Array(group.utf8))
        }
        return (session, actions)
    }

    @Test func inputWhileCommittingIsBuffered() {
        var (session, actions) = sessionAwaitingCommit()
        #expect(session.awaitingCommit)
        guard case .commitMessage(let transaction)? = actions.last else {
            Issue.record("expected commitMessage last, got \(actions)")
            return
        }
        #expect(transaction.recipients.count == 1)
        // Separate writes while the driver commits: not a synchronization error.
        #expect(session.receive(Array("NOOP\r\n".utf8)).isEmpty)
        #expect(session.receive(Array("MAIL FROM:<x@r.example>\r\n".utf8)).isEmpty)
        let after = session.commitSucceeded(queueID: "ABC123")
        #expect(Harness.replies(in: after) == ["250 2.0.0 Ok: queued as ABC123", "250 2.0.0 Ok", "250 2.1.0 Ok"])
        #expect(after.count == 1)  // one coalesced send
        #expect(!session.awaitingCommit && !session.isClosed)
        #expect(session.commitSucceeded(queueID: "again").isEmpty)
    }

    @Test func pipelinedViolationWhileCommittingIsStillCaught() {
        var (session, _) = sessionAwaitingCommit()
        #expect(session.receive(Array("NOOP\r\nNOOP\r\n".utf8)).isEmpty)
        let after = session.commitSucceeded(queueID: "Q")
        #expect(Harness.replies(in: after).map(Harness.codeAndStatus) == ["250 2.0.0", "554 5.5.0"])
        #expect(after.last == .close)
    }

    @Test func floodWhileCommittingIsCapped() {
        var (session, _) = sessionAwaitingCommit()
        let line = Array("NOOP\r\n".utf8)
        for _ in 0..<50_000 { #expect(session.receive(line).isEmpty) }  // 300 000 octets, separate writes
        let after = session.commitSucceeded(queueID: "Q")
        #expect(Harness.replies(in: after).map(Harness.codeAndStatus) == ["250 2.0.0", "554 5.5.0"])
        #expect(after.last == .close)
    }

    @Test func commitFailureContinuesTheSession() {
        var (session, _) = sessionAwaitingCommit()
        let failed = session.commitFailed(Reply(451, EnhancedStatus(4, 3, 0), "Error: queue file write error"))
        #expect(Harness.replies(in: failed) == ["451 4.3.0 Error: queue file write error"])
        let next = session.receive(Array(Self.rcptLocal.utf8))
        #expect(Harness.replies(in: next).map(Harness.codeAndStatus) == ["503 5.5.1"])
    }

    @Test func committedTransaction() {
        let harness = run([
            "EHLO Client.Example\r\n",
            "MAIL FROM:<@x.example:Alice@R.Example> SIZE=20 BODY=8BITMIME\r\nRCPT TO:<Bob@Lab.Example>\r\n"
                + "RCPT TO:<Postmaster>\r\nRCPT TO:<v@relay.example>\r\nDATA\r\n",
            "hi\r\n.\r\n",
        ])
        let mailbox = Mailbox(parsing: "Alice@r.example", allowUTF8: false)!
        let expected = Transaction(
            reversePath: .mailbox(mailbox),
            recipients: [
                AcceptedRecipient(
                    path: .mailbox(Mailbox(parsing: "Bob@lab.example", allowUTF8: false)!),
                    disposition: .local(domain: "lab.example", user: "bob")),
                AcceptedRecipient(path: .postmaster, disposition: .local(domain: "mx.lab.example", user: "postmaster")),
                AcceptedRecipient(
                    path: .mailbox(Mailbox(parsing: "v@relay.example", allowUTF8: false)!),
                    disposition: .relay),
            ],
            bodyType: .eightBitMIME, smtpUTF8: false, declaredSize: 20, heloName: "Client.Example",
            protocolName: "ESMTP")
        #expect(harness.committed == [expected])
        #expect(harness.actions.contains(.beginMessage(expected)))
    }

    @Test func dsnParametersAreDecodedIntoTheTransaction() {
        let harness = run([
            Self.ehlo, "MAIL FROM:<a@r.example> RET=HDRS ENVID=abc+2Bd+20e\r\n",
            "RCPT TO:<bob@lab.example> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;Bob+2Bx@lab.example\r\n",
            "RCPT TO:<v@relay.example> NOTIFY=never\r\n", Self.rcptLocal, "DATA\r\n", "hi\r\n.\r\n",
        ])
        let committed = harness.committed.first
        #expect(committed?.dsnReturn == .headers)
        #expect(committed?.envelopeID == "abc+d e")
        #expect(committed?.recipients.map(\.notify) == [DSNNotify(success: true, delay: true), .never, nil])
        #expect(committed?.recipients.map(\.originalRecipient) == ["rfc822;Bob+x@lab.example", nil, nil])
    }

    @Test func xtextRoundTrips() {
        for text in ["abc", "a+b=c d", "j\u{f6}rg@x", "+++", ""] {
            #expect(XText.decode(Substring(XText.encode(text))) == (text.isEmpty ? "" : text))
        }
        #expect(XText.encode("a+b=c d") == "a+2Bb+3Dc+20d")
        #expect(XText.decode("a+2bb") == "a+b")  // lower-case hex accepted
        #expect(XText.decode("a=b") == nil && XText.decode("a b") == nil && XText.decode("a+0D") == nil)
    }

    @Test func protocolNames() {
        let helo = run(["HELO t.example\r\n", Self.mailFrom, Self.rcptLocal, "DATA\r\n", ".\r\n"])
        #expect(helo.committed.first?.protocolName == "SMTP")
        let utf8 = run([Self.ehlo, "MAIL FROM:<a@r.example> SMTPUTF8\r\n" + Self.rcptLocal + "DATA\r\n", ".\r\n"])
        #expect(utf8.committed.first?.protocolName == "UTF8SMTP")
        #expect(utf8.committed.first?.smtpUTF8 == true)
    }

    // MARK: Unsolicited closes

    @Test func timeoutAndShutdown() {
        var idle = run([Self.ehlo])
        let timeout = idle.session.timedOut()
        #expect(Harness.replies(in: timeout) == ["421 4.4.2 mx.lab.example Error: timeout exceeded"])
        #expect(timeout.last == .close && idle.session.isClosed)
        #expect(idle.session.timedOut().isEmpty)

        var inData = run([Self.ehlo, Self.mailFrom + Self.rcptLocal + "DATA\r\n", "partial"])
        let shutdown = inData.session.shuttingDown()
        #expect(Harness.replies(in: shutdown) == ["421 4.3.2 mx.lab.example Service shutting down"])
        #expect(shutdown.contains(.abortMessage))
        #expect(shutdown.last == .close)
    }

    // MARK: STARTTLS (RFC 3207 §4.2, P07, P08)

    @Test func startTLSResetsAndDiscards() {
        var harness = Harness(configuration: Lab.configuration { $0.tlsAvailable = true })
        harness.writes([Self.ehlo, Self.mailFrom, "STARTTLS\r\n"])
        #expect(harness.replies.last == "220 2.0.0 Ready to start TLS")
        #expect(harness.session.tlsActive)
        harness.write(Self.rcptLocal)  // P07: state reset by STARTTLS
        #expect(harness.codes.last == "503 5.5.1")
        harness.write(Self.ehlo)
        #expect(harness.replies.last?.contains("STARTTLS") == false)
        harness.write("STARTTLS\r\n")  // P08
        #expect(harness.codes.last == "554 5.5.1")
        harness.writes([Self.mailFrom + Self.rcptLocal + "DATA\r\n", ".\r\n"])
        #expect(harness.committed.first?.protocolName == "ESMTPS")

    }

    /// P06 (CVE-2011-0411): commands pipelined after STARTTLS are discarded with a warning, never run.
    @Test(arguments: ["STARTTLS\r\nRSET\r\n", "STARTTLS\r\nEHLO x\r\nMAIL FROM:<a@b.example>\r\n"])
    func startTLSDiscardsPipelinedCommands(write: String) {
        var injected = Harness(configuration: Lab.configuration { $0.tlsAvailable = true })
        injected.write(write)
        #expect(Array(injected.codes.dropFirst()) == ["220 2.0.0"])
        #expect(injected.session.tlsActive && !injected.session.isClosed)
        let discarded = write.utf8.count - "STARTTLS\r\n".utf8.count
        #expect(
            injected.actions.contains(
                .warning("discarded \(discarded) octets pipelined after STARTTLS from [192.0.2.1]")))
        injected.write(Self.rcptLocal)  // no EHLO or MAIL survived
        #expect(injected.codes.last == "503 5.5.1")
        injected.write(Self.ehlo)
        #expect(injected.codes.last == "250")
    }

    /// Without a 220 (no TLS available), STARTTLS still ends a pipelined group: 554 5.5.0 and close (RFC 2920 §3.1).
    @Test func refusedStartTLSKeepsTheSynchronizationRule() {
        let injected = run(["STARTTLS\r\nRSET\r\n"])
        #expect(Array(injected.codes.dropFirst()) == ["554 5.5.0"])
        #expect(!injected.session.tlsActive && injected.session.isClosed)
    }

    // MARK: Chunking independence (B16)

    static let fullSession = [
        "EHLO client.example\r\n",
        "MAIL FROM:<a@r.example> SIZE=100\r\nRCPT TO:<u@lab.example>\r\nRCPT TO:<victim@remote.example>\r\n"
            + "RCPT TO:<\"john smith\"@lab.example>\r\nDATA\r\n",
        "Received: from x\r\nSubject: test\r\n\r\n..leading dot\r\n.x\r\nline\r\n\r\n.\r\n",
        "NOOP\r\n",
        "RSET\r\nMAIL FROM:<>\r\nRCPT TO:<Postmaster>\r\nDATA\r\n",
        "bounce\r\n" + String(repeating: "0123456789", count: 50) + "\r\n.\r\nMAIL FROM:<b@r.example>\r\n"
            + "RCPT TO:<u@lab.example>\r\nDATA\r\n",
        "bad\nline\r\n.\r\n",
    ]

    @Test(arguments: [Chunking.bytes, .random(seed: 1), .random(seed: 99), .random(seed: 12345)])
    func chunkingDoesNotChangeTheDialogue(chunking: Chunking) {
        let whole = run(Self.fullSession)
        let split = run(Self.fullSession, chunking)
        #expect(Harness.normalized(split.actions) == Harness.normalized(whole.actions))
        #expect(split.logs == whole.logs)
        // Sanity: the reference run is what we think it is.
        #expect(
            Array(whole.codes.dropFirst()) == [
                "250", "250 2.1.0", "250 2.1.5", "554 5.7.1", "250 2.1.5", "354", "250 2.0.0", "250 2.0.0",
                "250 2.0.0", "250 2.1.0", "250 2.1.5", "354", "250 2.0.0", "250 2.1.0", "250 2.1.5", "354", "554 5.5.2",
            ])
        #expect(
            whole.bodies.first
                == Array("Received: from x\r\nSubject: test\r\n\r\n.leading dot\r\nx\r\nline\r\n\r\n".utf8))
        #expect(whole.commits == 2 && whole.aborts == 1 && whole.closed)
    }
}
