import Foundation

/// Read-only browsing of the local Maildirs under `<spool>/mailboxes/<domain>/<user>/{new,cur}`. Every name that
/// comes from a URL is checked to be one plain directory entry, so a request cannot leave the mailbox tree.
public struct Maildirs: Sendable {
    public let root: String

    public struct Mailbox: Equatable, Sendable {
        public var domain: String
        public var user: String
        public var count: Int
    }

    public struct Entry: Equatable, Sendable {
        /// `new/NAME` or `cur/NAME`.
        public var folder: String
        public var name: String
        public var size: Int
        public var modified: Int64
        public var headers: [MailHeaders.Field]
    }

    public init(root: String) {
        self.root = root
    }

    /// A single path component that names an entry below its directory (no "/", no "." or "..", no NUL).
    public static func isPlainName(_ name: String) -> Bool {
        !name.isEmpty && !name.hasPrefix(".") && !name.contains("/") && !name.contains("\0")
    }

    public func mailboxes() -> [Mailbox] {
        var result: [Mailbox] = []
        for domain in Self.list(root) where Self.isPlainName(domain) {
            for user in Self.list("\(root)/\(domain)") where Self.isPlainName(user) {
                let count = ["new", "cur"].reduce(0) { $0 + Self.list("\(root)/\(domain)/\(user)/\($1)").count }
                result.append(Mailbox(domain: domain, user: user, count: count))
            }
        }
        return result
    }

    /// The messages of one mailbox, newest first; nil when there is no such mailbox.
    public func entries(domain: String, user: String) -> [Entry]? {
        guard Self.isPlainName(domain), Self.isPlainName(user) else { return nil }
        let base = "\(root)/\(domain)/\(user)"
        guard FileManager.default.fileExists(atPath: "\(base)/new") else { return nil }
        var entries: [Entry] = []
        for folder in ["new", "cur"] {
            for name in Self.list("\(base)/\(folder)") where Self.isPlainName(name) {
                let path = "\(base)/\(folder)/\(name)"
                let attributes = try? FileManager.default.attributesOfItem(atPath: path)
                let size = (attributes?[.size] as? NSNumber)?.intValue ?? 0
                let modified = (attributes?[.modificationDate] as? Date).map { Int64($0.timeIntervalSince1970) } ?? 0
                let head = Self.readHead(path)
                entries.append(
                    Entry(
                        folder: folder, name: name, size: size, modified: modified,
                        headers: MailHeaders.parse(head).fields))
            }
        }
        return entries.sorted { ($0.modified, $0.name) > ($1.modified, $1.name) }
    }

    /// The raw bytes of one message (`folder` is "new" or "cur").
    public func message(domain: String, user: String, folder: String, name: String) -> [UInt8]? {
        guard Self.isPlainName(domain), Self.isPlainName(user), folder == "new" || folder == "cur",
            Self.isPlainName(name)
        else { return nil }
        return FileManager.default.contents(atPath: "\(root)/\(domain)/\(user)/\(folder)/\(name)").map(Array.init)
    }

    private static func list(_ path: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted()
    }

    /// The first 64 KiB, enough for the header section of any message we show in a list.
    private static func readHead(_ path: String) -> [UInt8] {
        guard let handle = FileHandle(forReadingAtPath: path) else { return [] }
        defer { try? handle.close() }
        return Array((try? handle.read(upToCount: 64 * 1024)) ?? Data())
    }
}

/// The header section of a message split into fields (RFC 5322 §2.2: unfolded), and the body after it.
/// Values stay bytes-decoded-as-UTF-8 with replacement characters; they are shown, never interpreted.
public struct MailHeaders: Equatable, Sendable {
    public struct Field: Equatable, Sendable {
        public var name: String
        public var value: String
    }

    public var fields: [Field]
    public var body: [UInt8]

    public func value(_ name: String) -> String? {
        fields.first { $0.name.lowercased() == name.lowercased() }?.value
    }

    public static func parse(_ bytes: [UInt8]) -> MailHeaders {
        var fields: [Field] = []
        var index = 0
        while index < bytes.count {
            var end = bytes[index...].firstIndex(of: 0x0A) ?? bytes.count
            var line = Array(bytes[index..<end])
            if line.last == 0x0D { line.removeLast() }
            if line.isEmpty {
                return MailHeaders(fields: fields, body: Array(bytes[min(end + 1, bytes.count)...]))
            }
            if line.first == 0x20 || line.first == 0x09, !fields.isEmpty {
                fields[fields.count - 1].value += " " + String(decoding: line, as: UTF8.self).trimmed()
            } else if let colon = line.firstIndex(of: UInt8(ascii: ":")) {
                fields.append(
                    Field(
                        name: String(decoding: line[..<colon], as: UTF8.self),
                        value: String(decoding: line[(colon + 1)...], as: UTF8.self).trimmed()))
            } else {
                // Not a header line: the header section ended without a blank line.
                return MailHeaders(fields: fields, body: Array(bytes[index...]))
            }
            end += 1
            index = end
        }
        return MailHeaders(fields: fields, body: [])
    }
}

extension String {
    fileprivate func trimmed() -> String {
        String(drop { $0 == " " || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\t" }.reversed())
    }
}
