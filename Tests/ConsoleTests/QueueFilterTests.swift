import Spool
import Testing

@testable import Console

@Suite struct QueueFilterTests {
    func envelope(_ id: String, _ sender: String, _ arrival: Int64, _ recipients: [(String, RecipientState)])
        throws -> Envelope
    {
        var envelope = Envelope(
            arriving: try #require(QueueID(id)), sender: sender,
            recipients: recipients.map { RecipientRecord(address: $0.0, state: $0.1) }, client: "[127.0.0.1]",
            heloName: "h", protocolName: "ESMTP", bodyType: nil, smtpUTF8: false, messageSize: 10, now: arrival)
        envelope.nextAttempt = 1000 - arrival
        for (index, recipient) in recipients.enumerated() { envelope.recipients[index].state = recipient.1 }
        return envelope
    }

    func filter(_ query: String) -> QueueFilter? {
        let parameters = query.split(separator: "&").map { pair -> HTTPRequest.Parameter in
            let parts = pair.split(separator: "=", maxSplits: 1)
            return .init(name: String(parts[0]), value: parts.count > 1 ? String(parts[1]) : "")
        }
        return QueueFilter(
            HTTPRequest(method: "GET", path: "/queue", query: parameters, version: "HTTP/1.1", headers: []))
    }

    @Test(
        "filters and orders",
        arguments: [
            ("", ["00000000000001", "00000000000002", "00000000000003"]),
            ("state=delivered", ["00000000000002"]),
            ("state=pending&domain=B.TEST", ["00000000000001"]),
            ("sender=ALICE@*", ["00000000000001", "00000000000003"]),
            ("rcpt=*@c.test", ["00000000000002", "00000000000003"]),
            ("sender=&sort=sender", ["00000000000001", "00000000000003", "00000000000002"]),
            ("sort=next", ["00000000000003", "00000000000002", "00000000000001"]),
            ("domain=nowhere.test", []),
        ])
    func filters(query: String, expected: [String]) throws {
        let envelopes = [
            try envelope("00000000000001", "alice@a.test", 1, [("x@b.test", .pending)]),
            try envelope("00000000000002", "bob@a.test", 2, [("y@c.test", .delivered)]),
            try envelope("00000000000003", "alice@a.test", 3, [("z@c.test", .pending)]),
        ]
        let filter = try #require(self.filter(query))
        #expect(filter.apply(envelopes).map(\.id.rawValue) == expected)
    }

    @Test("unknown state or order is refused; wildcards")
    func refusalsAndPatterns() {
        #expect(filter("state=lost") == nil)
        #expect(filter("sort=size") == nil)
        #expect(QueueFilter.matches("a*c", "ABBC"))
        #expect(QueueFilter.matches("*", ""))
        #expect(!QueueFilter.matches("a*c", "abcd"))
        #expect(QueueFilter.matches("*@*.test", "u@x.test"))
    }
}
