import Glibc
import SMTPProtocol

/// Everything the spool can fail with. `smtpReply` is what a client is told when a commit fails.
public enum SpoolError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A system call failed; `operation` is the call ("open", "fsync", "rename", ...), `path` what it worked on.
    case io(operation: String, path: String, errno: Int32)
    /// ENOSPC or EDQUOT while creating or writing spool files.
    case insufficientStorage
    /// Text that is not a queue id (e.g. from the command line).
    case badQueueID(String)
    /// No committed message with this id (its envelope is absent).
    case notFound(QueueID)
    /// The queue entry fails validation; it belongs in `corrupt/` and is never delivered
    /// (`docs/rules.md`).
    case corrupt(QueueID, reason: String)
    /// The caller handed over an envelope the spool refuses to write (wrong id, no recipients, bad extra key, ...).
    case invalidEnvelope(String)
    /// `append` or `commit` after the message was committed, aborted or failed.
    case messageClosed(QueueID)
    /// A Maildir domain or user name that could escape its directory.
    case invalidMailboxName(String)

    public var description: String {
        switch self {
        case .io(let operation, let path, let code):
            return "\(operation) \(path): \(String(cString: strerror(code))) (errno \(code))"
        case .insufficientStorage:
            return "insufficient storage in the spool"
        case .badQueueID(let text):
            return "bad queue id \(text.debugDescription)"
        case .notFound(let id):
            return "queue id \(id) not found"
        case .corrupt(let id, let reason):
            return "queue id \(id) is corrupt: \(reason)"
        case .invalidEnvelope(let reason):
            return "invalid envelope: \(reason)"
        case .messageClosed(let id):
            return "message \(id) is already committed, aborted or failed"
        case .invalidMailboxName(let name):
            return "invalid mailbox name \(name.debugDescription)"
        }
    }
}

extension SpoolError {
    /// The reply for a message that could not be made durable: a full disk or quota is 452 4.3.1 (try later, the
    /// server is short of room), everything else 451 4.3.0. Nothing of the message is kept either way.
    public var smtpReply: Reply { self == .insufficientStorage ? .insufficientStorage : .queueWriteError }

    /// Maps an errno from a writing call; a full disk or quota gets its own case so the server can answer 452/451.
    static func fromWrite(_ operation: String, _ path: String, _ code: Int32) -> SpoolError {
        if code == ENOSPC || code == EDQUOT { return .insufficientStorage }
        return .io(operation: operation, path: path, errno: code)
    }
}
