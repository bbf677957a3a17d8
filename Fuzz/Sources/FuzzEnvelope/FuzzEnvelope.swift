// Fuzz target: the queue-file (envelope) reader. A truncated, garbled or inconsistent queue file must be rejected
// as corrupt, never crash the reader, and never be delivered.
//
// `EnvelopeCodec` is internal, so it is reached with `@testable import` (debug builds compile with testing enabled).
// Input: byte 0 = flags, the rest = the envelope file. Flag bit 0 patches the CRC-32 in a final
// "... crc32=XXXXXXXX\n" to the right value first, so mutations get past the checksum and reach the record parser.
// Flag bit 1 also reads the file through the public `Spool.envelope(_:)` from a temporary spool.
//
// Checked: no trap; an accepted file starts with the magic line and ends with a well-formed END record whose CRC-32
// (computed here independently) matches; cutting off its last octet, or its whole END line, makes it rejected;
// what was accepted re-encodes and decodes to the same envelope; the public Spool API agrees with the codec.

import Glibc

@testable import Spool

private let queueID = QueueID("0M8ZK3Q1F2A7XQ")!  // A fixed, valid literal: cannot fail.

private func failure(_ what: String) -> Never {
    writeToStandardError("FuzzEnvelope: \(what)\n")
    preconditionFailure(what)
}

/// CRC-32 (IEEE, reflected 0xEDB88320) written out bit by bit: independent of the table version in the codec.
private func crc32(_ bytes: ArraySlice<UInt8>) -> UInt32 {
    var crc: UInt32 = 0xFFFF_FFFF
    for byte in bytes {
        crc ^= UInt32(byte)
        for _ in 0..<8 { crc = (crc & 1 == 1) ? (crc >> 1) ^ 0xEDB8_8320 : crc >> 1 }
    }
    return ~crc
}

private let lowerHex = Array("0123456789abcdef".utf8)

private func hex8(_ value: UInt32) -> [UInt8] {
    (0..<8).map { lowerHex[Int((value >> (28 - 4 * UInt32($0))) & 0xF)] }
}

/// The independent acceptance rule: magic first line, last line `END size=<digits> crc32=<8 lower hex>` + LF, and
/// the CRC over everything before the 8 hex digits.
private func hasValidFrame(_ bytes: [UInt8]) -> Bool {
    let magics = [Array("DUALMTA-ENV 2\n".utf8), Array("DUALMTA-ENV 1\n".utf8)]
    guard let magic = magics.first(where: { bytes.starts(with: $0) }), bytes.count > magic.count + 9,
        bytes.last == 10
    else { return false }
    let lineStart = (bytes.dropLast().lastIndex(of: 10) ?? -1) + 1
    let line = bytes[lineStart..<(bytes.count - 1)]
    let prefix = Array("END size=".utf8)
    guard line.starts(with: prefix) else { return false }
    let afterSize = line.dropFirst(prefix.count)
    guard let space = afterSize.firstIndex(of: 32), space > afterSize.startIndex,
        afterSize[..<space].allSatisfy({ $0 >= 0x30 && $0 <= 0x39 })
    else { return false }
    let crcField = line[(space + 1)...]
    let crcPrefix = Array("crc32=".utf8)
    guard crcField.count == crcPrefix.count + 8, crcField.starts(with: crcPrefix) else { return false }
    let digits = Array(crcField.suffix(8))
    guard digits.allSatisfy({ lowerHex.contains($0) }) else { return false }
    return digits == hex8(crc32(bytes[0..<(bytes.count - 9)]))
}

private func decode(_ bytes: [UInt8]) -> Envelope? {
    try? EnvelopeCodec.decode(bytes, expectedID: queueID)
}

/// One temporary spool for the whole run (the fuzzer is single-threaded), under $TMPDIR (scripts/fuzz points it
/// into Fuzz/.build and removes it afterwards).
private let spool: Spool? = {
    let base = getenv("TMPDIR").map { String(cString: $0) } ?? "/tmp"
    var template = Array("\(base)/dualmta-fuzz-XXXXXX".utf8CString)
    guard let made = mkdtemp(&template) else { return nil }
    return try? Spool(directory: String(cString: made))
}()

private func write(_ path: String, _ bytes: [UInt8], size: Int? = nil) {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
    guard fd >= 0 else { failure("cannot create \(path): errno \(errno)") }
    defer { close(fd) }
    var offset = 0
    while offset < bytes.count {
        let written = bytes[offset...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        guard written > 0 else { failure("cannot write \(path): errno \(errno)") }
        offset += written
    }
    if let size, ftruncate(fd, off_t(size)) != 0 { failure("ftruncate \(path): errno \(errno)") }
}

private func checkThroughSpool(_ bytes: [UInt8], codecResult: Envelope?) {
    guard let spool else { failure("cannot create the temporary spool") }
    // The message file gets the recorded size when that is small, so the success path is reachable.
    let messageSize = codecResult.map { $0.messageSize <= 1 << 16 ? Int($0.messageSize) : 0 } ?? 0
    write(spool.messagePath(queueID), [], size: messageSize)
    write("\(spool.directory)/queue/\(queueID.rawValue).env", bytes)
    do {
        let envelope = try spool.envelope(queueID)
        guard let codecResult, codecResult == envelope else { failure("Spool accepted what the codec did not") }
    } catch {
        guard case .corrupt = error else { failure("Spool.envelope threw \(error), expected .corrupt") }
        if let codecResult, codecResult.messageSize == Int64(messageSize) {
            failure("Spool rejected (\(error)) what the codec accepted")
        }
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzEnvelope(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size >= 1 else { return 0 }
    let flags = data[0]
    var bytes = Array(UnsafeBufferPointer(start: data + 1, count: size - 1))
    if flags & 1 == 1, bytes.count >= 16, bytes.last == 10 {
        let field = Array("crc32=".utf8)
        if Array(bytes[(bytes.count - 15)..<(bytes.count - 9)]) == field {
            let digits = hex8(crc32(bytes[0..<(bytes.count - 9)]))
            bytes.replaceSubrange((bytes.count - 9)..<(bytes.count - 1), with: digits)
        }
    }

    let envelope = decode(bytes)
    if flags & 2 == 2 { checkThroughSpool(bytes, codecResult: envelope) }
    guard let envelope else { return 0 }

    if !hasValidFrame(bytes) { failure("accepted a file without a valid magic/END frame") }
    if decode(Array(bytes.dropLast())) != nil { failure("accepted the file without its final LF") }
    let endLineStart = (bytes.dropLast().lastIndex(of: 10) ?? -1) + 1
    if decode(Array(bytes[..<endLineStart])) != nil { failure("accepted the file without its END line") }

    let encoded: [UInt8]
    do {
        encoded = try EnvelopeCodec.encode(envelope)
    } catch {
        failure("a decoded envelope does not encode: \(error)")
    }
    guard let again = decode(encoded) else { failure("re-encoded envelope is rejected") }
    if again != envelope { failure("re-encoded envelope decodes differently") }
    return 0
}

/// Straight to fd 2: print() is buffered and its text would be lost in the trap that follows.
func writeToStandardError(_ text: String) {
    var text = text
    text.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}
