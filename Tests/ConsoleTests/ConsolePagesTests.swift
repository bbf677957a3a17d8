import Spool
import Testing

@testable import Console

@Suite struct ConsolePagesTests {
    func attempt(_ addr: String, _ family: String, _ result: String, reply: String = "") -> HistoryEvent {
        HistoryEvent(
            time: 1_700_000_000, event: "attempt",
            fields: [
                .init("rcpt", "a@b.test"), .init("mx", "mx.b.test"), .init("addr", addr), .init("family", family),
                .init("result", result), .init("ms", "3"), .init("reply", reply),
            ])
    }

    @Test("time line: one row per address in first-tried order, marks in time order, coloured by family")
    func timeline() {
        let svg = ConsolePages.timeline([
            attempt("[2001:db8::1]", "ipv6", "failed"), attempt("[192.0.2.1]", "ipv4", "deferred"),
            attempt("[2001:db8::1]", "ipv6", "failed"), attempt("[192.0.2.1]", "ipv4", "sent", reply: "250 <ok>"),
        ])
        let rows = svg.components(separatedBy: "<g class=\"row\" data-addr=\"").dropFirst().map {
            String($0.prefix { $0 != "\"" })
        }
        #expect(rows == ["[2001:db8::1]", "[192.0.2.1]"])
        #expect(svg.components(separatedBy: "class=\"mark\"").count == 5)
        #expect(svg.contains("data-seq=\"3\" data-result=\"sent\" data-family=\"ipv4\""))
        #expect(svg.contains("fill=\"\(ConsolePages.colour(family: "ipv4"))\" stroke"))
        #expect(svg.contains("250 &lt;ok&gt;"))
        #expect(ConsolePages.timeline([]).contains("No remote attempts"))
    }

    @Test(
        "time line: a Happy Eyeballs connect that lost the race is a dashed mark; won and failed ones are not drawn twice"
    )
    func lostRaces() {
        func connect(_ addr: String, _ family: String, _ result: String) -> HistoryEvent {
            HistoryEvent(
                time: 1_700_000_000, event: "connect",
                fields: [.init("addr", addr), .init("family", family), .init("result", result), .init("ms", "250")])
        }
        let svg = ConsolePages.timeline([
            connect("2001:db8::1", "ipv6", "lost"), connect("192.0.2.1", "ipv4", "won"),
            attempt("192.0.2.1", "ipv4", "sent"),
        ])
        #expect(svg.components(separatedBy: "class=\"mark\"").count == 3)
        #expect(svg.contains("data-seq=\"0\" data-result=\"lost\" data-family=\"ipv6\""))
        #expect(svg.contains("stroke-dasharray"))
        #expect(svg.contains("data-seq=\"1\" data-result=\"sent\""))
    }

    @Test("the last hour by family: attempts and sent counted per family, IPv6 first, drawn as bars")
    func families() {
        let counts = FamilyCounts([
            attempt("[192.0.2.1]", "ipv4", "sent"), attempt("[2001:db8::1]", "ipv6", "failed"),
            attempt("[2001:db8::1]", "ipv6", "deferred"), attempt("[2001:db8::2]", "ipv6", "sent"),
            HistoryEvent(time: 1, event: "received"),
        ])
        #expect(counts.families == ["ipv6", "ipv4"])
        #expect(counts.byFamily["ipv6"] == FamilyCounts.Count(attempts: 3, sent: 1))
        #expect(counts.byFamily["ipv4"]?.failed == 0)
        let svg = ConsolePages.familyChart(counts)
        #expect(svg.contains("data-family=\"ipv6\" data-attempts=\"3\" data-sent=\"1\""))
        #expect(ConsolePages.familyChart(FamilyCounts([])).contains("None."))
    }

    @Test("a hostile journal renders as text")
    func hostile() throws {
        let id = try #require(QueueID("0123456789ABCD"))
        var event = attempt("\"><img src=x onerror=alert(1)>", "ipv4", "<script>")
        event.fields.append(.init("reason", "<script>alert(1)</script>"))
        let page = ConsolePages.message(
            id, envelope: nil, expires: nil, chain: [ConsoleChainNode(id: id, reportOf: nil, depth: 0, events: [event])]
        )
        #expect(!page.contains("<script"))
        #expect(!page.contains("<img"))
        #expect(page.contains("&lt;script&gt;"))
    }

    @Test("mail headers: folded lines unfold, the body follows the blank line, no blank line means all headers")
    func headers() {
        let message = MailHeaders.parse(Array("Subject: a\r\n b\r\nFrom: x\r\n\r\nbody\r\n".utf8))
        #expect(message.fields.map(\.name) == ["Subject", "From"])
        #expect(message.value("subject") == "a b")
        #expect(message.body == Array("body\r\n".utf8))
        #expect(MailHeaders.parse(Array("A: 1\n".utf8)).fields.count == 1)
    }

    @Test("mailbox names from a URL stay inside the tree")
    func plainNames() {
        for bad in ["", ".", "..", "../x", "a/b", ".hidden", "a\0"] { #expect(!Maildirs.isPlainName(bad)) }
        #expect(Maildirs.isPlainName("user"))
    }
}

@Suite struct EncodedWordsTests {
    @Test(
        "RFC 2047 words decode for display; what does not decode stays as written",
        arguments: [
            ("=?utf-8?q?=3Cscript=3Ealert(1)=3C/script=3E?=", "<script>alert(1)</script>"),
            ("=?UTF-8?B?PGltZyBvbmVycm9yPTE+?=", "<img onerror=1>"),
            ("a =?iso-8859-1?q?caf=E9?= b", "a café b"),
            ("=?utf-8?q?a?= =?utf-8?q?b?=", "ab"),
            ("=?utf-8?q?a_b?=  tail", "a b  tail"),
            ("=?koi8-r?q?x?=", "=?koi8-r?q?x?="),
            ("=?utf-8?q?=ZZ?=", "=?utf-8?q?=ZZ?="),
            ("plain =? text", "plain =? text"),
        ])
    func decode(input: String, expected: String) {
        #expect(EncodedWords.decode(input) == expected)
    }

    @Test("decoded markup in a header is escaped on the page")
    func escapedOnThePage() {
        let page = ConsolePages.mailMessage(
            Array("Subject: =?utf-8?q?=3Cscript=3Ex=3C/script=3E?=\r\n\r\nbody\r\n".utf8), rawLink: "m/raw")
        #expect(page.contains("&lt;script&gt;x&lt;/script&gt;"))
        #expect(!page.contains("<script"))
    }
}
