import Delivery
import Foundation
import Glibc
import SMTPProtocol
import Spool

// Queue control for `dualmta queue show|delete|hold|release|bounce|flush` (and `sendmail -q`, `mailq`). It works on
// the spool files directly, so it also works without a daemon, and tells a running daemon through the control
// channel (ControlChannel.swift) when a message should be looked at now.
//
// Concurrency with a running daemon: every edit is a read-modify-write of the envelope with the spool's atomic
// `update`, made while holding `flock(LOCK_EX)` on `queue/<id>.msg` (the one queue file that is never renamed).
// The daemon re-reads the envelope at the start of each run, so a held, bounced or deleted message is seen by the
// next run; `update` throws `.notFound` once a message is removed, so a run cannot resurrect a deleted message.
// The queue runner takes the same message lock (Spool/MessageLock.swift) around each run, so an edit waits for a
// run in progress and is then seen by the next one.

/// One `dualmta queue` command; ids are still text, validated by `QueueControl.execute` before the spool is opened.
public enum QueueCommand: Equatable, Sendable {
    case list(json: Bool)
    case show(String, json: Bool)
    case delete(String)
    case hold(String)
    case release(String)
    case bounce(String)
    case flush(String?)
}

/// Pure envelope edits (tested without a spool).
public enum QueueEdit {
    public static let bounceStatus = EnhancedStatus(5, 0, 0)
    public static let bounceReason = "bounced by the administrator"

    /// Every pending recipient becomes failed with 5.0.0; the runner then reports and removes the message.
    /// Returns the number of recipients changed.
    @discardableResult
    public static func bounce(_ envelope: inout Envelope, now: Int64) -> Int {
        var changed = 0
        for index in envelope.recipients.indices where envelope.recipients[index].state == .pending {
            envelope.recipients[index].state = .failed
            envelope.recipients[index].lastStatus = bounceStatus
            envelope.recipients[index].lastReply = bounceReason
            envelope.recipients[index].updated = now
            changed += 1
        }
        envelope.held = false  // a held message would never reach the runner's report
        envelope.nextAttempt = min(envelope.nextAttempt, now)
        return changed
    }

    /// Makes the message due now. False when there is nothing to do (held, nothing pending, already due).
    public static func flush(_ envelope: inout Envelope, now: Int64) -> Bool {
        guard !envelope.held, !envelope.isFinished, envelope.nextAttempt > now else { return false }
        envelope.nextAttempt = now
        return true
    }
}

/// The queue commands. Output goes through the two closures so the CLI, `sendmail -bp` and tests share it.
public struct QueueControl {
    let spool: Spool
    let controlPath: String
    /// How long an edit waits for a delivery run that holds the message's lock.
    var lockWait: Duration = .seconds(60)

    public init(spoolDirectory: String) throws(SpoolError) {
        spool = try Spool(directory: spoolDirectory)
        controlPath = ControlChannel.path(stateDirectory: spool.stateDirectory)
    }

    /// Runs one command; returns the exit status. Queue ids are validated first, so `queue show ../../etc/passwd`
    /// exits 65 without opening (or creating) anything.
    /// `lifetimes` gives the `expires` time shown by list and show (the configured queue and bounce lifetimes).
    public static func execute(
        _ command: QueueCommand, spoolDirectory: String, lifetimes: BounceSettings? = nil, out: (String) -> Void,
        err: (String) -> Void
    ) -> Int32 {
        let expiry = { (envelope: Envelope) -> Int64 in
            (lifetimes ?? Configuration.defaults.bounceSettings).expiry(of: envelope)
        }
        let text: String?
        switch command {
        case .list: text = nil
        case .show(let value, _), .delete(let value), .hold(let value), .release(let value), .bounce(let value):
            text = value
        case .flush(let value): text = value
        }
        var id: QueueID? = nil
        if let text {
            guard let parsed = QueueID(text) else {
                err("dualmta: bad queue id \(text.debugDescription)\n")
                return SysExit.dataError
            }
            id = parsed
        }
        do throws(SpoolError) {
            let control = try QueueControl(spoolDirectory: spoolDirectory)
            switch command {
            case .list(let json):
                let (envelopes, problems) = try QueueInspector(spool: control.spool).envelopes()
                out(
                    json
                        ? QueueInspector.renderJSON(envelopes, expiry: expiry)
                        : QueueInspector.renderText(envelopes, expiry: expiry))
                for problem in problems { err("dualmta: \(problem)\n") }
            case .show(_, let json):
                guard let id else { return SysExit.usage }
                let envelope = try control.spool.envelope(id)
                out(
                    json
                        ? QueueInspector.renderShowJSON(envelope, expiry: expiry)
                        : QueueInspector.renderShowText(envelope, expiry: expiry))
            case .delete:
                guard let id else { return SysExit.usage }
                try control.delete(id)
                out("\(id): deleted\n")
            case .hold:
                guard let id else { return SysExit.usage }
                try control.setHeld(id, true)
                out("\(id): held\n")
            case .release:
                guard let id else { return SysExit.usage }
                try control.setHeld(id, false)
                out("\(id): released\n" + control.notify(.wake(id)))
            case .bounce:
                guard let id else { return SysExit.usage }
                let count = try control.bounce(id)
                out("\(id): \(count) recipient\(count == 1 ? "" : "s") bounced\n" + control.notify(.wake(id)))
            case .flush:
                let due = try control.flush(id)
                var text = ""
                for (dueID, state) in due { text += "\(dueID): \(state)\n" }
                if id == nil { text += "\(due.filter { $0.1 == "due now" }.count) message(s) due now\n" }
                out(text + control.notify(id.map { .flush($0) } ?? .flushAll))
            }
            return SysExit.ok
        } catch {
            err("dualmta: \(error)\n")
            switch error {
            case .badQueueID: return SysExit.dataError
            case .notFound: return SysExit.unavailable
            default: return SysExit.temporaryFailure
            }
        }
    }

    // MARK: Edits

    /// Removes the message without a report.
    public func delete(_ id: QueueID) throws(SpoolError) {
        try withMessageLock(id) { () throws(SpoolError) in try spool.remove(id) }
        MessageHistory(stateDirectory: spool.stateDirectory).append(
            id, [HistoryEvent(time: Self.now(), event: "deleted", fields: [.init("by", "queue delete")])])
    }

    public func setHeld(_ id: QueueID, _ held: Bool) throws(SpoolError) {
        try edit(id) { envelope in
            guard envelope.held != held else { return false }
            envelope.held = held
            return true
        }
    }

    /// Fails every pending recipient (5.0.0); returns how many.
    public func bounce(_ id: QueueID) throws(SpoolError) -> Int {
        var count = 0
        let now = Self.now()
        try edit(id) { envelope in
            count = QueueEdit.bounce(&envelope, now: now)
            return count > 0
        }
        return count
    }

    /// Sets nextAttempt to now for one message or for every queued one; returns each message's state.
    public func flush(_ id: QueueID?) throws(SpoolError) -> [(QueueID, String)] {
        let now = Self.now()
        var result: [(QueueID, String)] = []
        let ids: [QueueID]
        if let id { ids = [id] } else { ids = try spool.queuedIDs() }
        for current in ids {
            var state = "due now"
            do throws(SpoolError) {
                try edit(current) { envelope in
                    if envelope.held { state = "held (release it first)" }
                    if envelope.isFinished { state = "nothing pending" }
                    return QueueEdit.flush(&envelope, now: now)
                }
            } catch .notFound where id == nil {
                continue  // delivered while we were flushing
            }
            result.append((current, state))
        }
        return result
    }

    /// Sends a command to the daemon; returns a line for the user when nobody listens.
    func notify(_ message: ControlMessage) -> String {
        do throws(ControlChannelError) {
            try ControlClient.send(message, path: controlPath)
            return ""
        } catch .noDaemon {
            return "no running daemon; messages are due at its next start\n"
        } catch {
            return "could not reach the daemon (\(error)); messages are due at its next run\n"
        }
    }

    /// Read-modify-write of one envelope under the message lock; `change` returns whether to write.
    private func edit(_ id: QueueID, _ change: (inout Envelope) -> Bool) throws(SpoolError) {
        try withMessageLock(id) { () throws(SpoolError) in
            var envelope = try spool.envelope(id)
            if change(&envelope) { try spool.update(envelope) }
        }
    }

    /// Holds the message lock around `body`, waiting at most `lockWait` for a delivery run that holds it.
    private func withMessageLock(_ id: QueueID, _ body: () throws(SpoolError) -> Void) throws(SpoolError) {
        let lock = try spool.lockMessage(id, waitingAtMost: lockWait)
        defer { lock.release() }
        try body()
    }

    static func now() -> Int64 { Int64(Date().timeIntervalSince1970) }
}
