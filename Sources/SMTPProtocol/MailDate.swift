/// The one date formatter: unix seconds to the text forms dualmta writes, always in UTC, with no locale, time zone
/// database or Foundation (so it is the same on every machine and cheap enough for every log line).
/// - `rfc5322`: `Tue, 14 May 2024 09:58:02 +0000` (RFC 5322 §3.3), for Date, Received and report fields;
/// - `iso8601`: `2024-05-14T09:58:02Z`, for log lines and queue listings;
/// - `compact`: `20240514095802`, inside Message-IDs.
public enum MailDate {
    private static let weekdays = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
    private static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
    /// 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z: odd input is clamped instead of trapping.
    public static let earliest: Int64 = -62_135_596_800
    public static let latest: Int64 = 253_402_300_799

    struct Civil: Equatable {
        var year: Int, month: Int, day: Int, hour: Int, minute: Int, second: Int
        /// 0 = Sunday.
        var weekday: Int
    }

    static func civil(_ unixSeconds: Int64) -> Civil {
        let seconds = Int(min(max(unixSeconds, earliest), latest))
        let days = seconds >= 0 ? seconds / 86_400 : -((-seconds + 86_399) / 86_400)
        let secondOfDay = seconds - days * 86_400
        // Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's civil_from_days algorithm).
        let shifted = days + 719_468
        let era = (shifted >= 0 ? shifted : shifted - 146_096) / 146_097
        let dayOfEra = shifted - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1_460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthIndex = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * monthIndex + 2) / 5 + 1
        let month = monthIndex < 10 ? monthIndex + 3 : monthIndex - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        // 1970-01-01 was a Thursday (index 4).
        let weekday = ((days % 7) + 7 + 4) % 7
        return Civil(
            year: year, month: month, day: day, hour: secondOfDay / 3_600, minute: secondOfDay % 3_600 / 60,
            second: secondOfDay % 60, weekday: weekday)
    }

    public static func rfc5322(_ unixSeconds: Int64) -> String {
        let c = civil(unixSeconds)
        var out = Array(weekdays[c.weekday].utf8) + Array(", ".utf8)
        append(c.day, width: 1, to: &out)
        out += Array(" \(months[c.month - 1]) ".utf8)
        append(c.year, width: 4, to: &out)
        out.append(UInt8(ascii: " "))
        time(c, into: &out)
        out += Array(" +0000".utf8)
        return String(decoding: out, as: UTF8.self)
    }

    public static func iso8601(_ unixSeconds: Int64) -> String {
        let c = civil(unixSeconds)
        var out: [UInt8] = []
        out.reserveCapacity(20)
        append(c.year, width: 4, to: &out)
        out.append(UInt8(ascii: "-"))
        append(c.month, width: 2, to: &out)
        out.append(UInt8(ascii: "-"))
        append(c.day, width: 2, to: &out)
        out.append(UInt8(ascii: "T"))
        time(c, into: &out)
        out.append(UInt8(ascii: "Z"))
        return String(decoding: out, as: UTF8.self)
    }

    public static func compact(_ unixSeconds: Int64) -> String {
        let c = civil(unixSeconds)
        var out: [UInt8] = []
        for (value, width) in [(c.year, 4), (c.month, 2), (c.day, 2), (c.hour, 2), (c.minute, 2), (c.second, 2)] {
            append(value, width: width, to: &out)
        }
        return String(decoding: out, as: UTF8.self)
    }

    private static func time(_ c: Civil, into out: inout [UInt8]) {
        append(c.hour, width: 2, to: &out)
        out.append(UInt8(ascii: ":"))
        append(c.minute, width: 2, to: &out)
        out.append(UInt8(ascii: ":"))
        append(c.second, width: 2, to: &out)
    }

    /// Decimal digits, zero-padded to at least `width` (formatted by hand: this runs for every log line).
    private static func append(_ value: Int, width: Int, to out: inout [UInt8]) {
        var digits: [UInt8] = []
        var rest = value
        repeat {
            digits.append(UInt8(48 + rest % 10))
            rest /= 10
        } while rest > 0
        for _ in digits.count..<max(width, digits.count) { out.append(48) }
        out += digits.reversed()
    }
}
