import Foundation

/// A queue id: 14 characters of `[0-9A-Z]`. The first 10 are the creation time in microseconds since 1970 in base 36
/// (fixed width, so text order is time order until the year 2085), the last 4 are random. Only the spool makes them;
/// they are the only names the spool ever puts in a path, never envelope data.
public struct QueueID: Hashable, Comparable, Sendable, CustomStringConvertible, Codable {
    public let rawValue: String

    static let length = 14
    static let timeDigits = 10
    static let suffixSpace: UInt32 = 36 * 36 * 36 * 36
    static let maxTime: UInt64 = 3_656_158_440_062_975  // 36^10 - 1
    private static let alphabet = Array("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ".utf8)

    /// Accepts exactly `^[0-9A-Z]{14}$`, so "../x", "a/b" or lower case never reach a path.
    public init?(_ text: String) {
        let bytes = Array(text.utf8)
        guard bytes.count == Self.length, bytes.allSatisfy(Self.isIDByte) else { return nil }
        rawValue = text
    }

    /// Builds the id for a time value and a random suffix (pure; the generator supplies both).
    init(microseconds: UInt64, suffix: UInt32) {
        var time = min(microseconds, Self.maxTime)
        var text = [UInt8](repeating: 0, count: Self.length)
        for index in stride(from: Self.timeDigits - 1, through: 0, by: -1) {
            text[index] = Self.alphabet[Int(time % 36)]
            time /= 36
        }
        var rest = suffix % Self.suffixSpace
        for index in stride(from: Self.length - 1, through: Self.timeDigits, by: -1) {
            text[index] = Self.alphabet[Int(rest % 36)]
            rest /= 36
        }
        rawValue = String(decoding: text, as: UTF8.self)
    }

    /// The time part: microseconds since 1970.
    public var microseconds: UInt64 {
        var value: UInt64 = 0
        for byte in rawValue.utf8.prefix(Self.timeDigits) {
            value = value * 36 + UInt64(byte <= UInt8(ascii: "9") ? byte - 48 : byte - 55)
        }
        return value
    }

    static func isIDByte(_ byte: UInt8) -> Bool {
        (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
    }

    public var description: String { rawValue }

    public static func < (lhs: QueueID, rhs: QueueID) -> Bool { lhs.rawValue < rhs.rawValue }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let text = try container.decode(String.self)
        guard let id = QueueID(text) else {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "not a queue id: \(text)")
        }
        self = id
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
    }
}

/// Hands out ids whose time part strictly increases within this process, so ids sort by arrival even when many are
/// made in the same microsecond. Uniqueness across processes comes from the random suffix plus O_EXCL at creation.
///
/// Confinement: `last` is read and written only while `lock` is held, which makes the class safe to share.
final class QueueIDGenerator: @unchecked Sendable {
    private let lock = NSLock()
    private var last: UInt64 = 0
    private let clock: @Sendable () -> UInt64

    init(clock: @escaping @Sendable () -> UInt64 = QueueIDGenerator.systemMicroseconds) {
        self.clock = clock
    }

    func next() -> QueueID {
        let now = clock()
        let time: UInt64 = lock.withLock {
            last = max(now, last + 1)
            return last
        }
        return QueueID(microseconds: time, suffix: UInt32.random(in: 0..<QueueID.suffixSpace))
    }

    @Sendable static func systemMicroseconds() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return UInt64(max(0, now.tv_sec)) * 1_000_000 + UInt64(max(0, now.tv_nsec)) / 1_000
    }
}
