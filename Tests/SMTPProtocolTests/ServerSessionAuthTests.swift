import NetAddress
import Testing

@testable import SMTPProtocol

/// Submission (RFC 6409) and AUTH (RFC 4954) dialogues with the pure session (RFC 4954 §4, §6).
@Suite struct ServerSessionAuthTests {
    static let ehlo = "EHLO client.example\r\n"
    static let plainAlice = "AUTH PLAIN " + Base64.encode(Array("\0alice\0\(Harness.password)".utf8)) + "\r\n"

    static func submission(_ adjust: (inout ServerSession.Configuration) -> Void = { _ in }) -> Harness {
        Harness(
            configuration: Lab.configuration {
                $0.tlsAvailable = true
                $0.submission = true
                adjust(&$0)
            })
    }

    /// A submission session after STARTTLS (the handshake is the driver's) and a second EHLO.
    static func encrypted(_ adjust: (inout ServerSession.Configuration) -> Void = { _ in }) -> Harness {
        var harness = submission(adjust)
        harness.writes([ehlo, "STARTTLS\r\n", ehlo])
        return harness
    }

    static func base64(_ text: String) -> String { Base64.encode(Array(text.utf8)) }

    @Test func authIsOfferedOnlyAfterTLS() {
        var harness = Self.submission()
        harness.write(Self.ehlo)
        #expect(harness.replies.last?.hasSuffix("250 STARTTLS") == true)
        #expect(harness.replies.last?.contains("AUTH") == false)
        harness.writes(["STARTTLS\r\n", Self.ehlo])
        #expect(harness.replies.last?.hasSuffix("250 AUTH PLAIN LOGIN") == true)
        #expect(harness.replies.last?.contains("STARTTLS") == false)

        var implicit = Harness(configuration: Lab.configuration { $0.submission = true }, implicitTLS: true)
        implicit.write(Self.ehlo)
        #expect(implicit.replies.last?.hasSuffix("250 AUTH PLAIN LOGIN") == true)

        var mx = Harness(configuration: Lab.configuration { $0.tlsAvailable = true })
        mx.writes([Self.ehlo, "STARTTLS\r\n", Self.ehlo])
        #expect(mx.replies.last?.contains("AUTH") == false)
    }

    @Test func authBeforeTLSNeedsEncryption() {
        var harness = Self.submission()
        harness.writes([Self.ehlo, Self.plainAlice])
        #expect(harness.codes.last == "538 5.7.11")
        #expect(harness.checked.isEmpty)
    }

    @Test func mailWithoutAuthIsRefused() {
        var harness = Self.submission()
        harness.writes([Self.ehlo, "MAIL FROM:<a@lab.example>\r\n"])
        #expect(harness.codes.last == "530 5.7.0")
        harness.writes(["STARTTLS\r\n", Self.ehlo, "MAIL FROM:<a@lab.example>\r\n"])
        #expect(harness.replies.last == "530 5.7.0 Authentication required")
    }

    @Test(arguments: Chunking.all)
    func plainWithInitialResponseThenRelay(chunking: Chunking) {
        var harness = Self.encrypted()
        // The AUTH line and a pipelined transaction in one write: the transaction waits for the password check.
        harness.write(
            Self.plainAlice + "MAIL FROM:<alice@lab.example>\r\nRCPT TO:<bob@remote.example>\r\nDATA\r\n", chunking)
        #expect(harness.checked == [Credentials(user: "alice", password: Harness.password)])
        #expect(Array(harness.codes.suffix(4)) == ["235 2.7.0", "250 2.1.0", "250 2.1.5", "354"])
        #expect(harness.session.authenticatedUser == "alice")
        harness.write("Subject: x\r\n\r\nhi\r\n.\r\n", chunking)
        #expect(harness.committed.first?.protocolName == "ESMTPSA")
        #expect(harness.committed.first?.recipients.first?.disposition == .relay)
    }

    @Test func secondAuthIsRefused() {
        var harness = Self.encrypted()
        harness.writes([Self.plainAlice, Self.plainAlice])
        #expect(Array(harness.codes.suffix(2)) == ["235 2.7.0", "503 5.5.1"])
        #expect(harness.checked.count == 1)
    }

    @Test func plainWithChallenge() {
        var harness = Self.encrypted()
        harness.write("AUTH PLAIN\r\n")
        #expect(harness.replies.last == "334 ")
        harness.write(Self.base64("alice\0alice\0\(Harness.password)") + "\r\n")
        #expect(harness.codes.last == "235 2.7.0")

        var empty = Self.encrypted()
        empty.write("AUTH PLAIN =\r\n")  // an empty initial response: the credentials come next
        #expect(empty.replies.last == "334 ")
        empty.write(Self.base64("\0alice\0\(Harness.password)") + "\r\n")
        #expect(empty.codes.last == "235 2.7.0")
    }

    @Test func loginMechanism() {
        var harness = Self.encrypted()
        harness.write("auth login\r\n")
        #expect(harness.replies.last == "334 VXNlcm5hbWU6")
        harness.write(Self.base64("alice") + "\r\n")
        #expect(harness.replies.last == "334 UGFzc3dvcmQ6")
        harness.write(Self.base64(Harness.password) + "\r\n")
        #expect(harness.codes.last == "235 2.7.0")

        var initial = Self.encrypted()
        initial.write("AUTH LOGIN \(Self.base64("alice"))\r\n")
        #expect(initial.replies.last == "334 UGFzc3dvcmQ6")
        initial.write(Self.base64("wrong") + "\r\n")
        #expect(initial.codes.last == "535 5.7.8")
    }

    @Test(arguments: [
        ("AUTH PLAIN\r\n*\r\n", "501 5.7.0"),  // cancelled
        ("AUTH LOGIN\r\n*\r\n", "501 5.7.0"),
        ("AUTH PLAIN !!!!\r\n", "501 5.5.2"),  // not base64
        ("AUTH PLAIN YWxpY2U\r\n", "501 5.5.2"),  // missing padding
        ("AUTH PLAIN \(ServerSessionAuthTests.base64("alice:secret"))\r\n", "501 5.5.2"),  // no NULs
        ("AUTH LOGIN\r\n\(ServerSessionAuthTests.base64("a\0b"))\r\n", "501 5.5.2"),
        ("AUTH CRAM-MD5\r\n", "504 5.5.4"),
        ("AUTH\r\n", "501 5.5.4"),
        ("AUTH PLAIN a b\r\n", "501 5.5.4"),
        ("AUTH PLAIN \(ServerSessionAuthTests.base64("bob\0alice\0\(Harness.password)"))\r\n", "535 5.7.8"),
    ])
    func exchangeErrors(write: String, expected: String) {
        var harness = Self.encrypted()
        harness.write(write)
        #expect(harness.codes.last == expected)
        #expect(harness.session.authenticatedUser == nil)
        harness.write("NOOP\r\n")  // back to commands
        #expect(harness.codes.last == "250 2.0.0")
    }

    @Test func authNeedsEHLOAndNoTransaction() {
        var helo = Self.submission()
        helo.writes([Self.ehlo, "STARTTLS\r\n", "HELO client.example\r\n", Self.plainAlice])
        #expect(helo.codes.last == "503 5.5.1")

        var mx = Harness(configuration: Lab.configuration { $0.tlsAvailable = true })
        mx.writes([Self.ehlo, "STARTTLS\r\n", Self.ehlo, Self.plainAlice])
        #expect(mx.codes.last == "502 5.5.1")  // not a submission service: AUTH is not implemented here
    }

    @Test func wrongPasswordIsNeverLogged() {
        var harness = Self.encrypted()
        let secret = "hunter2-very-secret"
        let line = "AUTH PLAIN " + Self.base64("\0alice\0\(secret)")
        harness.write(line + "\r\n")
        #expect(harness.codes.last == "535 5.7.8")
        let logged = harness.actions.compactMap { action -> String? in
            switch action {
            case .log(let text), .warning(let text): return text
            default: return nil
            }
        }
        #expect(logged == ["authentication failed for user alice from [192.0.2.1]"])
        #expect(!logged.joined().contains(secret) && !logged.joined().contains(Self.base64("\0alice\0\(secret)")))
        #expect(!"\(harness.checked)".contains(secret))  // Credentials print without the password
    }

    @Test func userNamesThatAreNotPlainAreNotLogged() {
        var harness = Self.encrypted()
        harness.write("AUTH PLAIN " + Self.base64("\0my password is x\0y") + "\r\n")
        #expect(harness.logs == ["authentication failed for user (unprintable) from [192.0.2.1]"])
    }

    @Test func tooManyFailuresClose() {
        var harness = Self.encrypted { $0.maxAuthFailures = 3 }
        let wrong = "AUTH PLAIN " + Self.base64("\0alice\0nope") + "\r\n"
        harness.writes([wrong, wrong])
        #expect(!harness.session.isClosed)
        harness.write(wrong)
        #expect(Array(harness.codes.suffix(2)) == ["535 5.7.8", "421 4.7.0"])
        #expect(harness.closed)
    }

    @Test func temporaryFailure() {
        var harness = Self.encrypted()
        harness.authOutcome = .temporaryFailure
        harness.write(Self.plainAlice)
        #expect(harness.codes.last == "454 4.7.0")
        harness.authOutcome = nil
        harness.write(Self.plainAlice)
        #expect(harness.codes.last == "235 2.7.0")
    }

    /// Throttled (too many failures across connections): 454 4.7.0 even for the right password, counted toward
    /// the session's failure limit.
    @Test func throttled() {
        var harness = Self.encrypted { $0.maxAuthFailures = 2 }
        harness.authOutcome = .throttled
        harness.write(Self.plainAlice)
        #expect(harness.codes.last == "454 4.7.0")
        #expect(!harness.session.isClosed)
        harness.write(Self.plainAlice)
        #expect(Array(harness.codes.suffix(2)) == ["454 4.7.0", "421 4.7.0"])
        #expect(harness.closed)
    }

    @Test func authLinesMayBeLongerThanCommands() {
        var harness = Self.encrypted()
        // 8000 octets of initial response: over the 512 command limit, under the 12288 AUTH limit.
        let long = Self.base64("\0alice\0" + String(repeating: "x", count: 5990))
        harness.write("AUTH PLAIN \(long)\r\n")
        #expect(harness.codes.last == "535 5.7.8")
        harness.write("NOOP " + String(repeating: "x", count: 600) + "\r\n")
        #expect(harness.codes.last == "500 5.5.2")
        harness.write("AUTH PLAIN " + String(repeating: "A", count: 12300) + "\r\n")
        #expect(harness.codes.last == "500 5.5.2")
        harness.writes(["AUTH LOGIN\r\n", String(repeating: "A", count: 12300) + "\r\n"])
        #expect(harness.codes.last == "500 5.5.6")
        harness.write(Self.plainAlice)
        #expect(harness.codes.last == "235 2.7.0")
    }

    @Test func implicitTLSProtocolNames() {
        var harness = Harness(configuration: Lab.configuration { $0.submission = true }, implicitTLS: true)
        harness.writes([
            Self.ehlo, Self.plainAlice, "MAIL FROM:<alice@lab.example> AUTH=<>\r\n", "RCPT TO:<u@lab.example>\r\n",
            "DATA\r\n", "x\r\n.\r\n",
        ])
        #expect(harness.committed.first?.protocolName == "ESMTPSA")
        var mx = Harness(configuration: Lab.configuration { $0.tlsAvailable = true })
        mx.writes([Self.ehlo, "STARTTLS\r\n", Self.ehlo, "MAIL FROM:<a@r.example> AUTH=<>\r\n"])
        #expect(mx.codes.last == "555 5.5.4")  // AUTH= only where AUTH is offered
    }

    @Test(arguments: ["", "f", "fo", "foo", "foob", "fooba", "foobar", "\0\u{1}\u{FF}"])
    func base64RoundTrip(text: String) {  // RFC 4648 §10 vectors
        let bytes = Array(text.utf8)
        #expect(Base64.decode(Base64.encode(bytes)) == bytes)
    }

    @Test func base64IsStrict() {
        #expect(Base64.encode(Array("foobar".utf8)) == "Zm9vYmFy")
        #expect(Base64.encode(Array("fo".utf8)) == "Zm8=")
        for bad in ["Zm8", "Zm9=", "Zg==Zg==", "Zm 9v", "Zm9v\r", "=Zm9", "Zh==", "Zm9vYmF-"] {
            #expect(Base64.decode(bad) == nil, "\(bad)")
        }
    }
}
