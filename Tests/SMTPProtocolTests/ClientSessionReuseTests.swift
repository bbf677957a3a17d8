import Testing

@testable import SMTPProtocol

/// Connection reuse in the pure session: ending a transaction without QUIT (`keepOpen`, RSET when the server may
/// still hold the transaction) and starting one on a parked connection (`Resumption`: no greeting, EHLO or
/// STARTTLS).
@Suite struct ClientSessionReuseTests {
    struct Row: CustomStringConvertible, Sendable {
        var name: String
        var transaction: Transaction1
        var script = PeerScript()
        var writes: [String]
        var keptOpen: Bool
        var kind: ClientResult.Kind = .completed
        var repliesRead: Int? = nil

        var description: String { name }
    }

    static let group =
        "MAIL FROM:<alice@client.example> SIZE=100\r\nRCPT TO:<bob@mx.example>\r\nDATA\r\n"
    static let parked = ClientSession.Resumption(
        capabilities: ServerCapabilities(ehloLines: ["mx.example", "PIPELINING", "SIZE 10000"]), tlsActive: false,
        greeting: "mx.example ESMTP")
    static let parkedPlain = ClientSession.Resumption(
        capabilities: ServerCapabilities(ehloLines: ["mx.example", "SIZE 10000"]), tlsActive: false,
        greeting: "mx.example ESMTP")

    static var rows: [Row] {
        var rows: [Row] = []
        rows.append(
            Row(
                name: "delivered with keepOpen: no QUIT, no RSET (the end of data closed the transaction)",
                transaction: Transaction1(keepOpen: true), writes: ["EHLO client.example\r\n", group],
                keptOpen: true))
        rows.append(
            Row(
                name: "without keepOpen the session QUITs as before",
                transaction: Transaction1(), writes: ["EHLO client.example\r\n", group, "QUIT\r\n"], keptOpen: false))
        var refusedAll = PeerScript()
        refusedAll.rcpt = ["bob@mx.example": .reply("550 5.1.1 no such user\r\n")]
        refusedAll.data = .reply("554 5.5.1 no valid recipients\r\n")
        rows.append(
            Row(
                name: "MAIL accepted, every RCPT refused: RSET before parking",
                transaction: Transaction1(keepOpen: true), script: refusedAll,
                writes: ["EHLO client.example\r\n", group, "RSET\r\n"], keptOpen: true))
        var rsetRefused = refusedAll
        rsetRefused.rset = .reply("502 5.5.1 no RSET here\r\n")
        rows.append(
            Row(
                name: "RSET refused: QUIT, not parked",
                transaction: Transaction1(keepOpen: true), script: rsetRefused,
                writes: ["EHLO client.example\r\n", group, "RSET\r\n", "QUIT\r\n"], keptOpen: false))
        var rsetClosed = refusedAll
        rsetClosed.rset = .close
        rows.append(
            Row(
                name: "connection closed at RSET: not parked, the transaction's result stands",
                transaction: Transaction1(keepOpen: true), script: rsetClosed,
                writes: ["EHLO client.example\r\n", group, "RSET\r\n"], keptOpen: false))
        var mailRefused = PeerScript()
        mailRefused.ehlo = PeerScript.ehlo("SIZE 10000")
        mailRefused.mail = .reply("550 5.7.1 sender refused\r\n")
        rows.append(
            Row(
                name: "MAIL refused one by one: nothing to reset, parked",
                transaction: Transaction1(keepOpen: true), script: mailRefused,
                writes: ["EHLO client.example\r\n", "MAIL FROM:<alice@client.example> SIZE=100\r\n"], keptOpen: true))
        rows.append(
            Row(
                name: "refused locally (SIZE) before MAIL: parked, nothing sent after EHLO",
                transaction: Transaction1(size: 20000, keepOpen: true), writes: ["EHLO client.example\r\n"],
                keptOpen: true))
        var greetingRefused = PeerScript()
        greetingRefused.greeting = .reply("554 5.3.2 go away\r\n")
        rows.append(
            Row(
                name: "host failure (greeting refused): QUIT even with keepOpen",
                transaction: Transaction1(keepOpen: true), script: greetingRefused, writes: ["QUIT\r\n"],
                keptOpen: false,
                kind: .hostFailed(.greeting(Reply(554, EnhancedStatus(5, 3, 2), "go away")))))
        var chatty = PeerScript()
        chatty.dot = .reply("250 2.0.0 queued as X\r\n250 unasked\r\n")
        rows.append(
            Row(
                name: "bytes after the last reply: QUIT, not parked",
                transaction: Transaction1(keepOpen: true), script: chatty,
                writes: ["EHLO client.example\r\n", group, "QUIT\r\n"], keptOpen: false))
        rows.append(
            Row(
                name: "resumed with PIPELINING: straight to the MAIL group, parked again",
                transaction: Transaction1(resuming: parked, keepOpen: true), writes: [group], keptOpen: true,
                repliesRead: 4))
        rows.append(
            Row(
                name: "resumed without PIPELINING: MAIL, RCPT, DATA one by one, then QUIT without keepOpen",
                transaction: Transaction1(resuming: parkedPlain),
                writes: [
                    "MAIL FROM:<alice@client.example> SIZE=100\r\n", "RCPT TO:<bob@mx.example>\r\n", "DATA\r\n",
                    "QUIT\r\n",
                ], keptOpen: false, repliesRead: 4))
        var deadAtMail = PeerScript()
        deadAtMail.mail = .close
        rows.append(
            Row(
                name: "resumed, closed before the MAIL reply: connection lost, no reply read",
                transaction: Transaction1(resuming: parked, keepOpen: true), script: deadAtMail, writes: [group],
                keptOpen: false, kind: .hostFailed(.connectionLost(.mail)), repliesRead: 0))
        var closingAtMail = PeerScript()
        closingAtMail.mail = .replyThenClose("421 4.4.2 idle too long\r\n")
        rows.append(
            Row(
                name: "resumed, 421 to MAIL: the server is closing, no reply read but the 421",
                transaction: Transaction1(resuming: parked, keepOpen: true), script: closingAtMail, writes: [group],
                keptOpen: false,
                kind: .hostFailed(.closing(Reply(421, EnhancedStatus(4, 4, 2), "idle too long"))), repliesRead: 0))
        var lostAtRcpt = PeerScript()
        lostAtRcpt.rcpt = ["bob@mx.example": .close]
        rows.append(
            Row(
                name: "resumed, MAIL answered then lost at RCPT: a real failure (one reply read)",
                transaction: Transaction1(resuming: parkedPlain, keepOpen: true), script: lostAtRcpt,
                writes: ["MAIL FROM:<alice@client.example> SIZE=100\r\n", "RCPT TO:<bob@mx.example>\r\n"],
                keptOpen: false, kind: .hostFailed(.connectionLost(.rcpt)), repliesRead: 1))
        return rows
    }

    @Test(arguments: rows)
    func reuseTransitions(_ row: Row) {
        // Extra bytes after a reply can only be seen as such when they come in the same read.
        let feedings: [Chunking] = row.name.hasPrefix("bytes after") ? [.whole] : Chunking.all
        for feeding in feedings {
            let run = drive(row.transaction, row.script, feeding)
            #expect(run.writes == row.writes, "\(feeding)")
            #expect(run.result?.keptOpen == row.keptOpen, "\(feeding)")
            #expect(run.closed == !row.keptOpen, "the session closes exactly when it does not keep the connection")
            #expect(run.result?.kind == row.kind, "\(feeding)")
            #expect(run.result?.reused == (row.transaction.resuming != nil))
            if let replies = row.repliesRead { #expect(run.result?.repliesRead == replies, "\(feeding)") }
        }
    }

    /// The resumed session reports what the first one learnt: greeting and capabilities, and arms MAIL first.
    @Test func resumedSessionCarriesTheFirstSessionsKnowledge() {
        let run = drive(Transaction1(resuming: Self.parked, keepOpen: true), PeerScript(), .whole)
        #expect(run.result?.greeting == "mx.example ESMTP")
        #expect(run.result?.capabilities?.pipelining == true)
        #expect(run.result?.capabilities?.size == 10000)
        #expect(run.armed.first == .mail)
        #expect(run.outcomes == [.delivered(Reply(250, EnhancedStatus(2, 0, 0), "queued as X"))])
    }

    /// A resumed TLS session never sends STARTTLS again, even under `encrypt`.
    @Test func resumedTLSSessionDoesNotStartTLSAgain() {
        var resumption = Self.parked
        resumption.capabilities = ServerCapabilities(ehloLines: ["mx.example", "PIPELINING", "STARTTLS"])
        resumption.tlsActive = true
        var session = ClientSession(
            heloName: "client.example", sender: "a@b.example", recipients: ["c@d.example"], messageSize: 10,
            bodyType: nil, needsSMTPUTF8: false, tlsPolicy: .encrypt, resuming: resumption, keepOpen: true)
        let actions = session.start()
        guard case .send(let bytes)? = actions.first else {
            Issue.record("no command sent: \(actions)")
            return
        }
        #expect(String(decoding: bytes, as: UTF8.self).hasPrefix("MAIL FROM:<a@b.example>"))
        #expect(!actions.contains(.startTLS))
    }

    /// The RSET wait has its own deadline; when it passes the connection is closed, the result kept.
    @Test func rsetTimeoutClosesWithoutChangingTheResult() {
        var script = PeerScript()
        script.rcpt = ["bob@mx.example": .reply("550 5.1.1 no such user\r\n")]
        script.data = .reply("554 5.5.1 no valid recipients\r\n")
        script.rset = .silence
        let run = drive(Transaction1(keepOpen: true), script, .whole)
        #expect(run.armed.last == .rset)
        #expect(run.closed)
        #expect(run.result?.keptOpen == false)
        #expect(run.result?.kind == .completed)
        #expect(run.outcomes.count == 1)
    }
}
