import SMTPProtocol
import Testing

@testable import Spool

@Suite struct EnvelopeTests {
    static let id = QueueID(microseconds: 1_795_891_140_123_456, suffix: 42)

    /// Every field set, with values that try to break lines, escapes and encodings.
    static var nasty: Envelope {
        var envelope = Envelope(
            id: id, sender: "\"john smith\"@lab.example", arrival: 1_795_891_140, client: "[IPv6:2001:db8::1]:50022",
            heloName: "evil\r\nrcpt addr=x@y state=pending\r\nEND size=0 crc32=00000000", protocolName: "ESMTPSA",
            bodyType: "8BITMIME", smtpUTF8: true, messageSize: 123_456, nextAttempt: -5, held: true, delayWarned: true,
            recipients: [
                RecipientRecord(address: "bob@example.test"),
                RecipientRecord(
                    address: "δοκιμή@παράδειγμα.δοκιμή", state: .delivered, lastReply: "250 2.0.0 Ok: queued as 1%2",
                    lastStatus: EnhancedStatus(2, 0, 0), updated: 1_795_891_200),
                RecipientRecord(
                    address: "SRS0=HHH=TT=example.org=a@b.example", state: .failed, lastReply: "",
                    lastStatus: EnhancedStatus(5, 1, 1), updated: 0),
                RecipientRecord(address: "\"a=b c%d\\\"\"@x.example", state: .pending, lastReply: "421 \u{7F}\t\u{0}"),
            ],
            attempts: [
                AttemptRecord(
                    time: 1_795_891_150, recipients: ["bob@example.test", "δοκιμή@παράδειγμα.δοκιμή"],
                    mx: "mx10.mx.example", preference: 10, address: "[2001:db8::195]", family: "ipv6",
                    result: "failed", reply: "No route to host", milliseconds: 3),
                AttemptRecord(
                    time: 1_795_891_160, recipients: [], mx: "", preference: 0, address: "", family: "",
                    result: "", reply: "", milliseconds: 0),
            ],
            extra: ["ENVID": "abc 123\r\n", "orcpt.1": "rfc822;bob@example.test", "RET": "HDRS"])
        envelope.recipients[0].lastReply = "452 4.2.2 Mailbox full\n"
        return envelope
    }

    @Test func nastyValuesRoundTrip() throws {
        let bytes = try EnvelopeCodec.encode(Self.nasty)
        #expect(try EnvelopeCodec.decode(bytes, expectedID: Self.id) == Self.nasty)
    }

    @Test func minimalEnvelopeRoundTripsWithNullSender() throws {
        var envelope = sampleEnvelope(Self.id)
        envelope.sender = ""
        let decoded = try EnvelopeCodec.decode(try EnvelopeCodec.encode(envelope), expectedID: Self.id)
        #expect(decoded == envelope)
        #expect(decoded.bodyType == nil && decoded.recipients[0].lastReply == nil)
    }

    @Test func fileIsPrintableASCIIWithOneRecordPerLine() throws {
        let bytes = try EnvelopeCodec.encode(Self.nasty)
        #expect(bytes.allSatisfy { $0 == 0x0A || (0x20..<0x7F).contains($0) })
        let lines = String(decoding: bytes, as: UTF8.self).split(separator: "\n")
        // magic, 12 single fields (body and runs included), 3 extra, 4 rcpt, 2 attempt, END
        #expect(lines.count == 1 + 12 + 3 + 4 + 2 + 1)
        #expect(lines.first == "DUALMTA-ENV 2")
        #expect(lines.filter { $0.hasPrefix("END ") }.count == 1)
        #expect(lines.contains("sender \"john%20smith\"@lab.example"))
        #expect(lines.contains { $0.hasPrefix("rcpt addr=SRS0=HHH=TT=example.org=a@b.example ") })
    }

    @Test func everyTruncationIsRejected() throws {
        let bytes = try EnvelopeCodec.encode(Self.nasty)
        for length in 0..<bytes.count {
            #expect(throws: EnvelopeCodec.DecodeError.self) {
                try EnvelopeCodec.decode(Array(bytes[0..<length]), expectedID: Self.id)
            }
        }
    }

    @Test func everyChangedByteIsRejected() throws {
        let bytes = try EnvelopeCodec.encode(sampleEnvelope(Self.id))
        for index in bytes.indices {
            for mask: UInt8 in [0x01, 0x20, 0x80] {
                var damaged = bytes
                damaged[index] ^= mask
                #expect(throws: EnvelopeCodec.DecodeError.self) {
                    try EnvelopeCodec.decode(damaged, expectedID: Self.id)
                }
            }
        }
    }

    @Test func idMustMatchTheFileName() throws {
        let bytes = try EnvelopeCodec.encode(sampleEnvelope(Self.id))
        let other = QueueID(microseconds: 1, suffix: 1)
        #expect(throws: EnvelopeCodec.DecodeError("id mismatch")) { try EnvelopeCodec.decode(bytes, expectedID: other) }
    }

    /// Well-framed files (valid END and checksum) whose content is wrong.
    @Test(
        arguments: [
            ("DUALMTA-ENV 3", nil, "unsupported version"),
            ("XDUALMTA", nil, "bad magic"),
            ("frobnicate 1", nil, "unknown record \"frobnicate\""),
            ("held 1", nil, "repeated held"),
            ("next +1", "next 0", "bad number \"+1\""),
            ("next 0x10", "next 0", "bad number \"0x10\""),
            ("held yes", "held 0", "bad flag \"yes\""),
            ("", "next 0", "missing next"),
            ("sender a%0", "sender alice@example.test", "bad percent escape"),
            ("sender a%0a", "sender alice@example.test", "bad percent escape"),
            ("sender a%FF", "sender alice@example.test", "invalid UTF-8"),
            ("sender a%0A", "sender alice@example.test", "control character in sender"),
            ("sender a b", "sender alice@example.test", "space in sender value"),
            ("", "rcpt addr=bob@example.test state=pending", "no recipients"),
            ("rcpt addr=x@y state=gone", nil, "bad rcpt record"),
            ("rcpt addr=x@y state=pending color=red", nil, "unknown rcpt field"),
            ("rcpt addr=x@y addr=z@y state=pending", nil, "repeated field addr"),
            ("rcpt addr= state=pending", nil, "empty recipient"),
            ("attempt time=1 mx=a pref=1 addr=b family=c result=d ms=1", nil, "attempt without reply"),
            ("extra bad/key=1", nil, "bad extra record"),
            ("id 00000000000000", nil, "repeated id"),
        ] as [(String, String?, String)])
    func semanticErrorsAreRejected(line: String, replacing: String?, reason: String) throws {
        let id = try #require(QueueID("0M8ZK3Q1F2A7XQ"))
        var lines = String(decoding: try EnvelopeCodec.encode(sampleEnvelope(id)), as: UTF8.self)
            .split(separator: "\n").map(String.init).dropLast()  // drop END; resealed below
        if line.hasPrefix("DUALMTA") || line.hasPrefix("XDUALMTA") {
            lines[0] = line
        } else if let replacing, let index = lines.firstIndex(of: replacing) {
            lines[index] = line
            if line.isEmpty { lines.remove(at: index) }
        } else {
            lines.append(line)
        }
        #expect(throws: EnvelopeCodec.DecodeError(reason)) {
            try EnvelopeCodec.decode(sealed(Array(lines)), expectedID: id)
        }
    }

    @Test(arguments: [
        [UInt8](), Array("\n".utf8), Array("DUALMTA-ENV 1\n".utf8), [0x00, 0xFF, 0x0A, 0x41, 0x0A],
        Array("DUALMTA-ENV 1\nEND size=0 crc32=00000000\n".utf8),
    ])
    func garbageIsRejected(_ bytes: [UInt8]) {
        #expect(throws: EnvelopeCodec.DecodeError.self) {
            try EnvelopeCodec.decode(bytes, expectedID: Self.id)
        }
    }

    @Test func randomBytesAreRejected() {
        var generator = SystemRandomNumberGenerator()
        for length in [1, 10, 100, 10_000] {
            let bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
            #expect(throws: EnvelopeCodec.DecodeError.self) { try EnvelopeCodec.decode(bytes, expectedID: Self.id) }
        }
    }

    @Test func writerRefusesWhatTheReaderWouldReject() {
        var envelope = sampleEnvelope(Self.id)
        envelope.recipients = []
        #expect(throws: SpoolError.invalidEnvelope("no recipients")) { try EnvelopeCodec.encode(envelope) }
        envelope = sampleEnvelope(Self.id)
        envelope.extra["a b"] = "1"
        #expect(throws: SpoolError.self) { try EnvelopeCodec.encode(envelope) }
        envelope = sampleEnvelope(Self.id)
        envelope.sender = "a\r\nb@c"
        #expect(throws: SpoolError.invalidEnvelope("control character in sender")) {
            try EnvelopeCodec.encode(envelope)
        }
    }

    @Test func crc32MatchesTheStandardCheckValue() {
        #expect(CRC32.checksum(Array("123456789".utf8)) == 0xCBF4_3926)
        #expect(CRC32.checksum([UInt8]()) == 0)
    }

    @Test func isFinishedWhenNoRecipientIsPending() {
        var envelope = sampleEnvelope(Self.id, recipients: ["a@x.example", "b@x.example"])
        #expect(!envelope.isFinished)
        envelope.recipients[0].state = .delivered
        envelope.recipients[1].state = .failed
        #expect(envelope.isFinished)
    }
}

/// Lines plus a valid END record, as the writer would seal them.
func sealed(_ lines: [String]) -> [UInt8] {
    var bytes = Array((lines.joined(separator: "\n") + "\nEND size=0 crc32=").utf8)
    let text = String(CRC32.checksum(bytes), radix: 16)
    bytes += Array((String(repeating: "0", count: 8 - text.count) + text + "\n").utf8)
    return bytes
}
