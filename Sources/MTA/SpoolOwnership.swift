import Foundation
import Glibc
import Logging
import Spool

/// Whether `send` may write the spool itself: only its owner may (files written by anyone else could be unreadable
/// to the daemon, or be a way around its rules). A spool that does not exist yet is created by whoever submits
/// first with a config that names it, as before.
enum SpoolOwnership {
    static func mayWriteDirectly(_ directory: String) -> Bool {
        var status = stat()
        guard stat(directory, &status) == 0 else {
            switch errno {
            case EACCES:
                return false  // a path this user may not even look into: the daemon's
            case ENOENT:
                // Not created yet: whoever may create it may write it; anyone else goes through the daemon.
                let parent = (directory as NSString).deletingLastPathComponent
                return access(parent.isEmpty ? "." : parent, W_OK | X_OK) == 0 || errno != EACCES
            default:
                return true  // the spool code reports the real error (not a directory, ...)
            }
        }
        return status.st_uid == geteuid()
    }
}

/// `send`'s own `accepted` line, in the daemon's format: appended to `log_file` when one is configured (where the
/// daemon's lines go), and on stderr with `-v` (stderr stays quiet otherwise: cron mails whatever a job prints).
enum AcceptedLine {
    static func write(envelope: Envelope, size: Int, user: String, configuration: Configuration, verbose: Bool) {
        let fields: Logger.Metadata = [
            "id": "\(envelope.id)", "from": "<\(envelope.sender)>", "size": "\(size)",
            "nrcpt": "\(envelope.recipients.count)", "proto": "LOCAL", "user": "\(user)",
        ]
        let line = MailLogFormatter.format(
            level: .info, message: "accepted", fields: fields, date: Date(), json: configuration.logFormat == .json)
        if verbose { FileHandle.standardError.write(Data(line.utf8)) }
        guard let path = configuration.logFile else { return }
        let fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC)
        guard fd >= 0 else { return }
        defer { close(fd) }
        var bytes = Array(line.utf8)
        _ = bytes.withUnsafeMutableBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
    }
}
