import Foundation
import SMTPProtocol
import Spool
import Testing

@testable import MTA

/// The queue commands on a real spool (no daemon): ids validated before anything is opened, edits written.
@Suite struct QueueControlTests {
    private func run(_ command: QueueCommand, _ spool: String) -> (Int32, String, String) {
        var out = ""
        var err = ""
        let status = QueueControl.execute(command, spoolDirectory: spool, out: { out += $0 }, err: { err += $0 })
        return (status, out, err)
    }

    private func queuedMessage() throws -> (String, QueueID) {
        let directory = NSTemporaryDirectory() + "dualmta-qc-\(UUID().uuidString)"
        let spool = try Spool(directory: directory)
        let message = try spool.begin()
        try message.append(Array("Subject: x\r\n\r\nx\r\n".utf8))
        try spool.commit(
            message,
            envelope: Envelope(
                id: message.id, sender: "a@r.example", arrival: 1_000, client: "local", heloName: "localhost",
                protocolName: "LOCAL", nextAttempt: Int64(Date().timeIntervalSince1970) + 3600,
                recipients: [RecipientRecord(address: "b@remote.example")]))
        return (directory, message.id)
    }

    @Test(arguments: ["../../etc/passwd", "../x", "hollUQD0VU81QY", "", "HOLLUQD0VU81QY/"])
    func badIDTouchesNothing(text: String) {
        let directory = NSTemporaryDirectory() + "dualmta-qc-\(UUID().uuidString)"
        for command in [QueueCommand.show(text, json: false), .delete(text), .hold(text), .flush(text)] {
            let (status, _, err) = run(command, directory)
            #expect(status == 65)
            #expect(err.contains("bad queue id"))
        }
        #expect(!FileManager.default.fileExists(atPath: directory))
    }

    /// `expires`: arrival + max_queue_lifetime, in text and JSON, list and show; the configured lifetimes apply.
    @Test func listAndShowSayWhenTheQueueGivesUp() throws {
        let (directory, id) = try queuedMessage()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var lifetimes = Configuration.defaults.bounceSettings
        lifetimes.maxQueueLifetime = .seconds(3600)
        let expires = MailDate.iso8601(1_000 + 3600)
        let commands: [QueueCommand] = [
            .list(json: false), .list(json: true), .show(id.rawValue, json: false), .show(id.rawValue, json: true),
        ]
        for command in commands {
            var out = ""
            let status = QueueControl.execute(
                command, spoolDirectory: directory, lifetimes: lifetimes, out: { out += $0 }, err: { _ in })
            #expect(status == 0 && out.contains(expires), "\(command): \(out)")
        }
        // Without the configuration: the default lifetime (5 days).
        let (_, show, _) = run(.show(id.rawValue, json: false), directory)
        #expect(show.contains("expires:      \(MailDate.iso8601(1_000 + 5 * 86_400))"))
    }

    @Test func holdReleaseFlushBounceDelete() throws {
        let (directory, id) = try queuedMessage()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let spool = try Spool(directory: directory)

        #expect(run(.hold(id.rawValue), directory).0 == 0)
        #expect(try spool.envelope(id).held)
        let (_, flushOut, _) = run(.flush(nil), directory)
        #expect(flushOut.contains("held"))
        #expect(flushOut.contains("no running daemon"))
        #expect(try spool.envelope(id).nextAttempt > Int64(Date().timeIntervalSince1970) + 60)

        #expect(run(.release(id.rawValue), directory).0 == 0)
        #expect(try !spool.envelope(id).held)
        #expect(run(.flush(id.rawValue), directory).0 == 0)
        #expect(try spool.envelope(id).nextAttempt <= Int64(Date().timeIntervalSince1970))

        let (showStatus, show, _) = run(.show(id.rawValue, json: false), directory)
        #expect(showStatus == 0 && show.contains("<b@remote.example>") && show.contains("attempts (0)"))

        #expect(run(.bounce(id.rawValue), directory).0 == 0)
        let bounced = try spool.envelope(id)
        #expect(bounced.recipients[0].state == .failed && bounced.recipients[0].lastStatus == EnhancedStatus(5, 0, 0))

        #expect(run(.delete(id.rawValue), directory).0 == 0)
        #expect(throws: SpoolError.notFound(id)) { try spool.envelope(id) }
        #expect(run(.show(id.rawValue, json: false), directory).0 == 69)
        #expect(run(.delete(id.rawValue), directory).0 == 69)
    }
}
