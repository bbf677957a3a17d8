import Foundation
import Glibc
import Testing

@testable import Spool

/// A fresh directory under /tmp, removed (recursively) when the test body returns or throws.
func withTemporaryDirectory<T>(_ body: (String) throws -> T) throws -> T {
    var template = Array("/tmp/spooltest.XXXXXX".utf8CString)
    guard let created = mkdtemp(&template) else {
        throw SpoolError.io(operation: "mkdtemp", path: "/tmp", errno: errno)
    }
    let path = String(
        decoding: Array(UnsafeBufferPointer(start: created, count: strlen(created))).map {
            UInt8(bitPattern: $0)
        }, as: UTF8.self)
    defer { try? FileManager.default.removeItem(atPath: path) }
    return try body(path)
}

/// A spool in a fresh temporary directory.
func withSpool<T>(_ body: (Spool) throws -> T) throws -> T {
    try withTemporaryDirectory { directory in
        try body(try Spool(directory: directory + "/spool"))
    }
}

func sampleEnvelope(_ id: QueueID, recipients: [String] = ["bob@example.test"]) -> Envelope {
    Envelope(
        id: id, sender: "alice@example.test", arrival: 1_795_891_140, client: "[2001:db8::1]:50022",
        heloName: "client.example", protocolName: "ESMTP", recipients: recipients.map { RecipientRecord(address: $0) })
}

/// Receives and commits one message; returns its id.
@discardableResult
func commitMessage(_ spool: Spool, _ text: String = "Subject: hi\r\n\r\nbody\r\n") throws -> QueueID {
    let message = try spool.begin()
    try message.append(Array(text.utf8))
    try spool.commit(message, envelope: sampleEnvelope(message.id))
    return message.id
}

/// Names in a directory, sorted ("." and ".." left out).
func names(_ path: String) -> [String] {
    ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted()
}

func readFile(_ path: String) -> [UInt8]? {
    FileManager.default.contents(atPath: path).map { Array($0) }
}

func writeFile(_ path: String, _ bytes: [UInt8], mode: Int = 0o600) throws {
    #expect(FileManager.default.createFile(atPath: path, contents: Data(bytes), attributes: [.posixPermissions: mode]))
}

func fileMode(_ path: String) -> mode_t {
    var status = stat()
    return lstat(path, &status) == 0 ? status.st_mode & 0o7777 : 0
}
