import Testing

@testable import SMTPProtocol

extension Chunking {
    /// Splits bytes from the server as this chunking says; random chunks also get empty reads in between, which
    /// must be harmless. `salt` varies the random split between the writes of one dialog.
    func split(_ bytes: [UInt8], salt: UInt64 = 0) -> [[UInt8]] {
        switch self {
        case .whole: return [bytes]
        case .bytes: return bytes.map { [$0] }
        case .random(let seed):
            var generator = SeededGenerator(state: seed ^ (salt &* 0x9E37_79B9))
            var chunks: [[UInt8]] = []
            var index = 0
            while index < bytes.count {
                let size = Int.random(in: 1...7, using: &generator)
                chunks.append(Array(bytes[index..<min(bytes.count, index + size)]))
                if Int.random(in: 0..<5, using: &generator) == 0 { chunks.append([]) }
                index += size
            }
            return chunks
        }
    }
}

private enum ParseOutcome: Equatable {
    case replies([Reply], leftover: Bool)
    case failed(ReplyParseError, after: [Reply])
}

private func parse(_ text: String, _ feeding: Chunking) -> ParseOutcome {
    var parser = ReplyParser()
    var replies: [Reply] = []
    for chunk in feeding.split(Array(text.utf8)) {
        parser.append(chunk)
        do {
            while let reply = try parser.nextReply() { replies.append(reply) }
        } catch {
            return .failed(error, after: replies)
        }
    }
    return .replies(replies, leftover: parser.hasBufferedInput)
}

@Suite struct ReplyParserTests {
    struct Valid: Sendable, CustomTestStringConvertible {
        var name: String
        var input: String
        var expected: [Reply]
        var leftover = false
        var testDescription: String { name }
    }

    static let valid: [Valid] = [
        Valid(name: "single line", input: "250 ok\r\n", expected: [Reply(250, nil, "ok")]),
        Valid(name: "bare code", input: "354\r\n", expected: [Reply(354, nil, "")]),
        Valid(name: "code and space", input: "221 \r\n", expected: [Reply(221, nil, "")]),
        Valid(
            name: "multiline EHLO", input: "250-mx.example\r\n250-PIPELINING\r\n250 SIZE 1000\r\n",
            expected: [Reply(250, nil, "mx.example", "PIPELINING", "SIZE 1000")]),
        Valid(
            name: "enhanced status on every line",
            input: "550-5.1.1 no such user\r\n550 5.1.1 try again never\r\n",
            expected: [Reply(550, EnhancedStatus(5, 1, 1), "no such user", "try again never")]),
        Valid(
            name: "enhanced status class must match the code",
            input: "550 4.1.1 odd\r\n", expected: [Reply(550, nil, "4.1.1 odd")]),
        Valid(
            name: "status alone", input: "250 2.0.0\r\n", expected: [Reply(250, EnhancedStatus(2, 0, 0), "")]),
        Valid(
            name: "two replies in a row", input: "250 2.1.0 ok\r\n451 4.3.0 later\r\n",
            expected: [Reply(250, EnhancedStatus(2, 1, 0), "ok"), Reply(451, EnhancedStatus(4, 3, 0), "later")]),
        Valid(
            name: "partial reply is kept", input: "250-one\r\n250 tw", expected: [], leftover: true),
        Valid(
            name: "no CRLF yet (O13 250 before close)", input: "250", expected: [], leftover: true),
        Valid(
            name: "UTF-8 text", input: "250 ok \u{00E9}t\u{00E9}\r\n",
            expected: [Reply(250, nil, "ok \u{00E9}t\u{00E9}")]),
        Valid(
            name: "512-octet line is the limit",
            input: "250 " + String(repeating: "a", count: 506) + "\r\n",
            expected: [Reply(250, nil, String(repeating: "a", count: 506))]),
    ]

    @Test(arguments: valid, Chunking.all)
    func parsesValidReplies(_ sample: Valid, _ feeding: Chunking) {
        #expect(parse(sample.input, feeding) == .replies(sample.expected, leftover: sample.leftover))
    }

    struct Invalid: Sendable, CustomTestStringConvertible {
        var name: String
        var input: String
        var error: ReplyParseError
        var before: [Reply] = []
        var testDescription: String { name }
    }

    static let invalid: [Invalid] = [
        Invalid(name: "garbage code (O13)", input: "2x0 ok\r\n", error: .malformedLine),
        Invalid(name: "first digit 1", input: "150 ok\r\n", error: .malformedLine),
        Invalid(name: "first digit 6", input: "600 ok\r\n", error: .malformedLine),
        Invalid(name: "two digits", input: "25\r\n", error: .malformedLine),
        Invalid(name: "bad separator", input: "250_ok\r\n", error: .malformedLine),
        Invalid(name: "empty line", input: "\r\n", error: .malformedLine),
        Invalid(
            name: "mixed codes (O13)", input: "250-one\r\n251 two\r\n", error: .mixedCodes(first: 250, then: 251)),
        Invalid(name: "bare LF", input: "250 ok\n", error: .badLineEnding),
        Invalid(name: "bare CR inside a line", input: "250 ok\r250 injected\r\n", error: .badLineEnding),
        Invalid(name: "NUL inside a line", input: "250 ok\u{0}\r\n", error: .badLineEnding),
        Invalid(
            name: "600-octet line (O13)", input: "250 " + String(repeating: "a", count: 596) + "\r\n",
            error: .lineTooLong),
        Invalid(
            name: "513-octet line", input: "250 " + String(repeating: "a", count: 507) + "\r\n", error: .lineTooLong),
        Invalid(
            name: "endless line without CRLF", input: "250 " + String(repeating: "a", count: 600),
            error: .lineTooLong),
        Invalid(
            name: "error after a good reply", input: "250 ok\r\nxyz\r\n", error: .malformedLine,
            before: [Reply(250, nil, "ok")]),
        Invalid(
            name: "more than 1000 lines", input: String(repeating: "250-x\r\n", count: 1000) + "250 x\r\n",
            error: .tooManyLines),
    ]

    @Test(arguments: invalid, Chunking.all)
    func rejectsInvalidReplies(_ sample: Invalid, _ feeding: Chunking) {
        #expect(parse(sample.input, feeding) == .failed(sample.error, after: sample.before))
    }

    @Test func oneThousandLinesAreAccepted() {
        let input = String(repeating: "250-x\r\n", count: 999) + "250 x\r\n"
        guard case .replies(let replies, false) = parse(input, .whole) else {
            Issue.record("expected one reply")
            return
        }
        #expect(replies.count == 1)
        #expect(replies.first?.lines.count == 1000)
    }

    @Test func staysFailedAfterAnError() {
        var parser = ReplyParser()
        parser.append(Array("2x0\r\n".utf8))
        #expect(throws: ReplyParseError.malformedLine) { try parser.nextReply() }
        parser.append(Array("250 ok\r\n".utf8))
        #expect(throws: ReplyParseError.malformedLine) { try parser.nextReply() }
    }

    @Test(arguments: [
        (Reply(250, nil, "ok"), EnhancedStatus(2, 0, 0)),
        (Reply(451, nil, "later"), EnhancedStatus(4, 0, 0)),
        (Reply(550, EnhancedStatus(5, 1, 1), "no"), EnhancedStatus(5, 1, 1)),
    ])
    func effectiveStatusFallsBackToTheFirstDigit(_ reply: Reply, _ expected: EnhancedStatus) {
        #expect(reply.effectiveStatus == expected)
    }

    /// A combining mark right after the status's space makes " ͬ" one Character: the status must still be split
    /// off (octet comparison), or a reply changes on its way through encode and parse (found by FuzzReply).
    @Test func combiningMarkAfterTheStatusStillRoundTrips() throws {
        var parser = ReplyParser()
        parser.append(Array("550-5.1.1\r\n550 \u{036C}x\r\n".utf8))
        let reply = try #require(try parser.nextReply())
        #expect(reply.status == EnhancedStatus(5, 1, 1))
        #expect(reply.lines == ["", "\u{036C}x"])
        var again = ReplyParser()
        again.append(reply.encoded)
        #expect(try again.nextReply() == reply)

        var stripped = ReplyParser()
        stripped.append(Array("550 5.1.1 \u{036C}x\r\n".utf8))
        #expect(try stripped.nextReply()?.lines == ["\u{036C}x"])
    }

    @Test func roundTripsItsOwnEncoding() throws {
        let reply = Reply(552, EnhancedStatus(5, 3, 4), "too big", "really")
        var parser = ReplyParser()
        parser.append(reply.encoded)
        #expect(try parser.nextReply() == reply)
        #expect(!parser.hasBufferedInput)
    }
}
