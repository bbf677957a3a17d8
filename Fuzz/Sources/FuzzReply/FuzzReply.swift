// Fuzz target: the client's reply parser `ReplyParser`. Garbage codes, mixed codes in a multiline reply, overlong
// lines and a missing CRLF are protocol errors, never a trap.
//
// Input: byte 0 = chunking (0 whole, 1 byte by byte, n > 1 pseudo-random chunks of 1...n octets seeded by n), the
// rest = what a remote server sends. Checked: no trap; the result does not depend on how the bytes were split (the
// same replies, then the same error, as one parser fed everything at once); every reply has a code 200-599 and at
// least one line, and no line holds CR, LF or NUL; a parsed reply, encoded again, parses back to itself.

import Glibc
import SMTPProtocol

private func failure(_ what: String) -> Never {
    writeToStandardError("FuzzReply: \(what)\n")
    preconditionFailure(what)
}

private struct SplitMix {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Replies and the first error, as a client driving the parser would see them.
private struct Transcript: Equatable {
    var replies: [Reply] = []
    var error: ReplyParseError?

    /// Pulls replies until the parser needs more bytes or fails; returns false once it failed.
    mutating func drain(_ parser: inout ReplyParser) -> Bool {
        while true {
            do {
                guard let reply = try parser.nextReply() else { return true }
                replies.append(reply)
            } catch {
                self.error = error
                return false
            }
        }
    }
}

private func checkReply(_ reply: Reply) {
    if !(200...599).contains(reply.code) { failure("reply code \(reply.code) out of range") }
    if reply.lines.isEmpty { failure("reply without lines") }
    for line in reply.lines where line.utf8.contains(where: { $0 == 13 || $0 == 10 || $0 == 0 }) {
        failure("CR, LF or NUL inside reply text \(line.debugDescription)")
    }
    if let status = reply.status, status.classCode != reply.code / 100 {
        failure("enhanced status \(status) does not match code \(reply.code)")
    }
    // Round trip through the wire form; skipped only when re-adding the status makes a line too long.
    let encoded = reply.encoded
    var parser = ReplyParser()
    parser.append(encoded)
    do {
        guard let again = try parser.nextReply() else { failure("encoded reply is incomplete: \(reply)") }
        if again != reply { failure("round trip changed the reply: \(reply) -> \(again)") }
        if parser.hasBufferedInput { failure("encoded reply left bytes behind: \(reply)") }
    } catch {
        if case .lineTooLong = error { return }
        failure("encoded reply does not parse (\(error)): \(reply)")
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzReply(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size >= 1 else { return 0 }
    let chunking = Int(data[0])
    let payload = UnsafeBufferPointer(start: data + 1, count: size - 1)

    var whole = ReplyParser()
    whole.append(payload)
    var expected = Transcript()
    _ = expected.drain(&whole)

    var chunked = ReplyParser()
    var actual = Transcript()
    var random = SplitMix(state: UInt64(chunking))
    var offset = 0
    while offset < payload.count {
        let length: Int
        switch chunking {
        case 0: length = payload.count
        case 1: length = 1
        default: length = 1 + Int(random.next() % UInt64(chunking))
        }
        let end = min(payload.count, offset + length)
        chunked.append(UnsafeBufferPointer(rebasing: payload[offset..<end]))
        offset = end
        if !actual.drain(&chunked) { break }
    }
    if actual != expected {
        failure("chunking changed the result:\n  whole   \(expected)\n  chunked \(actual)")
    }
    if actual.error == nil && chunked.hasBufferedInput != whole.hasBufferedInput {
        failure("hasBufferedInput depends on chunking")
    }
    for reply in actual.replies { checkReply(reply) }
    return 0
}

/// Straight to fd 2: print() is buffered and its text would be lost in the trap that follows.
func writeToStandardError(_ text: String) {
    var text = text
    text.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}
