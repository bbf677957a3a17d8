/// The DATA phase decoder (RFC 5321 §4.1.1.4, §4.5.2): finds the end of data, removes dot-stuffing and checks the
/// content against the limits, streaming — it never holds more than the caller's buffer.
///
/// The only end of data is CRLF "." CRLF (or "." CRLF right after the 354). CR and LF are valid only as a CRLF pair;
/// a bare one marks the message bad but never ends it (SMTP smuggling), so the decoder reads on
/// to the real terminator. Once any problem is found no further body bytes are produced.
struct DataDecoder: Sendable {
    /// What makes the message unacceptable. `bareLineEnding` wins over the rest: it also closes the session.
    enum Problem: Equatable, Sendable {
        case lineTooLong
        case nul
        case tooBig
        case tooManyHops
        case bareLineEnding
    }

    enum Outcome: Equatable {
        /// All offered bytes but a trailing CR were consumed; call again with more input.
        case needMore(consumed: Int)
        /// The terminator ended at `consumed`; bytes after it belong to the command stream.
        case finished(consumed: Int)
    }

    let textLineLimit: Int
    let maxSize: Int
    let maxReceivedHeaders: Int

    private(set) var problem: Problem?
    /// Octets of un-stuffed content so far, CRLFs included (the measure RFC 1870 SIZE uses).
    private(set) var size = 0
    private var atLineStart = true
    /// The current line so far is just its (dropped) leading dot: CRLF now means end of data.
    private var dotLine = false
    private var lineLength = 0
    private var inHeaders = true
    /// How much of "received:" the current header line starts with; -1 once it cannot match.
    private var headerMatch = 0
    private var receivedCount = 0

    init(textLineLimit: Int, maxSize: Int, maxReceivedHeaders: Int) {
        self.textLineLimit = textLineLimit
        self.maxSize = maxSize
        self.maxReceivedHeaders = maxReceivedHeaders
    }

    private static let cr: UInt8 = 13
    private static let lf: UInt8 = 10
    private static let dot = UInt8(ascii: ".")
    private static let received: [UInt8] = Array("received:".utf8)

    /// Decodes `input`, appending un-stuffed body bytes to `output` in runs (not byte by byte).
    mutating func decode(_ input: UnsafeBufferPointer<UInt8>, into output: inout [UInt8]) -> Outcome {
        let count = input.count
        var index = 0
        var runStart = 0

        func flush(_ end: Int, _ problem: Problem?, _ output: inout [UInt8]) {
            if problem == nil, end > runStart {
                output.append(contentsOf: UnsafeBufferPointer(rebasing: input[runStart..<end]))
            }
        }
        // Body bytes before the offending byte are always produced, so the output does not depend on chunking.
        func flag(_ newProblem: Problem, _ problem: inout Problem?, _ output: inout [UInt8]) {
            if problem == nil {
                flush(index, problem, &output)
                problem = newProblem
            } else if newProblem == .bareLineEnding {
                problem = newProblem
            }
        }

        while index < count {
            let byte = input[index]
            if byte == Self.cr {
                guard index + 1 < count else {
                    // Whether this CR ends a line is known only with the next byte: leave it to the next call.
                    flush(index, problem, &output)
                    return .needMore(consumed: index)
                }
                if input[index + 1] == Self.lf {
                    if dotLine {
                        // CRLF "." CRLF: the dot was dropped already; drop this CRLF too.
                        flush(runStart, problem, &output)
                        return .finished(consumed: index + 2)
                    }
                    size += 2
                    if size > maxSize { flag(.tooBig, &problem, &output) }
                    // An empty line ends the header section (RFC 5322 §2.1).
                    if inHeaders && atLineStart { inHeaders = false }
                    atLineStart = true
                    lineLength = 0
                    headerMatch = 0
                    index += 2
                    continue
                }
                // A CR not followed by LF: keep it as content, flagged.
                flag(.bareLineEnding, &problem, &output)
            } else if byte == Self.lf {
                flag(.bareLineEnding, &problem, &output)
            }
            if atLineStart {
                atLineStart = false
                if byte == Self.dot {
                    // Leading dot: either the terminator or stuffing ("..x" → ".x"); it is never content.
                    flush(index, problem, &output)
                    runStart = index + 1
                    dotLine = true
                    index += 1
                    continue
                }
            }
            dotLine = false
            lineLength += 1
            if lineLength + 2 > textLineLimit { flag(.lineTooLong, &problem, &output) }
            size += 1
            if size > maxSize { flag(.tooBig, &problem, &output) }
            if byte == 0 { flag(.nul, &problem, &output) }
            if inHeaders && headerMatch >= 0 && headerMatch < 9 {
                let expected = Self.received[headerMatch]
                let folded = (byte >= 0x41 && byte <= 0x5A) ? byte | 0x20 : byte
                if folded == expected {
                    headerMatch += 1
                    if headerMatch == 9 {
                        receivedCount += 1
                        if receivedCount > maxReceivedHeaders { flag(.tooManyHops, &problem, &output) }
                    }
                } else {
                    headerMatch = -1
                }
            }
            index += 1
            // Fast path: the rest of an ordinary line in one tight scan, counters updated once per run.
            if inHeaders && headerMatch >= 0 && headerMatch < 9 { continue }
            let runFrom = index
            while index < count {
                let next = input[index]
                if next <= Self.cr && (next == Self.cr || next == Self.lf || next == 0) { break }
                index += 1
            }
            let length = index - runFrom
            if length > 0 {
                let lineRoom = textLineLimit - 2 - lineLength
                let sizeRoom = maxSize - size
                if problem == nil && (length > lineRoom || length > sizeRoom) {
                    // Flag at the exact offending byte, as the byte-wise path would.
                    let end = index
                    index = runFrom + max(0, min(lineRoom, sizeRoom))
                    flag(lineRoom <= sizeRoom ? .lineTooLong : .tooBig, &problem, &output)
                    index = end
                }
                lineLength += length
                size += length
            }
        }
        flush(count, problem, &output)
        return .needMore(consumed: count)
    }
}
