import Foundation
import Glibc
import Testing

@testable import Spool

/// A Maildir reader must never see a partial message: the copy is written in tmp/ and renamed into new/ only once
/// complete and fsynced. These tests break the copy halfway and check that new/ stays empty, and that start-up
/// clears what a crash left in tmp/ (the crash itself is in Tests/Integration/test_maildir_atomicity.py).
@Suite struct MaildirAtomicityTests {
    /// The message "file" is a FIFO that this test holds open for writing: the copy reads the bytes put there, then
    /// gets EAGAIN (the spool opens its sources O_NONBLOCK), a real read error in the middle of the copy.
    @Test(arguments: [true, false])
    func aCopyThatFailsHalfwayLeavesNoFileInNewOrTmp(fixedName: Bool) throws {
        try withTemporaryDirectory { directory in
            let fifo = directory + "/message"
            try #require(mkfifo(fifo, 0o600) == 0)
            let feeder = open(fifo, O_RDWR | O_NONBLOCK)
            try #require(feeder >= 0)
            defer { close(feeder) }
            let half = [UInt8](repeating: UInt8(ascii: "x"), count: 40_000)
            try #require(write(feeder, half, half.count) == half.count)

            let writer = MaildirWriter(root: directory + "/mailboxes")
            let id = QueueIDGenerator().next()
            do throws(SpoolError) {
                _ = try writer.deliver(
                    prefix: Array("Return-Path: <a@b.example>\r\n".utf8), messageFile: fifo, domain: "d", user: "u",
                    fixedName: fixedName ? "1796570335.\(id.rawValue).R0" : nil)
                Issue.record("the copy from a stalled source succeeded")
            } catch {
                #expect(error == SpoolError.io(operation: "read", path: fifo, errno: EAGAIN))
            }
            // The copy consumed the bytes (so it had written them to its file) before it failed.
            var probe = [UInt8](repeating: 0, count: 1)
            #expect(read(feeder, &probe, 1) == -1 && errno == EAGAIN)

            let base = directory + "/mailboxes/d/u"
            #expect(names(base + "/new") == [])
            #expect(names(base + "/cur") == [])
            #expect(names(base + "/tmp") == [])
        }
    }

    @Test func startUpRemovesOurCrashedCopiesAtOnceAndOtherFilesAfter36Hours() throws {
        try withTemporaryDirectory { directory in
            let root = directory + "/mailboxes"
            let tmp = root + "/lab.example/u/tmp"
            try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
            let host = MaildirWriter.hostPart()
            let id = QueueIDGenerator().next().rawValue
            let now = Int64(Date().timeIntervalSince1970)
            let hour: Int64 = 3600
            // name, age, removed?
            let files: [(String, Int64, Bool)] = [
                ("1796570335.\(id).R0.\(host)", 0, true),  // our crashed delivery
                ("1796570335.\(id).R12.\(host)", 0, true),
                ("1796570335.\(id).R0.other-host", 0, false),  // same shape, another host: not ours
                ("1796570335.M1P2R3.\(host)", 0, false),  // another writer, maybe still writing
                ("1796570335.M4P5R6.other", 35 * hour, false),
                ("1796570335.M7P8R9.other", 37 * hour, true),  // another writer's crash, past 36 hours
                ("1796570335.NOTANID.R0.\(host)", 0, false),
            ]
            for (name, age, _) in files {
                try writeFile(tmp + "/" + name, Array("partial".utf8))
                var times = [
                    timespec(tv_sec: Int(now - age), tv_nsec: 0), timespec(tv_sec: Int(now - age), tv_nsec: 0),
                ]
                try #require(utimensat(AT_FDCWD, tmp + "/" + name, &times, 0) == 0)
            }
            try FileManager.default.createDirectory(atPath: tmp + "/a-directory", withIntermediateDirectories: false)
            // A symlinked user directory is not followed: the file behind it stays.
            let elsewhere = directory + "/elsewhere/tmp"
            try FileManager.default.createDirectory(atPath: elsewhere, withIntermediateDirectories: true)
            try writeFile(elsewhere + "/1796570335.\(id).R0.\(host)", [])
            try #require(symlink(directory + "/elsewhere", root + "/lab.example/link") == 0)

            let removed = MaildirWriter(root: root).removeStaleTemporaryFiles(now: now)

            let expectedRemoved = files.filter(\.2).map { tmp + "/" + $0.0 }
            #expect(removed.sorted() == expectedRemoved.sorted())
            #expect(names(tmp) == (files.filter { !$0.2 }.map(\.0) + ["a-directory"]).sorted())
            #expect(names(elsewhere).count == 1)
        }
    }

    @Test func startUpCleanUpOfAMissingRootDoesNothing() throws {
        try withTemporaryDirectory { directory in
            #expect(MaildirWriter(root: directory + "/none").removeStaleTemporaryFiles(now: 0) == [])
        }
    }
}
