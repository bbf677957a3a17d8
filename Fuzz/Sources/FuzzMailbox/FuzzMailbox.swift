// Fuzz target: the address parser round-trip.
//
// Input: byte 0 bit 0 = allowUTF8, the rest is the text handed to `Mailbox(parsing:allowUTF8:)` (only valid UTF-8
// reaches the parser in the server, so other inputs are skipped). Whatever parses must print as text that parses
// again, to an equal mailbox, under the same rules; and the printed form must be a fixed point.

import Glibc
import SMTPProtocol

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzMailbox(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size >= 1 else { return 0 }
    let bytes = UnsafeBufferPointer(start: data, count: size)
    let allowUTF8 = bytes[0] & 1 == 1
    guard let text = String(validating: bytes[1...], as: UTF8.self) else { return 0 }
    guard let mailbox = Mailbox(parsing: Substring(text), allowUTF8: allowUTF8) else { return 0 }

    let printed = mailbox.description
    guard let again = Mailbox(parsing: Substring(printed), allowUTF8: allowUTF8) else {
        fuzzFailure("printed form does not parse", input: text, printed: printed)
    }
    guard again == mailbox else {
        fuzzFailure("re-parsed mailbox differs (\(again.localPart) @ \(again.domain))", input: text, printed: printed)
    }
    guard again.description == printed else {
        fuzzFailure(
            "printed form is not a fixed point: \(again.description.debugDescription)", input: text,
            printed: printed)
    }
    // Without SMTPUTF8 nothing non-ASCII may have been accepted.
    if !allowUTF8 && mailbox.isInternationalized {
        fuzzFailure("non-ASCII accepted without SMTPUTF8", input: text, printed: printed)
    }
    return 0
}

/// Prints what broke and traps, so libFuzzer keeps the input as a crash file.
func fuzzFailure(_ what: String, input: String, printed: String) -> Never {
    writeToStandardError(
        "FuzzMailbox: \(what)\n  input   \(input.debugDescription)\n  printed \(printed.debugDescription)\n")
    preconditionFailure(what)
}

/// Straight to fd 2: print() is buffered and its text would be lost in the trap that follows.
func writeToStandardError(_ text: String) {
    var text = text
    text.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}
