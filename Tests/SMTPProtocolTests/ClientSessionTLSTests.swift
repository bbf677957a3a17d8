import Testing

@testable import SMTPProtocol

/// Outbound STARTTLS in the pure client session (RFC 3207; O14–O16).
@Suite struct ClientSessionTLSTests {
    static let ehloWithTLS = "250-mx.example\r\n250-PIPELINING\r\n250 STARTTLS\r\n"
    static let ehloPlain = "250-mx.example\r\n250 PIPELINING\r\n"

    static func session(_ policy: ClientTLSPolicy) -> ClientSession {
        var session = ClientSession(
            heloName: "us.example", sender: "a@us.example", recipients: ["b@mx.example"], messageSize: 10,
            bodyType: nil, needsSMTPUTF8: false, tlsPolicy: policy)
        _ = session.start()
        return session
    }

    static func sent(_ actions: [ClientAction]) -> [String] {
        actions.compactMap { if case .send(let bytes) = $0 { String(decoding: bytes, as: UTF8.self) } else { nil } }
    }

    static func result(_ actions: [ClientAction]) -> ClientResult? {
        for case .finished(let result) in actions { return result }
        return nil
    }

    @Test func mayUsesOfferedTLSAndGreetsAgain() {
        var session = Self.session(.may)
        #expect(Self.sent(session.receive(Array("220 mx.example ESMTP\r\n".utf8))) == ["EHLO us.example\r\n"])
        #expect(Self.sent(session.receive(Array(Self.ehloWithTLS.utf8))) == ["STARTTLS\r\n"])
        // O14: a reply smuggled after the 220 is dropped, not read later as the answer to EHLO.
        #expect(session.receive(Array("220 2.0.0 go\r\n250 injected\r\n".utf8)) == [.startTLS])
        #expect(session.receive(Array("250 more\r\n".utf8)).isEmpty)  // nothing is read until the handshake is done
        #expect(Self.sent(session.tlsEstablished()) == ["EHLO us.example\r\n"])
        // STARTTLS offered again inside TLS is not taken up a second time.
        let afterTLS = Self.sent(session.receive(Array(Self.ehloWithTLS.utf8)))
        #expect(afterTLS.first?.hasPrefix("MAIL FROM:<a@us.example>") == true)
    }

    @Test func mayWithoutOfferOrRefusedStaysPlain() {
        var plain = Self.session(.may)
        _ = plain.receive(Array("220 mx.example\r\n".utf8))
        #expect(Self.sent(plain.receive(Array(Self.ehloPlain.utf8))).first?.hasPrefix("MAIL") == true)

        var refused = Self.session(.may)  // O16: 454 → plaintext on the same connection
        _ = refused.receive(Array("220 mx.example\r\n".utf8))
        _ = refused.receive(Array(Self.ehloWithTLS.utf8))
        #expect(
            Self.sent(refused.receive(Array("454 4.7.0 TLS not available\r\n".utf8))).first?.hasPrefix("MAIL") == true)
    }

    @Test func noneIgnoresTheOffer() {
        var session = Self.session(.none)
        _ = session.receive(Array("220 mx.example\r\n".utf8))
        #expect(Self.sent(session.receive(Array(Self.ehloWithTLS.utf8))).first?.hasPrefix("MAIL") == true)
    }

    @Test(arguments: [
        (ehloWithTLS, "454 4.7.0 no\r\n", "4.7.0"),  // refused
        (ehloPlain, nil as String?, "4.7.0"),  // not offered
    ])
    func encryptDefersWithoutTLS(ehlo: String, startTLSReply: String?, status: String) {
        var session = Self.session(.encrypt)
        _ = session.receive(Array("220 mx.example\r\n".utf8))
        var actions = session.receive(Array(ehlo.utf8))
        if let startTLSReply { actions = session.receive(Array(startTLSReply.utf8)) }
        #expect(Self.sent(actions) == ["QUIT\r\n"])
        let result = Self.result(session.receive(Array("221 bye\r\n".utf8)))
        guard case .hostFailed(.tls(let reply))? = result?.kind else {
            Issue.record("expected a TLS host failure, got \(String(describing: result?.kind))")
            return
        }
        #expect(reply.status?.description == status)
        #expect(result?.recipients.first?.outcome == .temporary(reply))
    }

    @Test func failedHandshakeIsTemporary() {
        var session = Self.session(.encrypt)
        _ = session.receive(Array("220 mx.example\r\n".utf8))
        _ = session.receive(Array(Self.ehloWithTLS.utf8))
        #expect(session.receive(Array("220 go\r\n".utf8)) == [.startTLS])
        let actions = session.tlsFailed("bad record")
        #expect(actions.first == .close)
        let result = Self.result(actions)
        #expect(result?.recipients.first?.outcome.reply.status?.description == "4.7.5")
        var early = Self.session(.may)
        #expect(early.tlsFailed("x").isEmpty)  // only after a 220 to STARTTLS

        // The TLS layer's own "TLS handshake failed: ..." text is not prefixed a second time.
        var worded = Self.session(.encrypt)
        _ = worded.receive(Array("220 mx.example\r\n".utf8))
        _ = worded.receive(Array(Self.ehloWithTLS.utf8))
        _ = worded.receive(Array("220 go\r\n".utf8))
        let text = Self.result(worded.tlsFailed("TLS handshake failed: wrong version number"))?
            .recipients.first?.outcome.reply.lines.joined()
        #expect(text == "TLS handshake failed: wrong version number")

        var timedOut = Self.session(.may)
        _ = timedOut.receive(Array("220 mx.example\r\n".utf8))
        _ = timedOut.receive(Array(Self.ehloWithTLS.utf8))
        _ = timedOut.receive(Array("220 go\r\n".utf8))
        #expect(Self.result(timedOut.timedOut())?.recipients.first?.outcome.reply.status?.description == "4.7.5")
    }
}
