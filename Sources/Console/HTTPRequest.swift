/// One parsed HTTP/1.x request head (RFC 9112 §2-§5). The console takes no request bodies.
public struct HTTPRequest: Equatable, Sendable {
    public var method: String
    /// The decoded path, always starting with "/".
    public var path: String
    /// Decoded query parameters in their order.
    public var query: [Parameter]
    public var version: String
    public var headers: [Header]

    public struct Header: Equatable, Sendable {
        public var name: String
        public var value: String
    }

    public struct Parameter: Equatable, Sendable {
        public var name: String
        public var value: String
    }

    /// The first header of that name (names compare case-insensitively).
    public func header(_ name: String) -> String? {
        headers.first { $0.name.lowercased() == name.lowercased() }?.value
    }

    public func parameter(_ name: String) -> String? { query.first { $0.name == name }?.value }

    /// The path split at "/", empty segments dropped: "/api/message/Q1" -> ["api", "message", "Q1"].
    public var segments: [String] { path.split(separator: "/").map(String.init) }
}

/// The limits a request head must keep, like the SMTP side's line and command limits.
public struct HTTPLimits: Sendable {
    public var maxHeadBytes = 8 * 1024
    public var maxHeaders = 50
    public var maxRequestLine = 2 * 1024

    public init() {}
}

/// What the bytes received so far amount to.
public enum HTTPParseResult: Equatable, Sendable {
    /// No blank line yet and no limit broken: read on.
    case incomplete
    case request(HTTPRequest)
    /// A request that must be refused with this status.
    case refused(HTTPStatus, reason: String)
}

/// The request-head parser: pure, byte based, so it can be table-tested and fuzzed without a socket.
public enum HTTPRequestParser {
    public static func parse(_ bytes: [UInt8], limits: HTTPLimits = HTTPLimits()) -> HTTPParseResult {
        // The request line is judged before the head's size, and both before the end arrives, so a server reading
        // the head piece by piece refuses it with the same status as one that has it all.
        guard let end = headEnd(bytes, limit: limits.maxHeadBytes) else {
            if firstLineLength(bytes) > limits.maxRequestLine {
                return .refused(.uriTooLong, reason: "request line over \(limits.maxRequestLine) bytes")
            }
            if bytes.count > limits.maxHeadBytes {
                return .refused(.headerFieldsTooLarge, reason: "request head over \(limits.maxHeadBytes) bytes")
            }
            return .incomplete
        }
        // Lines end in CRLF or a bare LF (RFC 9112 §2.2 lets a recipient accept LF alone).
        var lines = bytes[..<end].split(separator: 0x0A, omittingEmptySubsequences: false).map { line in
            line.last == 0x0D ? line.dropLast() : line
        }
        while lines.last?.isEmpty == true { lines.removeLast() }
        guard let first = lines.first else { return .refused(.badRequest, reason: "empty request") }
        guard first.count <= limits.maxRequestLine else {
            return .refused(.uriTooLong, reason: "request line over \(limits.maxRequestLine) bytes")
        }
        guard let line = ascii(first) else { return .refused(.badRequest, reason: "request line is not ASCII") }
        let parts = line.split(separator: " ", omittingEmptySubsequences: false)
        guard parts.count == 3, !parts[0].isEmpty, parts[0].allSatisfy(isTokenCharacter) else {
            return .refused(.badRequest, reason: "malformed request line")
        }
        let version = String(parts[2])
        guard version == "HTTP/1.1" || version == "HTTP/1.0" else {
            return .refused(.badRequest, reason: "unsupported protocol version")
        }
        let target = String(parts[1])
        guard target.hasPrefix("/") else { return .refused(.badRequest, reason: "request target is not a path") }
        let pieces = target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        guard let path = percentDecoded(pieces[0], plusIsSpace: false), !path.contains("\0") else {
            return .refused(.badRequest, reason: "bad percent-encoding in the path")
        }
        var query: [HTTPRequest.Parameter] = []
        if pieces.count == 2 {
            for pair in pieces[1].split(separator: "&") {
                let nameValue = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                guard let name = percentDecoded(nameValue[0], plusIsSpace: true),
                    let value = nameValue.count == 2 ? percentDecoded(nameValue[1], plusIsSpace: true) : ""
                else { return .refused(.badRequest, reason: "bad percent-encoding in the query") }
                query.append(.init(name: name, value: value))
            }
        }
        var headers: [HTTPRequest.Header] = []
        for raw in lines.dropFirst() {
            guard headers.count < limits.maxHeaders else {
                return .refused(.headerFieldsTooLarge, reason: "more than \(limits.maxHeaders) header fields")
            }
            // Header values may carry obs-text; they are kept as Latin-1-ish replacement text, never trusted.
            let text = String(decoding: raw, as: UTF8.self)
            guard let colon = text.firstIndex(of: ":") else {
                return .refused(.badRequest, reason: "header line without a colon")
            }
            let name = text[..<colon]
            // No whitespace before the colon (RFC 9112 §5.1) and no folded lines (§5.2): both are request smuggling
            // vectors, so they are refused rather than guessed at.
            guard !name.isEmpty, name.allSatisfy(isTokenCharacter) else {
                return .refused(.badRequest, reason: "malformed header name")
            }
            let value = text[text.index(after: colon)...].trimmingWhitespace()
            headers.append(.init(name: String(name), value: value))
        }
        let request = HTTPRequest(
            method: String(parts[0]), path: path, query: query, version: version, headers: headers)
        if request.header("Transfer-Encoding") != nil {
            return .refused(.contentTooLarge, reason: "request bodies are not accepted")
        }
        if let length = request.header("Content-Length"), length != "0" {
            return .refused(.contentTooLarge, reason: "request bodies are not accepted")
        }
        return .request(request)
    }

    /// The index just past the blank line that ends the head, looked for within the first `limit` bytes.
    static func headEnd(_ bytes: [UInt8], limit: Int) -> Int? {
        let count = min(bytes.count, limit)
        guard count >= 2 else { return nil }
        for index in 1..<count where bytes[index] == 0x0A {
            if bytes[index - 1] == 0x0A { return index + 1 }
            if index >= 2, bytes[index - 1] == 0x0D, bytes[index - 2] == 0x0A { return index + 1 }
        }
        return nil
    }

    /// The request line's length so far, without its line ending (a CR that may yet be followed by LF included).
    private static func firstLineLength(_ bytes: [UInt8]) -> Int {
        let end = bytes.firstIndex(of: 0x0A) ?? bytes.count
        return end > 0 && bytes[end - 1] == 0x0D ? end - 1 : end
    }

    private static func ascii(_ bytes: ArraySlice<UInt8>) -> String? {
        guard bytes.allSatisfy({ $0 >= 0x20 && $0 < 0x7F }) else { return nil }
        return String(decoding: bytes, as: UTF8.self)
    }

    private static func isTokenCharacter(_ character: Character) -> Bool {
        guard let ascii = character.asciiValue else { return false }
        return (ascii >= 0x30 && ascii <= 0x39) || (ascii | 0x20 >= 0x61 && ascii | 0x20 <= 0x7A)
            || "!#$%&'*+-.^_`|~".utf8.contains(ascii)
    }

    /// Decodes %XX escapes; nil for a broken escape or a result that is not UTF-8.
    static func percentDecoded(_ text: Substring, plusIsSpace: Bool) -> String? {
        var bytes: [UInt8] = []
        var iterator = Array(text.utf8).makeIterator()
        while let byte = iterator.next() {
            switch byte {
            case UInt8(ascii: "%"):
                guard let high = iterator.next().flatMap(hexValue), let low = iterator.next().flatMap(hexValue) else {
                    return nil
                }
                bytes.append(high << 4 | low)
            case UInt8(ascii: "+") where plusIsSpace: bytes.append(0x20)
            default: bytes.append(byte)
            }
        }
        return String(validating: bytes, as: UTF8.self)
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case 0x30...0x39: return byte - 0x30
        case 0x41...0x46: return byte - 0x41 + 10
        case 0x61...0x66: return byte - 0x61 + 10
        default: return nil
        }
    }
}

extension Substring {
    fileprivate func trimmingWhitespace() -> String {
        String(drop { $0 == " " || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\t" }.reversed())
    }
}
