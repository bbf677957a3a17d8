import SMTPProtocol
import Testing

@Suite struct MailDateTests {
    @Test(arguments: [
        (0 as Int64, "Thu, 1 Jan 1970 00:00:00 +0000", "1970-01-01T00:00:00Z", "19700101000000"),
        (-1, "Wed, 31 Dec 1969 23:59:59 +0000", "1969-12-31T23:59:59Z", "19691231235959"),
        (951_782_400, "Tue, 29 Feb 2000 00:00:00 +0000", "2000-02-29T00:00:00Z", "20000229000000"),
        (1_715_680_682, "Tue, 14 May 2024 09:58:02 +0000", "2024-05-14T09:58:02Z", "20240514095802"),
        (1_795_891_140, "Sat, 28 Nov 2026 18:39:00 +0000", "2026-11-28T18:39:00Z", "20261128183900"),
        (Int64.max, "Fri, 31 Dec 9999 23:59:59 +0000", "9999-12-31T23:59:59Z", "99991231235959"),
        (Int64.min, "Mon, 1 Jan 0001 00:00:00 +0000", "0001-01-01T00:00:00Z", "00010101000000"),
    ])
    func formats(seconds: Int64, rfc5322: String, iso8601: String, compact: String) {
        #expect(MailDate.rfc5322(seconds) == rfc5322)
        #expect(MailDate.iso8601(seconds) == iso8601)
        #expect(MailDate.compact(seconds) == compact)
    }
}
