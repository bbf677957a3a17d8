import Foundation
import SMTPProtocol
import Testing

@testable import Spool

/// Envelopes written before the typed fields (format version 1) must still load, with the queue state they kept in
/// `extra` moved into its fields. `Fixtures/version1.env` was written by the version 1 encoder.
@Suite struct EnvelopeVersionTests {
    static let fixture = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Fixtures/version1.env")
    static let id = QueueID("HOL900ALHC0016")!

    static func version1() throws -> Envelope {
        let bytes = Array(try Data(contentsOf: fixture))
        #expect(bytes.starts(with: Array("DUALMTA-ENV 1\n".utf8)))
        return try EnvelopeCodec.decode(bytes, expectedID: id)
    }

    @Test func version1QueueStateMovesIntoTypedFields() throws {
        let envelope = try Self.version1()
        #expect(envelope.failedRuns == 2)
        #expect(envelope.bounceOf == QueueID("0M8ZK3Q1F2A7XQ"))
        #expect(envelope.recipients[0].report == .queued(QueueID("0M8ZK3Q1F2A7XR")!))
        #expect(envelope.recipients[0].remoteMTA == RemoteMTA(host: "mx.example.test", address: "2001:db8::25"))
        #expect(envelope.recipients[1].remoteMTA == RemoteMTA(host: "mx.example.net", address: "192.0.2.26"))
        #expect(envelope.recipients[1].report == nil && envelope.recipients[2].remoteMTA == nil)
        #expect(envelope.recipients[0].lastStatus == EnhancedStatus(5, 1, 1))
        #expect(envelope.recipients[2].lastStatus == EnhancedStatus(4, 4, 2))
        #expect(envelope.recipients.map(\.state) == [.failed, .delivered, .pending])
        #expect(envelope.attempts.count == 2 && envelope.delayWarned && envelope.nextAttempt == 1_795_891_500)
        // Only the key this version does not know stays in `extra`.
        #expect(envelope.extra == ["x-future": "kept as is"])
    }

    @Test func version1IsRewrittenAsVersion2WithTheSameContent() throws {
        let envelope = try Self.version1()
        let bytes = try EnvelopeCodec.encode(envelope)
        #expect(bytes.starts(with: Array("DUALMTA-ENV 2\n".utf8)))
        #expect(try EnvelopeCodec.decode(bytes, expectedID: Self.id) == envelope)
    }

    @Test func version1ValuesThatDoNotParseStayInExtra() {
        var envelope = Envelope(
            id: Self.id, sender: "a@b.example", arrival: 0, client: "local", heloName: "h", protocolName: "LOCAL",
            recipients: [RecipientRecord(address: "c@d.example")],
            extra: ["runs": "many", "rcpt.0.reported": "maybe", "rcpt.0.remote": "nobracket", "bounce-of": "../x"])
        EnvelopeCodec.migrateVersion1Extras(&envelope)
        #expect(envelope.extra.count == 4 && envelope.failedRuns == 0 && envelope.bounceOf == nil)
    }

    @Test func version1FilesMayNotUseVersion2Records() throws {
        var lines = String(decoding: try Data(contentsOf: Self.fixture), as: UTF8.self)
            .split(separator: "\n").map(String.init).dropLast()  // END, resealed below (size 0)
        lines.insert("runs 3", at: lines.firstIndex(of: "warned 1")! + 1)
        #expect(throws: EnvelopeCodec.DecodeError("unknown record \"runs\"")) {
            try EnvelopeCodec.decode(sealed(Array(lines)), expectedID: Self.id)
        }
    }

    @Test(arguments: [
        RecipientRecord(
            address: "x@y.example", state: .failed, lastReply: "550 5.1.1 no", lastStatus: EnhancedStatus(5, 1, 1),
            updated: 7, remoteMTA: RemoteMTA(host: "[192.0.2.7]", address: "192.0.2.7"), attempts: 3,
            report: .discarded, notify: DSNNotify(success: true, delay: true),
            originalRecipient: "rfc822;X@Y.example"),
        RecipientRecord(address: "x@y.example", report: ReportMark.none, notify: .never),
        RecipientRecord(address: "x@y.example", report: .queued(QueueID("0M8ZK3Q1F2A7XQ")!)),
    ])
    func typedRecipientFieldsRoundTrip(_ recipient: RecipientRecord) throws {
        let envelope = Envelope(
            id: Self.id, sender: "", arrival: 1, client: "local", heloName: "h", protocolName: "LOCAL",
            failedRuns: 4, bounceOf: QueueID("0M8ZK3Q1F2A7XQ"), dsnReturn: .headers, envelopeID: "id 1+2",
            recipients: [recipient])
        #expect(try EnvelopeCodec.decode(try EnvelopeCodec.encode(envelope), expectedID: Self.id) == envelope)
    }
}
