import Foundation
import Testing

@testable import TLS

/// A temporary directory holding a freshly generated self-signed certificate; removed on deinit.
final class CertificateFixture {
    let directory: String
    let hostname: String
    let certificateFile: String
    let keyFile: String

    init(hostname: String = "mx.test.example", keyType: TLSKeyType = .p256) throws {
        directory = try makeTemporaryDirectory()
        self.hostname = hostname
        certificateFile = directory + "/cert.pem"
        keyFile = directory + "/key.pem"
        try TLSContext.generateSelfSigned(
            hostname: hostname, certificateFile: certificateFile, keyFile: keyFile, keyType: keyType)
    }

    func serverContext() throws -> TLSContext {
        try TLSContext.server(certificateFile: certificateFile, keyFile: keyFile)
    }

    deinit {
        try? FileManager.default.removeItem(atPath: directory)
    }
}

func makeTemporaryDirectory() throws -> String {
    var template = Array((NSTemporaryDirectory() + "/tlstests.XXXXXX").utf8CString)
    let made = template.withUnsafeMutableBufferPointer { buffer in
        buffer.baseAddress.flatMap { mkdtemp($0) } != nil
    }
    guard made else { throw POSIXError(.EIO) }
    return String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

extension TLSResult {
    var isIncomplete: Bool {
        if case .incomplete = self { return true }
        return false
    }
    var value: T? {
        if case .complete(let value) = self { return value }
        return nil
    }
    var error: TLSError? {
        if case .failed(let error) = self { return error }
        return nil
    }
}

/// Runs both handshakes, moving at most `chunkSize` bytes each way between calls, until no bytes are in flight.
/// Bounded: a stalled handshake shows up as `.incomplete` in the result instead of hanging the test.
func pumpHandshake(client: TLSSession, server: TLSSession, chunkSize: Int = .max)
    -> (client: TLSResult<Void>, server: TLSResult<Void>)
{
    var clientResult = client.handshake()
    var serverResult = server.handshake()
    var toServer: [UInt8] = []
    var toClient: [UInt8] = []
    for _ in 0..<200_000 {
        toServer += client.getDataForNetwork()
        toClient += server.getDataForNetwork()
        if toServer.isEmpty && toClient.isEmpty { break }
        let serverChunk = min(chunkSize, toServer.count)
        server.consumeFromNetwork(toServer[..<serverChunk])
        toServer.removeFirst(serverChunk)
        serverResult = server.handshake()
        let clientChunk = min(chunkSize, toClient.count)
        client.consumeFromNetwork(toClient[..<clientChunk])
        toClient.removeFirst(clientChunk)
        clientResult = client.handshake()
    }
    return (clientResult, serverResult)
}

/// A connected client/server pair over the fixture's certificate, or the handshake results if it failed.
func connectedPair(
    fixture: CertificateFixture, clientContext: TLSContext? = nil, serverName: String? = nil
) throws -> (client: TLSSession, server: TLSSession) {
    let server = try TLSSession(context: fixture.serverContext(), role: .server)
    let client = try TLSSession(
        context: clientContext ?? TLSContext.client(verifyPeer: false), role: .client(serverName: serverName))
    let results = pumpHandshake(client: client, server: server)
    #expect(results.client.value != nil && results.server.value != nil, "\(results)")
    return (client, server)
}

/// Sends `payload` from `sender` to `receiver` in `TLS` records, moving ciphertext in `chunkSize` pieces, and
/// returns what the receiver decrypted.
func send(_ payload: [UInt8], from sender: TLSSession, to receiver: TLSSession, chunkSize: Int = 65_536) -> [UInt8] {
    #expect(sender.writePlaintext(payload).value != nil)
    var received: [UInt8] = []
    let ciphertext = sender.getDataForNetwork()
    var start = 0
    while start < ciphertext.count {
        let end = min(ciphertext.count, start + chunkSize)
        receiver.consumeFromNetwork(ciphertext[start..<end])
        start = end
        guard let bytes = receiver.readPlaintext().value else { break }
        received += bytes
    }
    return received
}

/// Protocol version numbers (TLS1_1_VERSION, TLS1_2_VERSION) without importing OpenSSL into the tests.
enum TLSVersionForTests {
    static let tls11: Int32 = 0x0302
    static let tls12: Int32 = 0x0303
}
