// Fuzz target: the web console's request-head parser `HTTPRequestParser` and the escaping function `HTML.escape`.
// Whatever a client sends, the parser answers incomplete, a request or a refusal, never a trap.
//
// Input: byte 0 = chunking (0 whole, n > 0 pseudo-random chunks of 1...n octets seeded by n), the rest = what a
// client sends. Checked: no trap; the first answer other than "incomplete" while the bytes arrive in chunks is the
// answer for all the bytes at once (a server reading a head piece by piece decides the same); a parsed request has a
// token method, a path starting with "/" and no NUL, and at most the limit's header count; escaping the path, the
// header values and the raw bytes leaves no character that could open a tag or end an attribute.

import Console
import Glibc

private func failure(_ what: String) -> Never {
    writeToStandardError("FuzzHTTP: \(what)\n")
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

private func checkEscaped(_ text: String) {
    let escaped = HTML.escape(text)
    if escaped.contains(where: { "<>\"'".contains($0) }) {
        failure("escape left markup in \(escaped.debugDescription)")
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzHTTP(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size >= 1 else { return 0 }
    let chunking = Int(data[0])
    let payload = Array(UnsafeBufferPointer(start: data + 1, count: size - 1))
    var limits = HTTPLimits()
    limits.maxHeadBytes = 1024
    limits.maxHeaders = 8
    limits.maxRequestLine = 256

    let whole = HTTPRequestParser.parse(payload, limits: limits)
    if chunking > 0 {
        var random = SplitMix(state: UInt64(chunking))
        var received: [UInt8] = []
        var first = HTTPParseResult.incomplete
        while received.count < payload.count, first == .incomplete {
            let length = 1 + Int(random.next() % UInt64(chunking))
            received += payload[received.count..<min(payload.count, received.count + length)]
            first = HTTPRequestParser.parse(received, limits: limits)
        }
        if first != whole { failure("chunking changed the answer:\n  whole   \(whole)\n  chunked \(first)") }
    }
    if case .request(let request) = whole {
        if !request.path.hasPrefix("/") || request.path.contains("\0") { failure("bad path \(request.path)") }
        if request.headers.count > limits.maxHeaders { failure("\(request.headers.count) headers") }
        if request.method.isEmpty || request.method.contains(" ") { failure("bad method \(request.method)") }
        checkEscaped(request.path)
        for header in request.headers { checkEscaped(header.value) }
    }
    let escaped = HTML.escape(bytes: payload)
    if escaped.contains(where: { "<>\"'".contains($0) }) { failure("escape(bytes:) left markup") }
    return 0
}

/// Straight to fd 2: print() is buffered and its text would be lost in the trap that follows.
func writeToStandardError(_ text: String) {
    var text = text
    text.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}
