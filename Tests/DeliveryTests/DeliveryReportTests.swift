import Foundation
import Testing

@testable import Delivery

/// Reports are checked twice: by a real MIME parser (Python's `email` package, run as a child process) for the
/// structure consumers see, and byte-wise in Swift for the wire rules (CRLF, 998 octets, ASCII part 2, boundary).
@Suite struct DeliveryReportTests {
    // MARK: Fixtures

    static let arrival = Date(timeIntervalSince1970: 1_715_680_682)  // Tue, 14 May 2024 09:58:02 +0000
    static let lastAttempt = Date(timeIntervalSince1970: 1_715_680_800)  // 10:00:00
    static let now = Date(timeIntervalSince1970: 1_715_680_801)
    static let retryUntil = Date(timeIntervalSince1970: 1_716_112_682)  // arrival + 5 days

    static func originalBytes(bodyLines: Int = 3, extraHeader: String = "") -> [UInt8] {
        var text =
            "Received: from client.site-a.example by mx.site-b.example\r\n"
            + "From: Alice <alice@site-a.example>\r\nTo: <bob@site-c.example>\r\n"
            + "Subject: lunch on Friday?\r\nMessage-ID: <m1@site-a.example>\r\n" + extraHeader + "\r\n"
        for index in 0..<bodyLines { text += "body line \(index) of the original message\r\n" }
        return Array(text.utf8)
    }

    static func original(sender: String = "alice@site-a.example", bytes: [UInt8] = originalBytes()) -> OriginalMessage {
        OriginalMessage(
            queueID: "Q1A2B3C4D5", sender: sender, arrival: arrival, receivedFromMTA: "client.site-a.example",
            envelopeID: nil, bytes: bytes)
    }

    static let rejected = RecipientReport(
        finalRecipient: "bob@site-c.example", action: .failed, status: "5.1.1", remoteMTA: "mx10.site-c.example",
        remoteAddress: "[2001:db8::1]",
        diagnostic: .smtp("550 5.1.1 <bob@site-c.example>: Recipient address rejected"),
        explanation: "the recipient's mail server says this mailbox does not exist", lastAttempt: lastAttempt)

    static let unreachable = RecipientReport(
        finalRecipient: "carol@v6only.test", originalRecipient: "rfc822;Carol@V6only.test", action: .failed,
        status: "4.4.1", remoteMTA: "mx.v6only.test", remoteAddress: "[2001:db8:66::25]",
        diagnostic: .local("connect to [2001:db8:66::25]:25: No route to host"),
        explanation: "the recipient's domain has only IPv6 mail servers and this host is IPv4-only",
        lastAttempt: lastAttempt)

    static let delayed = RecipientReport(
        finalRecipient: "dave@site-d.example", action: .delayed, status: "4.4.1", remoteMTA: "mx.site-d.example",
        remoteAddress: "[192.0.2.25]", diagnostic: .local("connect to [192.0.2.25]:25: Connection timed out"),
        explanation: "the server did not answer", lastAttempt: lastAttempt, willRetryUntil: retryUntil)

    static func bounce(
        _ recipients: [RecipientReport] = [rejected], original: OriginalMessage = original(),
        returnContent: ReturnContent = .full, seed: String = "R9X8Y7"
    ) -> [UInt8] {
        DeliveryReport.compose(
            reportingMTA: "mx.site-b.example", original: original, recipients: recipients,
            returnContent: returnContent, now: now, messageIDSeed: seed)
    }

    /// RFC 6533: a report about an SMTPUTF8 message uses the global types; a local cause reads as ours.
    @Test(arguments: [(ReturnContent.full, "message/global"), (.headers, "message/global-headers")])
    func internationalReportsUseTheGlobalTypes(returnContent: ReturnContent, third: String) {
        let bytes = DeliveryReport.compose(
            reportingMTA: "mx.site-b.example",
            original: Self.original(
                sender: "j\u{F6}rg@site-a.example",
                bytes: Self.originalBytes(extraHeader: "X-Name: J\u{F6}rg\r\n")),
            recipients: [Self.unreachable], returnContent: returnContent, now: Self.now, messageIDSeed: "G1",
            international: true)
        let text = String(decoding: bytes, as: UTF8.self)
        #expect(text.contains("\r\nContent-Type: message/global-delivery-status\r\n"))
        #expect(text.contains("\r\nContent-Type: \(third)\r\n"))
        #expect(!text.contains("message/delivery-status") && !text.contains("message/rfc822"))
        #expect(text.contains("This server decided: connect to [2001:db8:66::25]:25"))
        #expect(text.contains("Diagnostic-Code: x-dualmta; connect to"))
    }

    // MARK: Parsed by Python's email package

    @Test(.enabled(if: MIMEParser.enabled, MIMEParser.skipMessage))
    func aRejectedRecipientGivesAThreePartReport() throws {
        let parsed = try MIMEParser.parse(Self.bounce())
        #expect(parsed.defects.isEmpty)
        #expect(parsed.contentType == "multipart/report")
        #expect(parsed.reportType == "delivery-status")
        #expect(parsed.headers["From"] == "Mail Delivery System <MAILER-DAEMON@mx.site-b.example>")
        #expect(parsed.headers["To"] == "<alice@site-a.example>")
        #expect(parsed.headers["Subject"] == "Undelivered Mail Returned to Sender")
        #expect(parsed.headers["Auto-Submitted"] == "auto-replied")
        #expect(parsed.headers["MIME-Version"] == "1.0")
        #expect(parsed.headers["Message-ID"]?.hasSuffix("@mx.site-b.example>") == true)
        #expect(parsed.date == Self.now.timeIntervalSince1970.rounded(.down))
        #expect(parsed.parts.map(\.type) == ["text/plain", "message/delivery-status", "message/rfc822"])

        let text = Self.flat(try #require(parsed.parts[0].text))
        for needle in [
            "bob@site-c.example", "5.1.1", "mx10.site-c.example [2001:db8::1]",
            "550 5.1.1 <bob@site-c.example>: Recipient address rejected",
            "the recipient's mail server says this mailbox does not exist", "Q1A2B3C4D5",
        ] {
            #expect(text.contains(needle), "human text lacks \(needle)")
        }

        let groups = try #require(parsed.parts[1].groups)
        #expect(groups.count == 2)
        #expect(groups[0]["Reporting-MTA"] == "dns; mx.site-b.example")
        #expect(groups[0]["Received-From-MTA"] == "dns; client.site-a.example")
        #expect(groups[0]["Original-Envelope-Id"] == nil)
        #expect(parsed.parts[1].dates?[0]["Arrival-Date"] == Self.arrival.timeIntervalSince1970)
        #expect(groups[1]["Final-Recipient"] == "rfc822; bob@site-c.example")
        #expect(groups[1]["Action"] == "failed")
        #expect(groups[1]["Status"] == "5.1.1")
        #expect(groups[1]["Remote-MTA"] == "dns; mx10.site-c.example")
        #expect(groups[1]["Diagnostic-Code"] == "smtp; 550 5.1.1 <bob@site-c.example>: Recipient address rejected")
        #expect(groups[1]["Final-Log-ID"] == "Q1A2B3C4D5")
        #expect(groups[1]["Will-Retry-Until"] == nil)
        #expect(groups[1]["Original-Recipient"] == nil)
        #expect(parsed.parts[1].dates?[1]["Last-Attempt-Date"] == Self.lastAttempt.timeIntervalSince1970)

        #expect(parsed.parts[2].innerHeaders?["Subject"] == "lunch on Friday?")
        #expect(parsed.parts[2].innerBody?.contains("body line 2 of the original message") == true)
    }

    @Test(.enabled(if: MIMEParser.enabled, MIMEParser.skipMessage))
    func twoRecipientsGiveTwoGroupsWithTheirOptionalFields() throws {
        var original = Self.original()
        original.envelopeID = "abc+d"
        let parsed = try MIMEParser.parse(Self.bounce([Self.rejected, Self.unreachable], original: original))
        #expect(parsed.defects.isEmpty)
        let groups = try #require(parsed.parts[1].groups)
        #expect(groups.count == 3)
        #expect(groups[0]["Original-Envelope-Id"] == "abc+d")
        #expect(groups[1]["Final-Recipient"] == "rfc822; bob@site-c.example")
        #expect(groups[2]["Final-Recipient"] == "rfc822; carol@v6only.test")
        #expect(groups[2]["Original-Recipient"] == "rfc822; Carol@V6only.test")
        #expect(groups[2]["Status"] == "4.4.1")
        #expect(groups[2]["Remote-MTA"] == "dns; mx.v6only.test")
        #expect(groups[2]["Diagnostic-Code"] == "x-dualmta; connect to [2001:db8:66::25]:25: No route to host")
        let text = Self.flat(try #require(parsed.parts[0].text))
        #expect(text.contains("IPv6 mail servers and this host is IPv4-only"))
        #expect(text.contains("mx.v6only.test [2001:db8:66::25]"))
    }

    @Test(.enabled(if: MIMEParser.enabled, MIMEParser.skipMessage))
    func aDelayNoticeCarriesWillRetryUntilAndHeadersOnly() throws {
        let parsed = try MIMEParser.parse(Self.bounce([Self.delayed], returnContent: .full))
        #expect(parsed.defects.isEmpty)
        #expect(parsed.headers["Subject"] == "Delayed Mail (still being retried)")
        #expect(parsed.parts.map(\.type) == ["text/plain", "message/delivery-status", "text/rfc822-headers"])
        let groups = try #require(parsed.parts[1].groups)
        #expect(groups[1]["Action"] == "delayed")
        #expect(parsed.parts[1].dates?[1]["Will-Retry-Until"] == Self.retryUntil.timeIntervalSince1970)
        let text = Self.flat(try #require(parsed.parts[0].text))
        #expect(text.contains("until Sun, 19 May 2024 09:58:02 +0000"))
        #expect(parsed.parts[2].text?.contains("Subject: lunch on Friday?") == true)
        #expect(parsed.parts[2].text?.contains("body line") == false)
    }

    @Test(.enabled(if: MIMEParser.enabled, MIMEParser.skipMessage))
    func willRetryUntilIsLeftOutForAFailedRecipient() throws {
        var failed = Self.delayed
        failed.action = .failed
        let parsed = try MIMEParser.parse(Self.bounce([failed]))
        #expect(parsed.parts[1].groups?[1]["Will-Retry-Until"] == nil)
        #expect(parsed.parts[1].groups?[1]["Action"] == "failed")
    }

    @Test(
        .enabled(if: MIMEParser.enabled, MIMEParser.skipMessage),
        arguments: [
            (ReturnContent.full, 3, "message/rfc822"),
            (ReturnContent.headers, 3, "text/rfc822-headers"),
            (ReturnContent.automatic, 3, "message/rfc822"),
            (ReturnContent.automatic, 2_000, "text/rfc822-headers"),  // about 80 kB > 50 000
            (ReturnContent.full, 2_000, "message/rfc822"),
        ])
    func partThreeFollowsReturnContent(returnContent: ReturnContent, bodyLines: Int, expectedType: String) throws {
        let original = Self.original(bytes: Self.originalBytes(bodyLines: bodyLines))
        let parsed = try MIMEParser.parse(Self.bounce(original: original, returnContent: returnContent))
        #expect(parsed.defects.isEmpty)
        #expect(parsed.parts.count == 3)
        #expect(parsed.parts.last?.type == expectedType)
        if expectedType == "message/rfc822" {
            #expect(parsed.parts[2].innerBody?.contains("body line \(bodyLines - 1) ") == true)
        } else {
            #expect(parsed.parts[2].text?.contains("Message-ID: <m1@site-a.example>") == true)
        }
    }

    @Test(.enabled(if: MIMEParser.enabled, MIMEParser.skipMessage))
    func aDoubleBounceNoticeNamesBothQueueIDs() throws {
        // The NDR of the paper's Test 3: null sender, undeliverable to the IPv6-only sender domain.
        let ndr = Self.bounce()
        let failed = OriginalMessage(
            queueID: "NDR0000001", sender: "", arrival: Self.lastAttempt, receivedFromMTA: nil, envelopeID: nil,
            bytes: ndr)
        let reason = RecipientReport(
            finalRecipient: "alice@v6only.test", action: .failed, status: "5.4.4",
            explanation: "no MX host for v6only.test has an address of a usable family (this host is IPv4-only)")
        let notice = DeliveryReport.doubleBounceNotice(
            reportingMTA: "mx.site-b.example", postmaster: "postmaster", failed: failed,
            originalQueueID: "Q1A2B3C4D5", recipients: [reason], now: Self.now, messageIDSeed: "DB1")
        let parsed = try MIMEParser.parse(notice)
        #expect(parsed.defects.isEmpty)
        #expect(parsed.contentType == "multipart/report")
        #expect(parsed.reportType == "delivery-status")
        #expect(parsed.headers["From"] == "Mail Delivery System <double-bounce@mx.site-b.example>")
        #expect(parsed.headers["To"] == "<postmaster@mx.site-b.example>")
        let subject = try #require(parsed.headers["Subject"])
        #expect(subject.hasPrefix("Undeliverable bounce: "))
        #expect(subject.contains("NDR0000001") && subject.contains("Q1A2B3C4D5"))
        #expect(parsed.parts.map(\.type) == ["text/plain", "message/delivery-status", "text/rfc822-headers"])
        let text = Self.flat(try #require(parsed.parts[0].text))
        #expect(text.contains("queue id NDR0000001"))
        #expect(text.contains("queue id Q1A2B3C4D5"))
        #expect(text.contains("no MX host for v6only.test has an address of a usable family"))
        let groups = try #require(parsed.parts[1].groups)
        #expect(groups.count == 2)
        #expect(groups[0]["X-Dualmta-Original-Log-ID"] == "Q1A2B3C4D5")
        #expect(groups[1]["Final-Recipient"] == "rfc822; alice@v6only.test")
        #expect(groups[1]["Status"] == "5.4.4")
        #expect(groups[1]["Final-Log-ID"] == "NDR0000001")
        let headers = try #require(parsed.parts[2].text)
        #expect(headers.contains("Subject: Undelivered Mail Returned to Sender"))
        #expect(headers.contains("To: <alice@site-a.example>"))
    }

    @Test(.enabled(if: MIMEParser.enabled, MIMEParser.skipMessage))
    func aDoubleBounceWithoutTheOriginalIDSaysSo() throws {
        let failed = OriginalMessage(queueID: "NDR2", sender: "", arrival: Self.arrival, bytes: Self.originalBytes())
        let notice = DeliveryReport.doubleBounceNotice(
            reportingMTA: "mx.site-b.example", postmaster: "hostmaster@lab.example", failed: failed,
            originalQueueID: nil, recipients: [Self.rejected], now: Self.now, messageIDSeed: "DB2")
        let parsed = try MIMEParser.parse(notice)
        #expect(parsed.defects.isEmpty)
        #expect(parsed.headers["To"] == "<hostmaster@lab.example>")
        #expect(parsed.parts[0].text.map(Self.flat)?.contains("Original message: not known") == true)
        #expect(parsed.parts[1].groups?[0]["X-Dualmta-Original-Log-ID"] == nil)
    }

    @Test(.enabled(if: MIMEParser.enabled, MIMEParser.skipMessage))
    func aLongDiagnosticIsFoldedAndUnfoldsToTheSameText() throws {
        let words = (0..<120).map { "word\($0)" }.joined(separator: " ")
        var recipient = Self.rejected
        recipient.diagnostic = .smtp("550-5.1.1 first line 550 5.1.1 " + words)
        let bytes = Self.bounce([recipient])
        let parsed = try MIMEParser.parse(bytes)
        #expect(parsed.defects.isEmpty)
        #expect(parsed.parts[1].groups?[1]["Diagnostic-Code"] == "smtp; 550-5.1.1 first line 550 5.1.1 " + words)
        #expect(Self.lines(bytes).allSatisfy { $0.count <= 78 || !$0.starts(with: Array("Diagnostic".utf8)) })
    }

    @Test(.enabled(if: MIMEParser.enabled, MIMEParser.skipMessage))
    func aUTF8AddressIsEscapedInPartTwoAndReadableInPartOne() throws {
        var recipient = Self.rejected
        recipient.finalRecipient = "jösé@exämple.test"
        recipient.diagnostic = .smtp("550 5.1.1 <jösé@exämple.test>: unknown")
        let parsed = try MIMEParser.parse(Self.bounce([recipient]))
        #expect(parsed.defects.isEmpty)
        let group = try #require(parsed.parts[1].groups?[1])
        #expect(group["Final-Recipient"] == "utf-8; j\\x{F6}s\\x{E9}@ex\\x{E4}mple.test")
        #expect(group["Diagnostic-Code"] == "smtp; 550 5.1.1 <j\\x{F6}s\\x{E9}@ex\\x{E4}mple.test>: unknown")
        #expect(parsed.parts[0].charset == "utf-8")
        #expect(parsed.parts[0].text.map(Self.flat)?.contains("<jösé@exämple.test>: delivery failed") == true)
    }

    // MARK: Wire rules, checked byte-wise

    /// Inputs meant to break the rules: long unbroken diagnostics, header lines over 998 octets, bare LF, UTF-8.
    static let hostile: [(String, [UInt8])] = {
        let longWord = String(repeating: "x", count: 3_000)
        let longHeader = "X-Long: " + String(repeating: "é", count: 1_500) + "\r\n"
        var recipient = rejected
        recipient.finalRecipient = "ünïcode@exämple.test"
        recipient.diagnostic = .smtp("550 " + longWord + " then\r\nInjected: yes \u{0} end")
        recipient.explanation = String(repeating: "explanation ", count: 200) + longWord
        var delayedHostile = delayed
        delayedHostile.remoteMTA = "mx.\u{1F600}.example"
        let bareLF = Array("Subject: bare\nX-A: b\r\rbody\nline\n".utf8)
        let longBody = originalBytes(bodyLines: 2) + Array((String(repeating: "y", count: 2_000) + "\r\n").utf8)
        let withLongHeader = original(bytes: originalBytes(extraHeader: longHeader))
        let failedBounce = OriginalMessage(queueID: "N1", sender: "", arrival: arrival, bytes: bounce([recipient]))
        let notice = DeliveryReport.doubleBounceNotice(
            reportingMTA: "mx.site-b.example", postmaster: "postmaster", failed: failedBounce, originalQueueID: "Q1",
            recipients: [recipient], now: now, messageIDSeed: "s")
        return [
            ("plain", bounce()),
            ("long everything", bounce([recipient, delayedHostile], original: withLongHeader)),
            ("bare line ends", bounce(original: original(bytes: bareLF))),
            ("long body line", bounce(original: original(bytes: longBody))),
            ("headers of long header", bounce(original: withLongHeader, returnContent: .headers)),
            ("double bounce", notice),
        ]
    }()

    static func lines(_ bytes: [UInt8]) -> [ArraySlice<UInt8>] {
        var result: [ArraySlice<UInt8>] = []
        var start = 0
        var index = 0
        while index + 1 < bytes.count {
            if bytes[index] == 13 && bytes[index + 1] == 10 {
                result.append(bytes[start..<index])
                index += 2
                start = index
            } else {
                index += 1
            }
        }
        if start < bytes.count { result.append(bytes[start...]) }
        return result
    }

    @Test(arguments: hostile.indices)
    func onlyCRLFAndNoLineOver998Octets(index: Int) {
        let (name, bytes) = Self.hostile[index]
        #expect(bytes.suffix(2).elementsEqual([13, 10]), "\(name): no final CRLF")
        for (offset, byte) in bytes.enumerated() {
            if byte == 10 {
                #expect(offset > 0 && bytes[offset - 1] == 13, "\(name): bare LF at \(offset)")
                if !(offset > 0 && bytes[offset - 1] == 13) { break }
            } else if byte == 13 {
                #expect(offset + 1 < bytes.count && bytes[offset + 1] == 10, "\(name): bare CR at \(offset)")
                if !(offset + 1 < bytes.count && bytes[offset + 1] == 10) { break }
            }
        }
        let longest = Self.lines(bytes).map(\.count).max() ?? 0
        #expect(longest <= 998, "\(name): a line of \(longest) octets")
        #expect(!bytes.contains(0), "\(name): NUL")
    }

    @Test(.enabled(if: MIMEParser.enabled, MIMEParser.skipMessage), arguments: hostile.indices)
    func hostileInputsStillParseAsThreePartReports(index: Int) throws {
        let (name, bytes) = Self.hostile[index]
        let parsed = try MIMEParser.parse(bytes)
        #expect(parsed.defects.isEmpty, "\(name)")
        #expect(parsed.reportType == "delivery-status", "\(name)")
        #expect(parsed.parts.count == 3, "\(name)")
        #expect(parsed.parts[1].groups?.allSatisfy { $0["Injected"] == nil } == true, "\(name)")
        #expect(parsed.parts[1].groups?.dropFirst().allSatisfy { $0["Final-Recipient"] != nil } == true, "\(name)")
    }

    @Test(arguments: hostile.indices)
    func theDeliveryStatusPartIsASCIIWithoutInjectedFields(index: Int) throws {
        let (name, bytes) = Self.hostile[index]
        let part = try #require(Self.partBody(bytes, type: "message/delivery-status"), "\(name)")
        #expect(part.allSatisfy { $0 < 0x80 }, "\(name)")
        let text = String(decoding: part, as: UTF8.self)
        #expect(!text.contains("\r\nInjected:"), "\(name)")
    }

    @Test(arguments: hostile.indices)
    func theBoundaryOccursOnlyAsDelimiter(index: Int) throws {
        let (name, bytes) = Self.hostile[index]
        let boundary = try #require(Self.boundary(of: bytes), "\(name)")
        let delimiterLines = Self.lines(bytes).filter { $0.starts(with: Array("--\(boundary)".utf8)) }
        #expect(delimiterLines.count == 4, "\(name)")
        #expect(Self.occurrences(of: Array(boundary.utf8), in: bytes) == 5, "\(name): header + 4 delimiters")
    }

    @Test func aBoundaryFoundInTheOriginalIsNotReused() throws {
        let first = try #require(Self.boundary(of: Self.bounce()))
        let tricky = Self.originalBytes() + Array("--\(first)\r\n--\(first).1\r\n".utf8)
        let bytes = Self.bounce(original: Self.original(bytes: tricky))
        let second = try #require(Self.boundary(of: bytes))
        #expect(second != first)
        #expect(Self.occurrences(of: Array(second.utf8), in: bytes) == 5)
    }

    @Test func equalInputsGiveEqualBytes() {
        #expect(Self.bounce() == Self.bounce())
        #expect(Self.bounce(seed: "A") != Self.bounce(seed: "B"))
        let text = String(decoding: Self.bounce(seed: "A/B 1"), as: UTF8.self)
        #expect(text.contains("Message-ID: <20240514100001.A=2FB=201@mx.site-b.example>\r\n"))
        #expect(text.contains("Date: Tue, 14 May 2024 10:00:01 +0000\r\n"))
    }

    @Test(arguments: [
        (0.0, "Thu, 1 Jan 1970 00:00:00 +0000"),
        (-1.0, "Wed, 31 Dec 1969 23:59:59 +0000"),
        (951_782_400.0, "Tue, 29 Feb 2000 00:00:00 +0000"),
        (1_715_680_682.9, "Tue, 14 May 2024 09:58:02 +0000"),
        (4_102_444_800.0, "Fri, 1 Jan 2100 00:00:00 +0000"),
        (Double.infinity, "Fri, 31 Dec 9999 23:59:59 +0000"),
        (Double.nan, "Thu, 1 Jan 1970 00:00:00 +0000"),
    ])
    func datesAreRFC5322InUTC(seconds: Double, expected: String) {
        #expect(ReportFormat.rfc5322Date(Date(timeIntervalSince1970: seconds)) == expected)
    }

    @Test(arguments: [
        ("5.1.1", "5.1.1"), ("4.4.7", "4.4.7"), ("550", "5.0.0"), ("5.1.1\r\nX: y", "5.0.0"),
        ("9.1.1", "5.0.0"), ("", "5.0.0"),
    ])
    func aMalformedStatusBecomesTheGenericCode(value: String, expected: String) {
        #expect(ReportFormat.status(value, action: .failed) == expected)
    }

    // MARK: Byte helpers

    /// Human text with every whitespace run (including the wrapping) as one space.
    static func flat(_ text: String) -> String {
        text.split(whereSeparator: \.isWhitespace).joined(separator: " ")
    }

    static func boundary(of bytes: [UInt8]) -> String? {
        let text = String(decoding: bytes, as: UTF8.self)
        guard let start = text.range(of: "boundary=\"") else { return nil }
        guard let end = text[start.upperBound...].firstIndex(of: "\"") else { return nil }
        return String(text[start.upperBound..<end])
    }

    static func occurrences(of needle: [UInt8], in haystack: [UInt8]) -> Int {
        guard !needle.isEmpty, haystack.count >= needle.count else { return 0 }
        var count = 0
        for index in 0...(haystack.count - needle.count)
        where haystack[index..<(index + needle.count)].elementsEqual(needle) {
            count += 1
        }
        return count
    }

    /// The body of the top-level part whose Content-Type is `type`.
    static func partBody(_ bytes: [UInt8], type: String) -> [UInt8]? {
        guard let boundary = boundary(of: bytes) else { return nil }
        let delimiter = Array("\r\n--\(boundary)".utf8)
        var parts: [ArraySlice<UInt8>] = []
        var start = 0
        var index = 0
        while index + delimiter.count <= bytes.count {
            if bytes[index..<(index + delimiter.count)].elementsEqual(delimiter) {
                parts.append(bytes[start..<index])
                index += delimiter.count
                start = index
            } else {
                index += 1
            }
        }
        for part in parts {
            let text = String(decoding: part, as: UTF8.self)
            guard let split = text.range(of: "\r\n\r\n") else { continue }
            if text[..<split.lowerBound].contains("Content-Type: \(type)") {
                return Array(text[split.upperBound...].utf8)
            }
        }
        return nil
    }
}

/// Runs Python's `email` package on a report and returns what it saw, as JSON. Without python3 the tests are
/// skipped, except on CI (CI=true), where they run and fail.
private enum MIMEParser {
    struct Parsed: Decodable {
        var contentType: String
        var reportType: String?
        var headers: [String: String]
        var date: Double?
        var parts: [Part]
        var defects: [String]
    }

    struct Part: Decodable {
        var type: String
        var charset: String?
        var text: String?
        var groups: [[String: String]]?
        var dates: [[String: Double]]?
        var innerHeaders: [String: String]?
        var innerBody: String?
    }

    enum Failure: Error, CustomStringConvertible {
        case python(status: Int32, stderr: String)
        var description: String {
            switch self {
            case .python(let status, let stderr): return "python3 exited \(status): \(stderr)"
            }
        }
    }

    static let available: Bool = (try? run(arguments: ["-c", "import email.parser, json"]))?.status == 0
    static let enabled = available || ProcessInfo.processInfo.environment["CI"] == "true"
    static let skipMessage: Comment = "python3 not found: the MIME parser tests are skipped (they fail when CI=true)"

    static let script = """
        import email, email.policy, email.utils, json, sys
        from email.parser import BytesParser

        def unfold(value):
            return str(value).replace("\\r\\n", "").replace("\\n", "")

        def stamp(value):
            try:
                return email.utils.parsedate_to_datetime(unfold(value)).timestamp()
            except Exception:
                return None

        data = open(sys.argv[1], "rb").read()
        msg = BytesParser(policy=email.policy.default).parsebytes(data)
        defects = []
        for part in msg.walk():
            defects += [repr(d) for d in part.defects]
            for name, value in part.items():  # parsed header objects carry their own defects
                defects += [name + ": " + repr(d) for d in getattr(value, "defects", [])]
        parts = []
        for part in (msg.get_payload() if msg.is_multipart() else []):
            ctype = part.get_content_type()
            entry = {"type": ctype, "charset": part.get_content_charset()}
            if ctype == "message/delivery-status":
                groups, dates = [], []
                for group in part.get_payload():
                    groups.append({k: unfold(v) for k, v in group.raw_items()})
                    dates.append({k: stamp(v) for k, v in group.items()
                                  if k.endswith("Date") or k == "Will-Retry-Until"})
                entry["groups"] = groups
                entry["dates"] = [{k: v for k, v in d.items() if v is not None} for d in dates]
            elif ctype == "message/rfc822":
                inner = part.get_payload()[0]
                entry["innerHeaders"] = {k: unfold(v) for k, v in inner.raw_items()}
                entry["innerBody"] = inner.get_payload(decode=True).decode("utf-8", "replace")
            else:
                entry["text"] = part.get_content()
            parts.append(entry)
        out = {
            "contentType": msg.get_content_type(),
            "reportType": msg.get_param("report-type"),
            "headers": {k: unfold(v) for k, v in msg.raw_items()},
            "date": stamp(msg["Date"]) if msg["Date"] else None,
            "parts": parts,
            "defects": defects,
        }
        print(json.dumps(out))
        """

    static func parse(_ message: [UInt8]) throws -> Parsed {
        let file = FileManager.default.temporaryDirectory
            .appendingPathComponent("dualmta-dsn-\(UUID().uuidString).eml")
        try Data(message).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        let result = try run(arguments: ["-c", script, file.path])
        guard result.status == 0 else { throw Failure.python(status: result.status, stderr: result.stderr) }
        return try JSONDecoder().decode(Parsed.self, from: result.stdout)
    }

    static func run(arguments: [String]) throws -> (status: Int32, stdout: Data, stderr: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3"] + arguments
        let output = Pipe()
        let errors = FileManager.default.temporaryDirectory
            .appendingPathComponent("dualmta-dsn-\(UUID().uuidString).err")
        _ = FileManager.default.createFile(atPath: errors.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: errors) }
        let errorHandle = try FileHandle(forWritingTo: errors)
        process.standardOutput = output
        process.standardError = errorHandle
        try process.run()
        // Read before waiting, so a large output cannot fill the pipe and block the child.
        let stdout = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        try? errorHandle.close()
        let stderr = (try? String(contentsOf: errors, encoding: .utf8)) ?? ""
        return (process.terminationStatus, stdout, stderr)
    }
}
