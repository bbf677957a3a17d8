import SMTPProtocol

/// The envelope file format, version 2 (version 1 files still load). Pure: bytes in, bytes out, no I/O.
///
/// In qmail's spirit the file needs no real parsing: one record per line, a tag, then either one value or
/// `key=value` fields separated by single spaces. Every value is percent-encoded outside printable ASCII (0x21-0x7E),
/// so CR, LF, space, `%` and UTF-8 can never split or inject a line, and the file is plain ASCII.
///
/// ```
/// DUALMTA-ENV 2
/// id 0M8ZK3Q1F2A7XQ
/// sender alice@example.test                      (the null sender is an empty value: "sender ")
/// arrival 1795891140
/// client [2001:db8::1]:50022
/// helo client.example
/// protocol ESMTPS
/// body 8BITMIME                                  (only when BODY= was given)
/// smtputf8 0
/// next 0
/// held 0
/// warned 0
/// runs 2                                         (delivery runs that ended deferred)
/// bounce-of 0M8ZK3Q1F2A7XP                       (only on reports: the message reported on)
/// ret HDRS                                       (only when RET= was given)
/// envid abc%20123                                (only when ENVID= was given; decoded xtext)
/// extra x-later=1                                (0 or more, fields of a later version; keys [A-Za-z0-9._:-]+)
/// rcpt addr=%22john%20smith%22@lab.example state=pending [status=4.4.1] [reply=...] [updated=1795891200]
///      [remote-host=mx.example] [remote-addr=2001:db8::25] [attempts=3] [reported=ID|none|discarded]
///      [notify=NEVER|SUCCESS,FAILURE,DELAY] [orcpt=rfc822;bob@example.test]
/// attempt time=.. mx=.. pref=10 addr=.. family=ipv6 result=.. ms=41 reply=.. rcpt=.. rcpt=..
/// END size=1234 crc32=0a1b2c3d                  (lower-case hex, exactly 8 digits)
/// ```
/// `END` is the last line: the message size and the CRC-32 (IEEE) of every byte before the checksum's 8 hex digits
/// (so the size in END is covered too; any one changed byte is detected). A file
/// without a valid END, with an unknown tag or key, a missing or repeated field, or bad escaping is corrupt.
///
/// Version 1 (before the typed fields) kept the failed-run count, the report marks, the remote host and the
/// reported message's id as `extra` lines (`runs`, `rcpt.N.reported`, `rcpt.N.remote`, `bounce-of`); reading a
/// version 1 file moves them into their fields, and the next update writes version 2.
enum EnvelopeCodec {
    static let magic = "DUALMTA-ENV 2"
    static let magicVersion1 = "DUALMTA-ENV 1"
    /// Envelope files above this are rejected from their size alone, without reading them.
    static let maximumFileSize = 16 * 1024 * 1024

    struct DecodeError: Error, Equatable {
        let reason: String
        init(_ reason: String) { self.reason = reason }
    }

    // MARK: Encoding

    static func encode(_ envelope: Envelope) throws(SpoolError) -> [UInt8] {
        if let failure = envelope.validationFailure() { throw .invalidEnvelope(failure) }
        var out: [UInt8] = []
        out.reserveCapacity(512 + envelope.recipients.count * 64 + envelope.attempts.count * 160)
        func line(_ text: String) {
            out.append(contentsOf: text.utf8)
            out.append(0x0A)
        }
        line(magic)
        line("id \(envelope.id.rawValue)")
        line("sender \(escape(envelope.sender))")
        line("arrival \(envelope.arrival)")
        line("client \(escape(envelope.client))")
        line("helo \(escape(envelope.heloName))")
        line("protocol \(escape(envelope.protocolName))")
        if let body = envelope.bodyType { line("body \(escape(body))") }
        line("smtputf8 \(envelope.smtpUTF8 ? 1 : 0)")
        line("next \(envelope.nextAttempt)")
        line("held \(envelope.held ? 1 : 0)")
        line("warned \(envelope.delayWarned ? 1 : 0)")
        line("runs \(envelope.failedRuns)")
        if let bounceOf = envelope.bounceOf { line("bounce-of \(bounceOf.rawValue)") }
        if let ret = envelope.dsnReturn { line("ret \(ret.rawValue)") }
        if let envid = envelope.envelopeID { line("envid \(escape(envid))") }
        for key in envelope.extra.keys.sorted() {
            line("extra \(key)=\(escape(envelope.extra[key] ?? ""))")
        }
        for recipient in envelope.recipients {
            var text = "rcpt addr=\(escape(recipient.address)) state=\(recipient.state.rawValue)"
            if let status = recipient.lastStatus { text += " status=\(status)" }
            if let reply = recipient.lastReply { text += " reply=\(escape(reply))" }
            if let updated = recipient.updated { text += " updated=\(updated)" }
            if let remote = recipient.remoteMTA {
                text += " remote-host=\(escape(remote.host)) remote-addr=\(escape(remote.address))"
            }
            if recipient.attempts > 0 { text += " attempts=\(recipient.attempts)" }
            if let report = recipient.report { text += " reported=\(reportText(report))" }
            if let notify = recipient.notify { text += " notify=\(notifyText(notify))" }
            if let orcpt = recipient.originalRecipient { text += " orcpt=\(escape(orcpt))" }
            line(text)
        }
        for attempt in envelope.attempts {
            var text = "attempt time=\(attempt.time) mx=\(escape(attempt.mx)) pref=\(attempt.preference)"
            text += " addr=\(escape(attempt.address)) family=\(escape(attempt.family))"
            text += " result=\(escape(attempt.result)) ms=\(attempt.milliseconds) reply=\(escape(attempt.reply))"
            for recipient in attempt.recipients { text += " rcpt=\(escape(recipient))" }
            line(text)
        }
        out.append(contentsOf: "END size=\(envelope.messageSize) crc32=".utf8)
        line(hex8(CRC32.checksum(out)))
        return out
    }

    /// Percent-encodes every byte outside 0x21...0x7E, and `%` itself, with upper-case hex.
    static func escape(_ text: String) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(text.utf8.count)
        for byte in text.utf8 {
            if byte > 0x20 && byte < 0x7F && byte != UInt8(ascii: "%") {
                out.append(byte)
            } else {
                out.append(UInt8(ascii: "%"))
                out.append(hexDigits[Int(byte >> 4)])
                out.append(hexDigits[Int(byte & 0x0F)])
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    // MARK: Decoding

    /// Decodes and validates a whole file. `expectedID` is the id from the file name; the `id` line must match it.
    static func decode(_ bytes: [UInt8], expectedID: QueueID) throws(DecodeError) -> Envelope {
        guard !bytes.isEmpty else { throw DecodeError("empty file") }
        guard bytes.count <= maximumFileSize else { throw DecodeError("file too large") }
        guard bytes.last == 0x0A else { throw DecodeError("no END record (truncated)") }
        // The END line is everything after the second-to-last newline.
        let body = bytes.dropLast()
        let endStart = (body.lastIndex(of: 0x0A).map { $0 + 1 }) ?? 0
        let endLine = try text(bytes[endStart..<(bytes.count - 1)])
        let (messageSize, checksum) = try parseEnd(endLine)
        // The checksum covers everything before its own 8 hex digits, the END size field included.
        guard CRC32.checksum(bytes[0..<(bytes.count - 9)]) == checksum else { throw DecodeError("checksum mismatch") }

        var lines = bytes[0..<endStart].split(separator: 0x0A, omittingEmptySubsequences: false)
        if lines.last?.isEmpty == true { lines.removeLast() }
        let version: Int
        switch lines.first.map({ String(decoding: $0, as: UTF8.self) }) {
        case magic: version = 2
        case magicVersion1: version = 1
        case let first? where first.hasPrefix("DUALMTA-ENV "): throw DecodeError("unsupported version")
        default: throw DecodeError("bad magic")
        }

        var single: [String: String] = [:]
        var extra: [String: String] = [:]
        var recipients: [RecipientRecord] = []
        var attempts: [AttemptRecord] = []
        for raw in lines.dropFirst() {
            let line = try text(raw)
            guard let space = line.firstIndex(of: " ") else { throw DecodeError("record without value") }
            let tag = String(line[..<space])
            let rest = String(line[line.index(after: space)...])
            switch tag {
            case "id", "sender", "arrival", "client", "helo", "protocol", "body", "smtputf8", "next", "held",
                "warned", "runs", "bounce-of", "ret", "envid":
                guard version >= 2 || !Self.version2Tags.contains(tag) else {
                    throw DecodeError("unknown record \(tag.debugDescription)")
                }
                guard !rest.contains(" ") else { throw DecodeError("space in \(tag) value") }
                guard single.updateValue(rest, forKey: tag) == nil else { throw DecodeError("repeated \(tag)") }
            case "extra":
                let fields = try parseFields(rest, repeatable: [])
                guard fields.count == 1, let (key, values) = fields.first, Envelope.isExtraKey(key) else {
                    throw DecodeError("bad extra record")
                }
                guard extra.updateValue(try unescape(values[0]), forKey: key) == nil else {
                    throw DecodeError("repeated extra \(key)")
                }
            case "rcpt":
                recipients.append(try parseRecipient(rest, version: version))
            case "attempt":
                attempts.append(try parseAttempt(rest))
            default:
                throw DecodeError("unknown record \(tag.debugDescription)")
            }
        }

        func required(_ tag: String) throws(DecodeError) -> String {
            guard let value = single[tag] else { throw DecodeError("missing \(tag)") }
            return value
        }
        guard let id = QueueID(try required("id")), id == expectedID else { throw DecodeError("id mismatch") }
        var envelope = Envelope(
            id: id,
            sender: try unescape(try required("sender")),
            arrival: try integer(try required("arrival")),
            client: try unescape(try required("client")),
            heloName: try unescape(try required("helo")),
            protocolName: try unescape(try required("protocol")),
            recipients: recipients)
        if let body = single["body"] { envelope.bodyType = try unescape(body) }
        envelope.smtpUTF8 = try flag(try required("smtputf8"))
        envelope.messageSize = messageSize
        envelope.nextAttempt = try integer(try required("next"))
        envelope.held = try flag(try required("held"))
        envelope.delayWarned = try flag(try required("warned"))
        envelope.attempts = attempts
        envelope.extra = extra
        if let runs = single["runs"] {
            guard let count = Int(exactly: try integer(runs)) else { throw DecodeError("number out of range") }
            envelope.failedRuns = count
        }
        if let bounceOf = single["bounce-of"] {
            guard let id = QueueID(bounceOf) else { throw DecodeError("bad bounce-of") }
            envelope.bounceOf = id
        }
        if let ret = single["ret"] {
            guard let value = DSNReturn(rawValue: ret) else { throw DecodeError("bad ret") }
            envelope.dsnReturn = value
        }
        if let envid = single["envid"] { envelope.envelopeID = try unescape(envid) }
        if version == 1 { migrateVersion1Extras(&envelope) }
        if let failure = envelope.validationFailure() { throw DecodeError(failure) }
        return envelope
    }

    private static let version2Tags: Set<String> = ["runs", "bounce-of", "ret", "envid"]

    /// Moves the `extra` keys version 1 used for queue state into their typed fields. A value that does not parse
    /// stays in `extra` untouched: loading never loses what a file holds.
    static func migrateVersion1Extras(_ envelope: inout Envelope) {
        if let runs = envelope.extra["runs"], let count = Int(runs), count >= 0 {
            envelope.failedRuns = count
            envelope.extra["runs"] = nil
        }
        if let text = envelope.extra["bounce-of"], let id = QueueID(text) {
            envelope.bounceOf = id
            envelope.extra["bounce-of"] = nil
        }
        for index in envelope.recipients.indices {
            let reportedKey = "rcpt.\(index).reported"
            if let text = envelope.extra[reportedKey], let mark = reportMark(text) {
                envelope.recipients[index].report = mark
                envelope.extra[reportedKey] = nil
            }
            // Version 1 wrote "host [address]".
            let remoteKey = "rcpt.\(index).remote"
            if let text = envelope.extra[remoteKey], let space = text.lastIndex(of: " ") {
                let address = text[text.index(after: space)...]
                if address.hasPrefix("["), address.hasSuffix("]") {
                    envelope.recipients[index].remoteMTA = RemoteMTA(
                        host: String(text[..<space]), address: String(address.dropFirst().dropLast()))
                    envelope.extra[remoteKey] = nil
                }
            }
        }
    }

    static func reportText(_ mark: ReportMark) -> String {
        switch mark {
        case .queued(let id): return id.rawValue
        case .none: return "none"
        case .discarded: return "discarded"
        }
    }

    static func reportMark(_ text: String) -> ReportMark? {
        switch text {
        case "none": return ReportMark.none
        case "discarded": return .discarded
        default: return QueueID(text).map(ReportMark.queued)
        }
    }

    static func notifyText(_ notify: DSNNotify) -> String {
        if notify.isNever { return "NEVER" }
        var parts: [String] = []
        if notify.success { parts.append("SUCCESS") }
        if notify.failure { parts.append("FAILURE") }
        if notify.delay { parts.append("DELAY") }
        return parts.joined(separator: ",")
    }

    static func notify(_ text: String) -> DSNNotify? {
        if text == "NEVER" { return .never }
        var notify = DSNNotify()
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            switch part {
            case "SUCCESS" where !notify.success: notify.success = true
            case "FAILURE" where !notify.failure: notify.failure = true
            case "DELAY" where !notify.delay: notify.delay = true
            default: return nil
            }
        }
        return notify
    }

    private static func parseEnd(_ line: String) throws(DecodeError) -> (Int64, UInt32) {
        let parts = line.split(separator: " ", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0] == "END" else { throw DecodeError("no END record (truncated)") }
        guard parts[1].hasPrefix("size="), parts[2].hasPrefix("crc32=") else { throw DecodeError("bad END record") }
        let size = String(parts[1].dropFirst(5))
        let crc = parts[2].dropFirst(6)
        guard crc.utf8.count == 8, crc.utf8.allSatisfy({ hexDigitsLower.contains($0) }),
            let checksum = UInt32(crc, radix: 16)
        else { throw DecodeError("bad END record") }
        let messageSize = try integer(size)
        guard messageSize >= 0 else { throw DecodeError("bad END record") }
        return (messageSize, checksum)
    }

    private static let recipientFieldsVersion1: Set<String> = ["addr", "state", "status", "reply", "updated"]
    private static let recipientFields = recipientFieldsVersion1.union([
        "remote-host", "remote-addr", "attempts", "reported", "notify", "orcpt",
    ])

    private static func parseRecipient(_ rest: String, version: Int) throws(DecodeError) -> RecipientRecord {
        let fields = try parseFields(rest, repeatable: [])
        let known = version == 1 ? recipientFieldsVersion1 : recipientFields
        guard Set(fields.keys).isSubset(of: known) else { throw DecodeError("unknown rcpt field") }
        guard let address = fields["addr"]?.first, let stateText = fields["state"]?.first,
            let state = RecipientState(rawValue: stateText)
        else { throw DecodeError("bad rcpt record") }
        var record = RecipientRecord(address: try unescape(address), state: state)
        if let status = fields["status"]?.first {
            guard let parsed = EnhancedStatus(try unescape(status)) else { throw DecodeError("bad status") }
            record.lastStatus = parsed
        }
        if let reply = fields["reply"]?.first { record.lastReply = try unescape(reply) }
        if let updated = fields["updated"]?.first { record.updated = try integer(updated) }
        switch (fields["remote-host"]?.first, fields["remote-addr"]?.first) {
        case (nil, nil): break
        case (let host?, let address?):
            record.remoteMTA = RemoteMTA(host: try unescape(host), address: try unescape(address))
        default: throw DecodeError("remote-host and remote-addr come together")
        }
        if let attempts = fields["attempts"]?.first {
            guard let count = Int(exactly: try integer(attempts)), count >= 0 else { throw DecodeError("bad attempts") }
            record.attempts = count
        }
        if let reported = fields["reported"]?.first {
            guard let mark = reportMark(reported) else { throw DecodeError("bad reported") }
            record.report = mark
        }
        if let notify = fields["notify"]?.first {
            guard let value = Self.notify(notify) else { throw DecodeError("bad notify") }
            record.notify = value
        }
        if let orcpt = fields["orcpt"]?.first { record.originalRecipient = try unescape(orcpt) }
        return record
    }

    private static func parseAttempt(_ rest: String) throws(DecodeError) -> AttemptRecord {
        let fields = try parseFields(rest, repeatable: ["rcpt"])
        let required = ["time", "mx", "pref", "addr", "family", "result", "ms", "reply"]
        guard Set(fields.keys).isSubset(of: Set(required + ["rcpt"])) else {
            throw DecodeError("unknown attempt field")
        }
        var values: [String: String] = [:]
        for key in required {
            guard let value = fields[key]?.first else { throw DecodeError("attempt without \(key)") }
            values[key] = value
        }
        var recipients: [String] = []
        for recipient in fields["rcpt"] ?? [] { recipients.append(try unescape(recipient)) }
        let preference = try integer(values["pref"] ?? "")
        let milliseconds = try integer(values["ms"] ?? "")
        guard let preference = Int(exactly: preference), let milliseconds = Int(exactly: milliseconds) else {
            throw DecodeError("number out of range")
        }
        return AttemptRecord(
            time: try integer(values["time"] ?? ""), recipients: recipients, mx: try unescape(values["mx"] ?? ""),
            preference: preference, address: try unescape(values["addr"] ?? ""),
            family: try unescape(values["family"] ?? ""), result: try unescape(values["result"] ?? ""),
            reply: try unescape(values["reply"] ?? ""), milliseconds: milliseconds)
    }

    /// Splits `k=v k=v` (values still escaped). Keys other than `repeatable` may appear once.
    private static func parseFields(_ text: String, repeatable: Set<String>) throws(DecodeError) -> [String: [String]] {
        var fields: [String: [String]] = [:]
        for field in text.split(separator: " ", omittingEmptySubsequences: false) {
            guard let equals = field.firstIndex(of: "=") else { throw DecodeError("field without '='") }
            let key = String(field[..<equals])
            guard !key.isEmpty else { throw DecodeError("empty field name") }
            if fields[key] != nil && !repeatable.contains(key) { throw DecodeError("repeated field \(key)") }
            fields[key, default: []].append(String(field[field.index(after: equals)...]))
        }
        return fields
    }

    /// A line as text: only printable ASCII and spaces may appear (everything else is escaped on write).
    private static func text(_ bytes: ArraySlice<UInt8>) throws(DecodeError) -> String {
        guard bytes.allSatisfy({ $0 >= 0x20 && $0 < 0x7F }) else { throw DecodeError("raw control or 8-bit byte") }
        return String(decoding: bytes, as: UTF8.self)
    }

    static func unescape(_ text: String) throws(DecodeError) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(text.utf8.count)
        var iterator = text.utf8.makeIterator()
        while let byte = iterator.next() {
            guard byte == UInt8(ascii: "%") else {
                out.append(byte)
                continue
            }
            guard let high = iterator.next().flatMap(hexValue), let low = iterator.next().flatMap(hexValue) else {
                throw DecodeError("bad percent escape")
            }
            out.append(high << 4 | low)
        }
        guard let decoded = String(validating: out, as: UTF8.self) else { throw DecodeError("invalid UTF-8") }
        return decoded
    }

    /// Decimal Int64: an optional "-" and 1...19 digits, nothing else ("+1", " 1", "0x1" are corrupt).
    private static func integer(_ text: String) throws(DecodeError) -> Int64 {
        let digits = text.hasPrefix("-") ? text.utf8.dropFirst() : text.utf8[...]
        guard !digits.isEmpty, digits.count <= 19, digits.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
            let value = Int64(text)
        else { throw DecodeError("bad number \(text.debugDescription)") }
        return value
    }

    private static func flag(_ text: String) throws(DecodeError) -> Bool {
        switch text {
        case "0": return false
        case "1": return true
        default: throw DecodeError("bad flag \(text.debugDescription)")
        }
    }

    private static let hexDigits = Array("0123456789ABCDEF".utf8)
    private static let hexDigitsLower = Set("0123456789abcdef".utf8)

    /// Upper-case hex only: one spelling per value keeps the format canonical.
    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
        default: return nil
        }
    }

    private static func hex8(_ value: UInt32) -> String {
        let text = String(value, radix: 16)
        return String(repeating: "0", count: 8 - text.count) + text
    }
}

/// CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320), as zlib computes it.
enum CRC32 {
    private static let table: [UInt32] = (0..<256).map { index in
        var value = UInt32(index)
        for _ in 0..<8 { value = value & 1 == 1 ? 0xEDB8_8320 ^ (value >> 1) : value >> 1 }
        return value
    }

    static func checksum(_ bytes: some Collection<UInt8>) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in bytes { crc = table[Int((crc ^ UInt32(byte)) & 0xFF)] ^ (crc >> 8) }
        return crc ^ 0xFFFF_FFFF
    }
}
