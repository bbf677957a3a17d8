import NetAddress
import SMTPProtocol
import Testing

/// The DATA phase through the public session API: un-stuffing, the end-of-data rule, smuggling variants, limits.
@Suite struct DataDecoderTests {
    static let open = ["EHLO t.example\r\n", "MAIL FROM:<a@r.example>\r\nRCPT TO:<u@lab.example>\r\nDATA\r\n"]

    /// Sends `body` (one write) after a 354 and returns the harness.
    private func deliver(
        _ body: [UInt8], _ chunking: Chunking = .whole,
        configuration: ServerSession.Configuration = Lab.configuration()
    ) -> Harness {
        var harness = Harness(configuration: configuration)
        harness.writes(Self.open)
        harness.write(body, chunking)
        return harness
    }

    private func deliver(_ body: String, _ chunking: Chunking = .whole) -> Harness {
        deliver(Array(body.utf8), chunking)
    }

    /// Codes after EHLO, MAIL, RCPT and the 354.
    private func resultCodes(_ harness: Harness) -> [String] { Array(harness.codes.dropFirst(5)) }

    @Test(arguments: [
        ("..leading\r\n.\r\n", ".leading\r\n"),  // B13
        (".\r\n", ""),  // B14
        ("a\r\n.\r\n", "a\r\n"),
        ("...\r\n.\r\n", "..\r\n"),
        (".x\r\n.\r\n", "x\r\n"),
        ("a\r\n..\r\n.\r\n", "a\r\n.\r\n"),
        ("a\r\n. \r\n.\r\n", "a\r\n \r\n"),
        ("a.\r\n.b\r\n.\r\n", "a.\r\nb\r\n"),
        ("\r\n\r\n.\r\n", "\r\n\r\n"),
        ("x\r\n.\r\n", "x\r\n"),
        ("caf\u{e9} 8bit\r\n.\r\n", "caf\u{e9} 8bit\r\n"),
    ])
    func unstuffing(body: String, stored: String) {
        for chunking in Chunking.all {
            let harness = deliver(body, chunking)
            #expect(resultCodes(harness) == ["250 2.0.0"], "\(chunking)")
            #expect(harness.bodies == [Array(stored.utf8)], "\(chunking)")
            #expect(harness.commits == 1)
        }
    }

    @Test func endOfDataSplitAcrossWrites() {  // B15
        var harness = Harness()
        harness.writes(Self.open)
        for piece in ["body", "\r\n", ".", "\r", "\n"] { harness.write(piece) }
        #expect(resultCodes(harness) == ["250 2.0.0"])
        #expect(harness.bodies == [Array("body\r\n".utf8)])
        #expect(harness.commits == 1)
    }

    @Test func textLineLimit() {  // B10, B11
        let b10 = "l1\r\n" + String(repeating: "x", count: 998) + "\r\n.\r\n"
        #expect(resultCodes(deliver(b10)) == ["250 2.0.0"])
        // The limit applies after un-stuffing: a stuffed 998-octet line is fine.
        #expect(resultCodes(deliver("." + String(repeating: ".", count: 998) + "\r\n.\r\n")) == ["250 2.0.0"])
        for chunking in Chunking.all {
            var harness = deliver("l1\r\n" + String(repeating: "x", count: 999) + "\r\n.\r\n", chunking)
            #expect(resultCodes(harness) == ["554 5.6.0"], "\(chunking)")
            #expect(harness.replies.last == "554 5.6.0 Error: message line too long")
            #expect(harness.commits == 0 && harness.aborts == 1)
            harness.write("NOOP\r\n")  // the session continues
            #expect(harness.codes.last == "250 2.0.0")
        }
    }

    @Test func nulInDataIsRejected() {  // B12
        var harness = deliver("a\u{0}b\r\n.\r\n")
        #expect(resultCodes(harness) == ["554 5.6.0"])
        #expect(harness.commits == 0 && harness.aborts == 1 && !harness.session.isClosed)
        harness.write("RCPT TO:<u@lab.example>\r\n")  // the transaction is gone
        #expect(harness.codes.last == "503 5.5.1")
    }

    @Test func messageSizeLimit() {  // L02
        let configuration = Lab.configuration(maxMessageSize: 100)
        let exact = String(repeating: "y", count: 98) + "\r\n"
        #expect(resultCodes(deliver(Array((exact + ".\r\n").utf8), configuration: configuration)) == ["250 2.0.0"])
        for chunking in Chunking.all {
            var harness = deliver(Array((exact + "z\r\n.\r\n").utf8), chunking, configuration: configuration)
            #expect(harness.replies.last == "552 5.3.4 Message size exceeds fixed maximum message size", "\(chunking)")
            #expect(harness.commits == 0 && harness.aborts == 1)
            harness.write("NOOP\r\n")
            #expect(harness.codes.last == "250 2.0.0")
        }
        // A big body is read to its end without emitting data past the limit.
        let big = deliver(
            Array((String(repeating: String(repeating: "b", count: 78) + "\r\n", count: 1000) + ".\r\n").utf8),
            configuration: configuration)
        #expect(big.codes.last == "552 5.3.4")
        #expect((big.bodies.first?.count ?? 0) <= 100)
    }

    @Test func hopCount() {  // M01
        let fifty = String(repeating: "Received: from x by y; date\r\n", count: 49) + "RECEIVED: from z\r\n"
        #expect(resultCodes(deliver(fifty + "Subject: s\r\n\r\nbody\r\n.\r\n")) == ["250 2.0.0"])
        for chunking in Chunking.all {
            let harness = deliver(fifty + "received:\tfrom w\r\n\r\nbody\r\n.\r\n", chunking)
            #expect(harness.replies.last == "554 5.4.6 Error: too many hops", "\(chunking)")
            #expect(harness.aborts == 1 && harness.commits == 0)
        }
        // Only the header section counts; continuation lines and lookalikes do not.
        let body = fifty + "X-Received: a\r\n Received: b\r\nReceivedX: c\r\n\r\n" + "Received: in body\r\n.\r\n"
        #expect(resultCodes(deliver(body)) == ["250 2.0.0"])
    }

    // MARK: SMTP smuggling (S01–S12)

    static let smuggled =
        "MAIL FROM:<admin@victim.example>\r\nRCPT TO:<u@lab.example>\r\nDATA\r\nSubject: SMUGGLED\r\n\r\nx\r\n.\r\n"

    static let endOfDataVariants: [(id: String, eod: String)] = [
        ("S01", "\n.\n"), ("S02", "\n.\r"), ("S03", "\r.\n"), ("S04", "\r.\r"), ("S05", "\n.\r\n"), ("S06", "\r.\r\n"),
        ("S08", "\r\n.\r\r\n"), ("S09", "\r\r\n.\r\r\n"), ("S10", "\r\n.\n"), ("S11", "\r\n.\r"),
    ]

    @Test(arguments: endOfDataVariants.map(\.id))
    func smugglingVariantsNeverEndData(id: String) {
        guard let eod = Self.endOfDataVariants.first(where: { $0.id == id })?.eod else { return }
        let body = "Subject: outer\r\n\r\nouter" + eod + Self.smuggled
        for chunking in Chunking.all {
            let harness = deliver(body, chunking)
            #expect(resultCodes(harness) == ["554 5.5.2"], "\(id) \(chunking)")
            #expect(harness.replies.last == "554 5.5.2 Error: bare <CR> or <LF> received")
            #expect(harness.commits == 0, "\(id) \(chunking)")
            #expect(harness.aborts == 1)
            #expect(harness.closed)
            // Never a second MAIL accepted.
            #expect(harness.codes.filter { $0 == "250 2.1.0" }.count == 1)
        }
    }

    @Test func nulBeforeDotIsNotAnEnd() {  // S07: NUL policy answers 554 5.6.0, still nothing queued
        let body = "Subject: outer\r\n\r\nouter\r\n\u{0}.\r\n" + Self.smuggled
        for chunking in Chunking.all {
            let harness = deliver(body, chunking)
            #expect(resultCodes(harness) == ["554 5.6.0"], "\(chunking)")
            #expect(harness.commits == 0 && harness.aborts == 1)
            #expect(harness.codes.filter { $0 == "250 2.1.0" }.count == 1)
        }
    }

    @Test func realEndFollowedByPipelinedDataIsASyncError() {  // S12
        let body = "Subject: outer\r\n\r\nouter\r\n.\r\n" + Self.smuggled
        for chunking in [Chunking.whole] {
            let harness = deliver(body, chunking)
            #expect(resultCodes(harness) == ["250 2.0.0", "250 2.1.0", "250 2.1.5", "554 5.5.0"])
            #expect(harness.commits == 1)
            #expect(harness.closed)
            #expect(harness.bodies == [Array("Subject: outer\r\n\r\nouter\r\n".utf8)])
        }
    }

    @Test(arguments: ["a\nb\r\n.\r\n", "a\rb\r\n.\r\n", "a\r\r\n.\r\n", "\n.\r\n.\r\n", "x\r\n\r.\r\n.\r\n"])
    func bareLineEndingsInBody(body: String) {
        for chunking in Chunking.all {
            let harness = deliver(body, chunking)
            #expect(resultCodes(harness) == ["554 5.5.2"], "\(chunking)")
            #expect(harness.commits == 0 && harness.aborts == 1 && harness.closed)
        }
    }

    @Test func bareLineEndingWinsOverOtherProblems() {
        let body = String(repeating: "x", count: 2000) + "\r\na\u{0}\nb\r\n.\r\n"
        #expect(resultCodes(deliver(body)) == ["554 5.5.2"])
    }

    // MARK: Throughput shape

    @Test func largeBodiesComeInLargeChunks() {
        let line = Array((String(repeating: "m", count: 76) + "\r\n").utf8)
        var body: [UInt8] = []
        for _ in 0..<13_000 { body += line }  // ~1 MB
        var harness = Harness()
        harness.writes(Self.open)
        let dataStart = harness.actions.count
        var offset = 0
        while offset < body.count {  // 64 KiB reads, as a driver would do
            let end = min(body.count, offset + 65_536)
            harness.write(Array(body[offset..<end]))
            offset = end
        }
        harness.write(".\r\n")
        let chunks = harness.actions[dataStart...].filter { if case .messageData = $0 { true } else { false } }
        #expect(chunks.count <= body.count / 65_536 + 2)
        #expect(harness.bodies == [body])
        #expect(harness.codes.last == "250 2.0.0")
    }

    @Test func dotStuffedOutputRoundTrips() {  // S13 mirror: our own stuffing decodes to the same bytes
        let original = Array("Subject: x\r\n\r\n.hidden\r\n..two\r\n.\r\nplain\r\n".utf8)
        let harness = deliver(OutboundBody.encode(original))
        #expect(harness.bodies == [original])
        #expect(harness.commits == 1)
    }
}
