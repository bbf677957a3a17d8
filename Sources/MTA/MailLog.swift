import Foundation
import Logging
import SMTPProtocol
import Synchronization

/// One line per event, to stderr and optionally a file (`log_file`, `log_format`):
/// `2026-11-28T18:39:00Z info  delivery id=Q7F3K2 rcpt=<b@mx.example> ... ms=3`, or the same as a JSON object.
/// The event name is the log message; fields are the metadata, printed in a fixed order so lines are greppable.
public struct MailLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level = .info
    private let sink: LogSink

    init(sink: LogSink) {
        self.sink = sink
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var fields = metadata
        if let extra = event.metadata { fields.merge(extra) { _, new in new } }
        sink.write(
            MailLogFormatter.format(
                level: event.level, message: event.message.description, fields: fields, date: Date(),
                json: sink.json))
    }
}

/// Formats a log line; pure, so its format is unit-tested.
enum MailLogFormatter {
    /// Fields that come first, in this order; the rest follow sorted by name.
    static let leadingKeys = [
        "id", "session", "client", "from", "rcpt", "mx", "pref", "addr", "family", "result", "status", "reply",
        "reason",
    ]

    static func format(level: Logger.Level, message: String, fields: Logger.Metadata, date: Date, json: Bool) -> String
    {
        let stamp = timestamp(date)
        let ordered =
            leadingKeys.compactMap { key in fields[key].map { (key, $0.description) } }
            + fields.keys.filter { !leadingKeys.contains($0) }.sorted().map { ($0, fields[$0]!.description) }
        if json {
            var object =
                "{\"ts\":\(quoteJSON(stamp)),\"level\":\(quoteJSON(level.rawValue)),\"event\":\(quoteJSON(message))"
            for (key, value) in ordered { object += ",\(quoteJSON(key)):\(quoteJSON(value))" }
            return object + "}\n"
        }
        // Short names are padded so messages line up; longer ones ("warning", "critical") are never cut.
        let name = level.rawValue
        let levelName = name.utf8.count >= 5 ? name : name + String(repeating: " ", count: 5 - name.utf8.count)
        var line = "\(stamp) \(levelName) \(message)"
        for (key, value) in ordered { line += " \(key)=\(quoteText(value))" }
        return line + "\n"
    }

    static func timestamp(_ date: Date) -> String {
        MailDate.iso8601(Int64(date.timeIntervalSince1970.rounded(.down)))
    }

    /// Values with spaces, quotes or control characters are quoted; control characters are escaped, so a
    /// hostile reply or address can never start a new log line.
    static func quoteText(_ value: String) -> String {
        let needsQuotes =
            value.isEmpty || value.contains { $0 == " " || $0 == "\"" || $0 == "=" || $0.isNewline }
            || value.unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x7f }
        guard needsQuotes else { return value }
        return "\"" + escape(value) + "\""
    }

    static func quoteJSON(_ value: String) -> String { "\"" + escape(value) + "\"" }

    private static func escape(_ value: String) -> String {
        var out = ""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if scalar.value < 0x20 || scalar.value == 0x7f {
                    out += String(format: "\\u%04x", scalar.value)
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out
    }
}

/// Where log lines go. One `write(2)` per line keeps lines whole when several threads log at once.
final class LogSink: Sendable {
    let json: Bool
    private let fileDescriptor: Mutex<Int32?>

    init(json: Bool, file: String?) throws(ConfigurationError) {
        self.json = json
        var descriptor: Int32? = nil
        if let file {
            let fd = open(file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o640)
            guard fd >= 0 else {
                throw ConfigurationError(
                    file: file, line: 0, message: "cannot open log_file: \(String(cString: strerror(errno)))")
            }
            descriptor = fd
        }
        fileDescriptor = Mutex(descriptor)
    }

    func write(_ line: String) {
        var bytes = Array(line.utf8)
        bytes.withUnsafeMutableBytes { buffer in
            _ = Glibc.write(2, buffer.baseAddress, buffer.count)
            fileDescriptor.withLock { fd in
                if let fd { _ = Glibc.write(fd, buffer.baseAddress, buffer.count) }
            }
        }
    }
}

/// Sets up swift-log once, at start (only `main` should call this).
public enum MailLog {
    public static func bootstrap(format: Configuration.LogFormat, file: String?) throws(ConfigurationError) {
        let sink = try LogSink(json: format == .json, file: file)
        LoggingSystem.bootstrap { _ in MailLogHandler(sink: sink) }
    }
}
