import Foundation
import Testing

@testable import TLS

@Suite struct TLSContextTests {
    @Test func cipherLists() {
        #expect(TLSContext.isUsableCipherList(TLSContext.intermediateCiphers))
        #expect(TLSContext.isUsableCipherList("ECDHE-RSA-AES256-GCM-SHA384"))
        #expect(!TLSContext.isUsableCipherList("NO-SUCH-CIPHER"))
        #expect(!TLSContext.isUsableCipherList(""))
        // The default names no static-RSA, CBC or SHA-1 suite.
        for suite in TLSContext.intermediateCiphers.split(separator: ":") {
            #expect(suite.hasPrefix("ECDHE-") || suite.hasPrefix("DHE-"))
            #expect(suite.hasSuffix("GCM-SHA256") || suite.hasSuffix("GCM-SHA384") || suite.hasSuffix("POLY1305"))
        }
    }

    @Test(arguments: [TLSKeyType.rsa2048, .p256])
    func generatedFilesHaveModesAndPEMFormat(keyType: TLSKeyType) throws {
        let fixture = try CertificateFixture(keyType: keyType)
        let keyAttributes = try FileManager.default.attributesOfItem(atPath: fixture.keyFile)
        let certificateAttributes = try FileManager.default.attributesOfItem(atPath: fixture.certificateFile)
        #expect((keyAttributes[.posixPermissions] as? Int) == 0o600)
        #expect((certificateAttributes[.posixPermissions] as? Int) == 0o644)
        let key = try String(contentsOfFile: fixture.keyFile, encoding: .utf8)
        let certificate = try String(contentsOfFile: fixture.certificateFile, encoding: .utf8)
        #expect(key.hasPrefix("-----BEGIN PRIVATE KEY-----\n"))
        #expect(certificate.hasPrefix("-----BEGIN CERTIFICATE-----\n"))
        // temp+rename leaves nothing else behind
        let names = try FileManager.default.contentsOfDirectory(atPath: fixture.directory).sorted()
        #expect(names == ["cert.pem", "key.pem"])
    }

    @Test(arguments: [TLSKeyType.rsa2048, .p256])
    func generatedCertificateReloadsAsServerContext(keyType: TLSKeyType) throws {
        let fixture = try CertificateFixture(keyType: keyType)
        _ = try fixture.serverContext()
    }

    @Test func generatedCertificateNamesTheHostForTenYears() throws {
        let fixture = try CertificateFixture(hostname: "mx1.lab.example")
        let info = try TLSCertificateInfo(certificateFile: fixture.certificateFile)
        #expect(info.dnsNames == ["mx1.lab.example"])
        #expect(info.ipAddresses.isEmpty)
        #expect(info.subject == "CN=mx1.lab.example")
        #expect(info.issuer == info.subject)
        let now = Int64(Date().timeIntervalSince1970)
        #expect(info.notBefore <= now && info.notBefore >= now - 3600)
        #expect(abs(info.notAfter - info.notBefore - (3650 * 86_400 + 300)) <= 2)  // two time(2) reads
    }

    @Test(arguments: [
        ("192.0.2.25", "192.0.2.25"), ("2001:db8::25", "2001:db8::25"), ("2001:DB8:0::25", "2001:db8::25"),
    ])
    func addressHostnameBecomesIPAddressName(hostname: String, expected: String) throws {
        let fixture = try CertificateFixture(hostname: hostname)
        let info = try TLSCertificateInfo(certificateFile: fixture.certificateFile)
        #expect(info.ipAddresses == [expected])
        #expect(info.dnsNames.isEmpty)
    }

    @Test func longHostnameGoesOnlyIntoSubjectAltName() throws {
        let label = String(repeating: "a", count: 63)
        let hostname = "\(label).\(label).example"
        let fixture = try CertificateFixture(hostname: hostname)
        let info = try TLSCertificateInfo(certificateFile: fixture.certificateFile)
        #expect(info.dnsNames == [hostname])
        #expect(!info.subject.contains("CN="))
    }

    @Test(arguments: [
        "", "mx.example,DNS:evil.example", "mx example", "-mx.example", "mx-.example", "mx..example", "mx.example.",
        "m\u{00E9}.example", String(repeating: "a", count: 64) + ".example",
        Array(repeating: "abcdefghi", count: 26).joined(separator: "."),  // 259 octets
    ])
    func invalidHostnameIsRejectedBeforeWritingFiles(hostname: String) throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        #expect {
            try TLSContext.generateSelfSigned(
                hostname: hostname, certificateFile: directory + "/c.pem", keyFile: directory + "/k.pem")
        } throws: { error in
            if case .invalidArgument = error as? TLSError { return true }
            return false
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory).isEmpty)
    }

    @Test func regenerationReplacesBothFiles() throws {
        let fixture = try CertificateFixture(hostname: "old.example")
        try TLSContext.generateSelfSigned(
            hostname: "new.example", certificateFile: fixture.certificateFile, keyFile: fixture.keyFile,
            keyType: .p256)
        #expect(try TLSCertificateInfo(certificateFile: fixture.certificateFile).dnsNames == ["new.example"])
        let mode = try FileManager.default.attributesOfItem(atPath: fixture.keyFile)[.posixPermissions] as? Int
        #expect(mode == 0o600)
        _ = try fixture.serverContext()
    }

    @Test func unwritableDirectoryIsAFileSystemError() throws {
        #expect {
            try TLSContext.generateSelfSigned(
                hostname: "mx.example", certificateFile: "/nonexistent-dir/c.pem", keyFile: "/nonexistent-dir/k.pem",
                keyType: .p256)
        } throws: { error in
            guard case .fileSystem(let operation, _, let code) = error as? TLSError else { return false }
            return operation == "open" && code == ENOENT
        }
    }

    @Test func missingCertificateFileIsUnavailable() throws {
        let fixture = try CertificateFixture()
        #expect {
            try TLSContext.server(certificateFile: fixture.directory + "/missing.pem", keyFile: fixture.keyFile)
        } throws: { error in
            guard case .certificateUnavailable(let reason) = error as? TLSError else { return false }
            return reason.contains("missing.pem")
        }
    }

    @Test func keyOfAnotherCertificateIsRejected() throws {
        let first = try CertificateFixture()
        let second = try CertificateFixture()
        #expect {
            try TLSContext.server(certificateFile: first.certificateFile, keyFile: second.keyFile)
        } throws: { error in
            if case .certificateUnavailable = error as? TLSError { return true }
            return false
        }
    }

    @Test func garbageCertificateFileIsUnavailable() throws {
        let fixture = try CertificateFixture()
        try Data("not a certificate\n".utf8).write(to: URL(fileURLWithPath: fixture.certificateFile))
        #expect(throws: TLSError.self) { try fixture.serverContext() }
        #expect(throws: TLSError.self) { try TLSCertificateInfo(certificateFile: fixture.certificateFile) }
    }

    @Test func missingCAFileIsUnavailable() throws {
        #expect {
            try TLSContext.client(verifyPeer: true, caFile: "/nonexistent-dir/ca.pem")
        } throws: { error in
            if case .certificateUnavailable = error as? TLSError { return true }
            return false
        }
    }

    @Test func sessionRoleMustMatchContext() throws {
        let fixture = try CertificateFixture()
        let serverContext = try fixture.serverContext()
        let clientContext = try TLSContext.client(verifyPeer: false)
        #expect(throws: TLSError.self) { try TLSSession(context: serverContext, role: .client(serverName: nil)) }
        #expect(throws: TLSError.self) { try TLSSession(context: clientContext, role: .server) }
        _ = try TLSSession(context: clientContext, role: .client(serverName: nil))
    }

    @Test func verifyingClientNeedsAServerName() throws {
        let context = try TLSContext.client(verifyPeer: true)
        for name in [nil, ""] as [String?] {
            #expect {
                try TLSSession(context: context, role: .client(serverName: name))
            } throws: { error in
                if case .invalidArgument = error as? TLSError { return true }
                return false
            }
        }
    }

    @Test func contextsDisableCompressionAndRenegotiation() throws {
        let noCompression: UInt64 = 1 << 17  // SSL_OP_NO_COMPRESSION
        let serverPreference: UInt64 = 1 << 22  // SSL_OP_CIPHER_SERVER_PREFERENCE
        let noRenegotiation: UInt64 = 1 << 30  // SSL_OP_NO_RENEGOTIATION
        let fixture = try CertificateFixture()
        let server = try fixture.serverContext().options
        let client = try TLSContext.client(verifyPeer: false).options
        #expect(
            server & (noCompression | serverPreference | noRenegotiation) == noCompression | serverPreference
                | noRenegotiation)
        #expect(client & (noCompression | noRenegotiation) == noCompression | noRenegotiation)
    }

    @Test func errorDescriptionsAreReadable() {
        #expect(TLSError.openSSL(operation: "SSL_new", reasons: ["a", "b"]).description == "SSL_new failed: a; b")
        #expect(TLSError.closed.description == "TLS session closed")
        #expect(
            TLSError.fileSystem(operation: "open", path: "/x", errno: ENOENT).description
                == "open /x: No such file or directory")
    }
}
