import Foundation
import Glibc
import Testing

@testable import Spool

@Suite struct MaildirWriterTests {
    @Test func deliversPrefixPlusMessageIntoNew() throws {
        try withSpool { spool in
            let id = try commitMessage(spool, "Subject: hi\r\n\r\nbody\r\n")
            let writer = MaildirWriter(root: spool.mailboxDirectory)
            let prefix = Array("Return-Path: <alice@example.test>\r\n".utf8)
            let path = try writer.deliver(
                prefix: prefix, messageFile: spool.messagePath(id), domain: "localhost",
                user: "bob")

            let base = spool.mailboxDirectory + "/localhost/bob"
            #expect(names(base) == ["cur", "new", "tmp"])
            #expect(names(base + "/tmp") == [])
            #expect(names(base + "/new").count == 1)
            #expect(path == base + "/new/" + (names(base + "/new").first ?? "?"))
            // Maildir files hold LF line ends; the queue copy keeps CRLF.
            #expect(readFile(path) == Array("Return-Path: <alice@example.test>\nSubject: hi\n\nbody\n".utf8))
            #expect(fileMode(path) == 0o600)
            #expect(fileMode(base) == 0o700)
            // The queue copy is untouched.
            #expect(try spool.readMessage(id) == Array("Subject: hi\r\n\r\nbody\r\n".utf8))
        }
    }

    @Test func aFixedNameMakesDeliveryIdempotent() throws {
        try withTemporaryDirectory { directory in
            let source = directory + "/message"
            try writeFile(source, Array("x\r\n".utf8))
            let writer = MaildirWriter(root: directory + "/mailboxes")
            let first = try writer.deliver(
                prefix: [], messageFile: source, domain: "lab.example", user: "u", fixedName: "100.QID.R0")
            // The crash window: delivered, but the queue did not record it. A second run must not add a copy.
            let second = try writer.deliver(
                prefix: [], messageFile: source, domain: "lab.example", user: "u", fixedName: "100.QID.R0")
            #expect(first == second)
            let base = directory + "/mailboxes/lab.example/u"
            #expect(names(base + "/new").count == 1)
            // A reader moved it to cur/ with flags: still found, still one copy.
            let moved = base + "/cur/" + (first.split(separator: "/").last.map(String.init) ?? "") + ":2,S"
            #expect(rename(first, moved) == 0)
            let third = try writer.deliver(
                prefix: [], messageFile: source, domain: "lab.example", user: "u", fixedName: "100.QID.R0")
            #expect(third == moved)
            #expect(names(base + "/new").isEmpty)
            // Another recipient index is another copy.
            _ = try writer.deliver(
                prefix: [], messageFile: source, domain: "lab.example", user: "u", fixedName: "100.QID.R1")
            #expect(names(base + "/new").count == 1)
            #expect(names(base + "/tmp").isEmpty)
        }
    }

    @Test func largeMessagesAndRepeatedDeliveriesGetDistinctFiles() throws {
        try withTemporaryDirectory { directory in
            let source = directory + "/message"
            let body = (0..<200_000).map { UInt8($0 % 253) }
            try writeFile(source, body)
            let writer = MaildirWriter(root: directory + "/a/b/mailboxes")
            var paths: Set<String> = []
            for _ in 0..<5 {
                paths.insert(try writer.deliver(prefix: [], messageFile: source, domain: "example.test", user: "u"))
            }
            #expect(paths.count == 5)
            #expect(names(directory + "/a/b/mailboxes/example.test/u/new").count == 5)
            for path in paths { #expect(readFile(path) == body) }
        }
    }

    @Test(arguments: ["", ".", "..", "a/b", "/", "../etc", "a\u{0}b"])
    func refusesNamesThatCouldEscape(_ name: String) throws {
        try withTemporaryDirectory { directory in
            try writeFile(directory + "/message", [1])
            let writer = MaildirWriter(root: directory + "/mailboxes")
            #expect(throws: SpoolError.invalidMailboxName(name)) {
                try writer.deliver(prefix: [], messageFile: directory + "/message", domain: name, user: "u")
            }
            #expect(throws: SpoolError.invalidMailboxName(name)) {
                try writer.deliver(prefix: [], messageFile: directory + "/message", domain: "d", user: name)
            }
            #expect(names(directory) == ["message"])
        }
    }

    @Test func doesNotFollowASymlinkedMailbox() throws {
        try withTemporaryDirectory { directory in
            try writeFile(directory + "/message", [1])
            #expect(mkdir(directory + "/elsewhere", 0o700) == 0)
            #expect(mkdir(directory + "/mailboxes", 0o700) == 0)
            #expect(mkdir(directory + "/mailboxes/d", 0o700) == 0)
            #expect(symlink(directory + "/elsewhere", directory + "/mailboxes/d/u") == 0)
            let writer = MaildirWriter(root: directory + "/mailboxes")
            #expect(throws: SpoolError.self) {
                try writer.deliver(prefix: [], messageFile: directory + "/message", domain: "d", user: "u")
            }
            #expect(names(directory + "/elsewhere") == [])
        }
    }

    @Test func missingMessageFileLeavesNothingInTmp() throws {
        try withTemporaryDirectory { directory in
            let writer = MaildirWriter(root: directory + "/mailboxes")
            #expect(throws: SpoolError.self) {
                try writer.deliver(prefix: [], messageFile: directory + "/absent", domain: "d", user: "u")
            }
            #expect(names(directory + "/mailboxes/d/u/tmp") == [])
            #expect(names(directory + "/mailboxes/d/u/new") == [])
        }
    }
}
