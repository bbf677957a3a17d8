import Testing

@testable import Delivery

/// One row per rule of `SevenBitDowngrade`; the integration test decodes a converted message with Python's
/// `email` package against the original.
@Suite struct SevenBitDowngradeTests {
    static func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }
    static func text(_ result: Result<[UInt8], SevenBitDowngrade.Failure>) -> String? {
        guard case .success(let bytes) = result else { return nil }
        return String(decoding: bytes, as: UTF8.self)
    }

    @Test func anEightBitTextBodyBecomesQuotedPrintable() {
        let message = Self.bytes(
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
                + "Subject: hi\r\n\r\nGr\u{FC}\u{DF}e = 1 \r\nzweite Zeile\r\n")
        #expect(
            Self.text(SevenBitDowngrade.convert(message))
                == "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nSubject: hi\r\n"
                + "Content-Transfer-Encoding: quoted-printable\r\n\r\nGr=C3=BC=C3=9Fe =3D 1=20\r\nzweite Zeile\r\n")
    }

    @Test func otherTypesBecomeBase64AndSevenBitPartsStayAsTheyWere() {
        let message = Self.bytes(
            "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\npreamble\r\n--b1\r\n"
                + "Content-Type: text/plain\r\n\r\nplain ascii\r\n--b1\r\nContent-Type: application/octet-stream\r\n"
                + "\r\n\u{FF}\r\n--b1--\r\nepilogue\r\n")
        #expect(
            Self.text(SevenBitDowngrade.convert(message))
                == "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\npreamble\r\n--b1\r\n"
                + "Content-Type: text/plain\r\n\r\nplain ascii\r\n--b1\r\nContent-Type: application/octet-stream\r\n"
                + "Content-Transfer-Encoding: base64\r\n\r\nw78=\r\n\r\n--b1--\r\nepilogue\r\n")
    }

    @Test func aSevenBitMessageIsUntouched() {
        let message = Self.bytes("Subject: x\r\n\r\nhello\r\n")
        #expect(SevenBitDowngrade.convert(message) == .success(message))
    }

    @Test func longLinesGetSoftBreaks() throws {
        let message = Self.bytes(
            "MIME-Version: 1.0\r\n\r\n" + String(repeating: "\u{E9}", count: 40) + "\r\n")
        let converted = try #require(Self.text(SevenBitDowngrade.convert(message)))
        let body = converted.components(separatedBy: "\r\n\r\n")[1]
        #expect(body.components(separatedBy: "\r\n").allSatisfy { $0.utf8.count <= 76 })
        let unfolded = body.split(separator: "=\r\n", omittingEmptySubsequences: false).joined()
        #expect(unfolded == String(repeating: "=C3=A9", count: 40) + "\r\n")
    }

    @Test(arguments: [
        ("MIME-Version: 1.0\r\nSubject: Gr\u{FC}\u{DF}e\r\n\r\nx\r\n", SevenBitDowngrade.Failure.eightBitHeader),
        ("Subject: x\r\n\r\nGr\u{FC}\u{DF}e\r\n", .notMIME),
        (
            "MIME-Version: 1.0\r\nContent-Transfer-Encoding: binary\r\n\r\n\u{FC}\r\n",
            .unconvertible("8-bit bytes in a part declared binary")
        ),
        (
            "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n\u{FC}\r\n--b\r\n\r\nx\r\n--b--\r\n",
            .unconvertible("8-bit text outside the MIME parts")
        ),
        (
            "MIME-Version: 1.0\r\nContent-Type: message/rfc822\r\n\r\nSubject: \u{FC}\r\n\r\nx\r\n",
            .eightBitHeader
        ),
    ])
    func unconvertibleContentIsRefused(message: String, failure: SevenBitDowngrade.Failure) {
        #expect(SevenBitDowngrade.convert(Self.bytes(message)) == .failure(failure))
    }
}
