import Foundation
import Testing

@testable import TLS

@Suite struct TLSSessionTests {
    @Test(arguments: [TLSKeyType.rsa2048, .p256])
    func handshakeCompletesWithTLS13(keyType: TLSKeyType) throws {
        let fixture = try CertificateFixture(keyType: keyType)
        let (client, server) = try connectedPair(fixture: fixture, serverName: fixture.hostname)
        for session in [client, server] {
            #expect(session.isHandshakeComplete)
            #expect(session.protocolVersion == "TLSv1.3")
            #expect(session.cipherName?.hasPrefix("TLS_") == true)
            #expect((session.cipherBits ?? 0) >= 128)
        }
        #expect(client.cipherName == server.cipherName)
        #expect(client.peerCertificateSubject == "CN=mx.test.example")
        #expect(server.peerCertificateSubject == nil)  // no client certificates requested
        #expect(!client.peerCertificateVerified)  // opportunistic: self-signed is accepted but not verified
    }

    @Test func stateIsEmptyBeforeTheHandshake() throws {
        let client = try TLSSession(context: TLSContext.client(verifyPeer: false), role: .client(serverName: nil))
        #expect(!client.isHandshakeComplete)
        #expect(client.protocolVersion == nil)
        #expect(client.cipherName == nil)
        #expect(client.peerCertificateSubject == nil)
        #expect(client.writePlaintext(Array("too early".utf8)).isIncomplete)
        #expect(client.getDataForNetwork().isEmpty)  // nothing was sent on our behalf
    }

    @Test func tls12IsNegotiatedWithAClientLimitedToIt() throws {
        let fixture = try CertificateFixture()
        let context = try TLSContext.client(
            verifyPeer: false, caFile: nil, maximumVersion: TLSVersionForTests.tls12, securityLevel: nil)
        let (client, server) = try connectedPair(fixture: fixture, clientContext: context)
        #expect(client.protocolVersion == "TLSv1.2")
        #expect(server.protocolVersion == "TLSv1.2")
        #expect(server.cipherName?.hasPrefix("ECDHE-") == true)  // forward secrecy
        #expect(
            send(Array("EHLO client.example\r\n".utf8), from: client, to: server)
                == Array("EHLO client.example\r\n".utf8))
    }

    @Test func tls11ClientIsRefusedByOurFloor() throws {
        let fixture = try CertificateFixture(keyType: .rsa2048)
        // Security level 0 lets this client really offer TLS 1.1 (Debian's default level 2 would refuse locally).
        let context = try TLSContext.client(
            verifyPeer: false, caFile: nil, maximumVersion: TLSVersionForTests.tls11, securityLevel: 0)
        let server = try TLSSession(context: fixture.serverContext(), role: .server)
        let client = try TLSSession(context: context, role: .client(serverName: nil))
        let results = pumpHandshake(client: client, server: server)
        guard case .handshakeFailed(let reason) = results.server.error else {
            Issue.record("server: \(results.server)")
            return
        }
        #expect(reason.contains("unsupported protocol"))
        #expect(results.client.error != nil)  // it got our protocol_version alert
        #expect(!server.isHandshakeComplete)
    }

    @Test(arguments: [1, 7, 100, 1500])
    func handshakeSurvivesDripFedCiphertext(chunkSize: Int) throws {
        let fixture = try CertificateFixture()
        let server = try TLSSession(context: fixture.serverContext(), role: .server)
        let client = try TLSSession(context: TLSContext.client(verifyPeer: false), role: .client(serverName: nil))
        let results = pumpHandshake(client: client, server: server, chunkSize: chunkSize)
        #expect(results.client.value != nil && results.server.value != nil, "\(results)")
        #expect(send(Array("QUIT\r\n".utf8), from: client, to: server, chunkSize: chunkSize) == Array("QUIT\r\n".utf8))
    }

    @Test func dataFlowsBothWays() throws {
        let fixture = try CertificateFixture()
        let (client, server) = try connectedPair(fixture: fixture)
        let line = Array("EHLO client.example\r\n".utf8)
        #expect(send(line, from: client, to: server) == line)
        let reply = Array("250-mx.test.example\r\n250 PIPELINING\r\n".utf8)
        #expect(send(reply, from: server, to: client) == reply)
        // nothing left over
        #expect(server.readPlaintext().value == [])
        #expect(client.readPlaintext().value == [])
    }

    @Test(arguments: [1_500, 16_384, 65_536])
    func oneMebibyteArrivesIntactInBothDirections(chunkSize: Int) throws {
        let fixture = try CertificateFixture()
        let (client, server) = try connectedPair(fixture: fixture)
        var generator = SystemRandomNumberGenerator()
        let payload = (0..<(1 << 20)).map { _ in UInt8.random(in: 0...255, using: &generator) }
        #expect(send(payload, from: client, to: server, chunkSize: chunkSize) == payload)
        #expect(send(payload, from: server, to: client, chunkSize: chunkSize) == payload)
    }

    @Test func emptyWriteProducesNothing() throws {
        let fixture = try CertificateFixture()
        let (client, _) = try connectedPair(fixture: fixture)
        #expect(client.writePlaintext([]).value != nil)
        #expect(client.getDataForNetwork().isEmpty)
    }

    @Test func closeNotifyIsSeenAsClosedAfterTheDataBeforeIt() throws {
        let fixture = try CertificateFixture()
        let (client, server) = try connectedPair(fixture: fixture)
        #expect(client.writePlaintext(Array("QUIT\r\n".utf8)).value != nil)
        client.shutdown()
        server.consumeFromNetwork(client.getDataForNetwork())  // data record and close_notify in one read
        #expect(server.readPlaintext().value == Array("QUIT\r\n".utf8))
        #expect(server.readPlaintext().error == .closed)
        #expect(server.readPlaintext().error == .closed)
        #expect(client.writePlaintext(Array("more".utf8)).error == .closed)
        #expect(server.writePlaintext(Array("221 bye\r\n".utf8)).error == .closed)
        // the server answers with its own close_notify, which the client reads as .closed
        server.shutdown()
        client.consumeFromNetwork(server.getDataForNetwork())
        #expect(client.readPlaintext().error == .closed)
    }

    @Test func shutdownBeforeTheHandshakeSendsNothing() throws {
        let client = try TLSSession(context: TLSContext.client(verifyPeer: false), role: .client(serverName: nil))
        client.shutdown()
        #expect(client.getDataForNetwork().isEmpty)
    }

    @Test(arguments: [
        Array("EHLO client.example\r\nMAIL FROM:<a@b.example>\r\n".utf8),
        [0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x00],  // ClientHello record with a broken body
        [UInt8](repeating: 0, count: 64),
    ])
    func garbageFromTheClientFailsTheServerHandshake(garbage: [UInt8]) throws {
        let fixture = try CertificateFixture()
        let server = try TLSSession(context: fixture.serverContext(), role: .server)
        #expect(server.handshake().isIncomplete)
        server.consumeFromNetwork(garbage)
        let result = server.handshake()
        guard case .handshakeFailed(let reason) = result.error else {
            Issue.record("expected handshakeFailed, got \(result)")
            return
        }
        #expect(!reason.isEmpty)
        #expect(server.handshake().error == result.error)  // sticky: OpenSSL is not touched again
        #expect(server.readPlaintext().error == result.error)
        #expect(server.writePlaintext([1]).error == result.error)
        // A fresh session on the same context is unaffected by the failure.
        let again = try TLSSession(context: fixture.serverContext(), role: .server)
        let client = try TLSSession(context: TLSContext.client(verifyPeer: false), role: .client(serverName: nil))
        let results = pumpHandshake(client: client, server: again)
        #expect(results.server.value != nil)
    }

    @Test func verifyingClientRejectsAnUntrustedSelfSignedCertificate() throws {
        let fixture = try CertificateFixture()
        let context = try TLSContext.client(verifyPeer: true)  // system store only
        let server = try TLSSession(context: fixture.serverContext(), role: .server)
        let client = try TLSSession(context: context, role: .client(serverName: fixture.hostname))
        let results = pumpHandshake(client: client, server: server)
        guard case .certificateVerificationFailed(let reason) = results.client.error else {
            Issue.record("client: \(results.client)")
            return
        }
        #expect(reason.contains("self-signed"))
        #expect(results.server.error != nil)  // our alert reached the server
    }

    @Test(arguments: [TLSKeyType.rsa2048, .p256])
    func verifyingClientAcceptsTheCertificateAsItsCAFile(keyType: TLSKeyType) throws {
        let fixture = try CertificateFixture(keyType: keyType)
        let context = try TLSContext.client(verifyPeer: true, caFile: fixture.certificateFile)
        let (client, _) = try connectedPair(fixture: fixture, clientContext: context, serverName: fixture.hostname)
        #expect(client.isHandshakeComplete)
        #expect(client.peerCertificateVerified)
    }

    @Test func verifyingClientChecksTheHostName() throws {
        let fixture = try CertificateFixture()
        let context = try TLSContext.client(verifyPeer: true, caFile: fixture.certificateFile)
        let server = try TLSSession(context: fixture.serverContext(), role: .server)
        let client = try TLSSession(context: context, role: .client(serverName: "other.test.example"))
        let results = pumpHandshake(client: client, server: server)
        guard case .certificateVerificationFailed(let reason) = results.client.error else {
            Issue.record("client: \(results.client)")
            return
        }
        #expect(reason.contains("hostname mismatch"))
    }

    @Test(arguments: [
        ("192.0.2.25", "192.0.2.25", true), ("2001:db8::25", "2001:db8::25", true),
        ("192.0.2.25", "192.0.2.26", false),
    ])
    func verifyingClientChecksAnAddress(certified: String, expected: String, succeeds: Bool) throws {
        let fixture = try CertificateFixture(hostname: certified)
        let context = try TLSContext.client(verifyPeer: true, caFile: fixture.certificateFile)
        let server = try TLSSession(context: fixture.serverContext(), role: .server)
        let client = try TLSSession(context: context, role: .client(serverName: expected))
        let results = pumpHandshake(client: client, server: server)
        #expect((results.client.value != nil) == succeeds, "\(results.client)")
    }

    @Test func opportunisticClientReportsVerificationWithoutFailing() throws {
        let fixture = try CertificateFixture()
        let trusting = try TLSContext.client(verifyPeer: false, caFile: fixture.certificateFile)
        let (good, _) = try connectedPair(fixture: fixture, clientContext: trusting, serverName: fixture.hostname)
        #expect(good.peerCertificateVerified)
        let (wrongName, _) = try connectedPair(fixture: fixture, clientContext: trusting, serverName: "x.example")
        #expect(!wrongName.peerCertificateVerified)
    }

    @Test func tamperedRecordIsAnError() throws {
        let fixture = try CertificateFixture()
        let (client, server) = try connectedPair(fixture: fixture)
        #expect(client.writePlaintext(Array("DATA\r\n".utf8)).value != nil)
        var record = client.getDataForNetwork()
        record[record.count - 1] ^= 0x01  // inside the AEAD tag
        server.consumeFromNetwork(record)
        guard case .openSSL(let operation, let reasons) = server.readPlaintext().error else {
            Issue.record("expected an OpenSSL error, got \(String(describing: server.readPlaintext()))")
            return
        }
        #expect(operation == "SSL_read")
        #expect(!reasons.isEmpty)
        #expect(!server.getDataForNetwork().isEmpty)  // the alert for the peer
    }

    @Test func nonContiguousInputIsAccepted() throws {
        let fixture = try CertificateFixture()
        let (client, server) = try connectedPair(fixture: fixture)
        #expect(client.writePlaintext(Array("NOOP\r\n".utf8)).value != nil)
        let ciphertext = client.getDataForNetwork()
        server.consumeFromNetwork(ciphertext.lazy.map { $0 })  // a Collection without contiguous storage
        #expect(server.readPlaintext().value == Array("NOOP\r\n".utf8))
    }
}
