import Foundation
import Glibc
import SMTPProtocol

/// One event of a message's story, e.g. `attempt` with mx, address, family, result and reply.
public struct HistoryEvent: Hashable, Sendable {
    /// Unix seconds.
    public var time: Int64
    /// received, attempt, delivered, failed, deferred, expired, report, double-bounce, no-report, discarded,
    /// removed, deleted.
    public var event: String
    /// Further fields in a fixed order (JSON keys).
    public var fields: [Field]

    public struct Field: Hashable, Sendable {
        public var name: String
        public var value: String

        public init(_ name: String, _ value: String) {
            self.name = name
            self.value = value
        }
    }

    public init(time: Int64, event: String, fields: [Field] = []) {
        self.time = time
        self.event = event
        self.fields = fields
    }

    public subscript(name: String) -> String? { fields.first { $0.name == name }?.value }

    /// One JSON object on one line.
    func jsonLine() -> [UInt8] {
        // Written by hand (sorted keys, one line): this runs several times for every delivered message, and
        // Foundation's JSONSerialization was a visible share of the relay path's CPU.
        var object: [String: String] = ["time": MailDate.iso8601(time), "event": event]
        for field in fields where object[field.name] == nil { object[field.name] = field.value }
        var out: [UInt8] = [UInt8(ascii: "{")]
        for (position, key) in object.keys.sorted().enumerated() {
            if position > 0 { out.append(UInt8(ascii: ",")) }
            Self.appendJSONString(key, to: &out)
            out.append(UInt8(ascii: ":"))
            Self.appendJSONString(object[key] ?? "", to: &out)
        }
        out += [UInt8(ascii: "}"), 10]
        return out
    }

    /// A JSON string literal (RFC 8259 §7): quotes, backslashes and control characters escaped, the rest as UTF-8.
    static func appendJSONString(_ text: String, to out: inout [UInt8]) {
        let hex = Array("0123456789abcdef".utf8)
        out.append(UInt8(ascii: "\""))
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""): out += [UInt8(ascii: "\\"), UInt8(ascii: "\"")]
            case UInt8(ascii: "\\"): out += [UInt8(ascii: "\\"), UInt8(ascii: "\\")]
            case 0x0A: out += [UInt8(ascii: "\\"), UInt8(ascii: "n")]
            case 0x0D: out += [UInt8(ascii: "\\"), UInt8(ascii: "r")]
            case 0x09: out += [UInt8(ascii: "\\"), UInt8(ascii: "t")]
            case 0..<0x20:
                out += Array("\\u00".utf8) + [hex[Int(byte >> 4)], hex[Int(byte & 0x0F)]]
            default: out.append(byte)
            }
        }
        out.append(UInt8(ascii: "\""))
    }

    /// `YYYY-MM-DDTHH:MM:SSZ` (as `MailDate.iso8601` writes it) back to unix seconds.
    static func unixSeconds(iso8601 text: String) -> Int64? {
        let digits = text.utf8.map { Int($0) - 48 }
        guard text.utf8.count == 20, Array(text.utf8)[19] == UInt8(ascii: "Z") else { return nil }
        func number(_ range: Range<Int>) -> Int? {
            var value = 0
            for index in range {
                guard (0...9).contains(digits[index]) else { return nil }
                value = value * 10 + digits[index]
            }
            return value
        }
        guard let year = number(0..<4), let month = number(5..<7), let day = number(8..<10),
            let hour = number(11..<13), let minute = number(14..<16), let second = number(17..<19),
            (1...12).contains(month), (1...31).contains(day)
        else { return nil }
        // Days from 1970-01-01 to the civil date (Howard Hinnant's algorithm).
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400
        let dayOfYear = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        let days = era * 146_097 + dayOfEra - 719_468
        return Int64(days) * 86_400 + Int64(hour * 3600 + minute * 60 + second)
    }

    /// Nil for a line that is not a complete event (the torn last line of a crash).
    init?(jsonLine line: Substring) {
        guard let data = line.data(using: .utf8),
            let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
            let event = object["event"] as? String, let timeText = object["time"] as? String,
            let time = Self.unixSeconds(iso8601: timeText)
        else { return nil }
        self.time = time
        self.event = event
        fields = object.keys.sorted().filter { $0 != "event" && $0 != "time" }.compactMap { key in
            (object[key] as? String).map { Field(key, $0) }
        }
    }
}

/// The per-message event journal under `<spool>/state/history/<id>.log`: append-only JSON lines, one file per
/// queue id, kept after the message left the queue until `prune` removes it (by age, then by total size).
/// Appends are single `write` calls on an `O_APPEND` file, so concurrent writers never interleave within a line;
/// a crash can leave at most a torn last line, which the reader skips. A journal is bounded: past `maxBytes` only
/// the final events (removed, deleted) are still written. Blocking: call from work queues only. History is a
/// record, not the queue's state: a failed append is ignored, never a reason to fail a delivery.
public struct MessageHistory: Sendable {
    public let directory: String
    /// The bound of one message's journal.
    public var maxBytes = 256 * 1024

    public init(stateDirectory: String) {
        directory = stateDirectory + "/history"
    }

    func path(_ id: QueueID) -> String { "\(directory)/\(id.rawValue).log" }

    public func exists(_ id: QueueID) -> Bool { access(path(id), F_OK) == 0 }

    public func append(_ id: QueueID, _ events: [HistoryEvent]) {
        guard !events.isEmpty else { return }
        let flags = O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC
        var fd = open(path(id), flags, 0o600)
        if fd < 0 && errno == ENOENT {
            // The first journal of this spool: make the directory then (not on every append).
            _ = mkdir(directory, 0o700)
            fd = open(path(id), flags, 0o600)
        }
        guard fd >= 0 else { return }
        defer { close(fd) }
        var info = stat()
        let size = fstat(fd, &info) == 0 ? Int(info.st_size) : 0
        let final: Set<String> = ["removed", "deleted"]
        var bytes: [UInt8] = []
        for event in events where size + bytes.count < maxBytes || final.contains(event.event) {
            bytes += event.jsonLine()
        }
        guard !bytes.isEmpty else { return }
        _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    }

    /// The events in the order written; a line that does not parse (a torn last line) is skipped.
    public func events(_ id: QueueID) -> [HistoryEvent]? {
        guard let data = FileManager.default.contents(atPath: path(id)) else { return nil }
        let text = String(decoding: data, as: UTF8.self)
        return text.split(separator: "\n").compactMap { HistoryEvent(jsonLine: $0) }
    }

    /// Removes the journals of messages no longer queued once they are older than `retention` seconds (by their
    /// last write), then the oldest of those until the directory holds at most `maxTotalBytes`. Returns the count.
    @discardableResult
    public func prune(now: Int64, retention: Int64, maxTotalBytes: Int, isQueued: (QueueID) -> Bool) -> Int {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return 0 }
        var entries: [(path: String, modified: Int64, size: Int, queued: Bool)] = []
        for name in names where name.hasSuffix(".log") {
            let file = "\(directory)/\(name)"
            var info = stat()
            guard lstat(file, &info) == 0 else { continue }
            let queued = QueueID(String(name.dropLast(4))).map(isQueued) ?? false
            entries.append((file, Int64(info.st_mtim.tv_sec), Int(info.st_size), queued))
        }
        var removed = 0
        var total = entries.reduce(0) { $0 + $1.size }
        for entry in entries.sorted(by: { $0.modified < $1.modified }) where !entry.queued {
            guard now - entry.modified >= retention || total > maxTotalBytes else { continue }
            if unlink(entry.path) == 0 {
                removed += 1
                total -= entry.size
            }
        }
        return removed
    }
}
