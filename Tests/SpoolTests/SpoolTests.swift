import Foundation
import Glibc
import SMTPProtocol
import Testing

@testable import Spool

@Suite struct SpoolTests {
    @Test func createsTheLayoutWithPrivateDirectories() throws {
        try withSpool { spool in
            #expect(names(spool.directory) == ["corrupt", "incoming", "mailboxes", "queue", "state"])
            for name in names(spool.directory) { #expect(fileMode(spool.directory + "/" + name) == 0o700) }
            // Opening an existing spool again is fine.
            _ = try Spool(directory: spool.directory + "/")
        }
    }

    @Test func relativeDirectoryBecomesAbsolute() throws {
        try withTemporaryDirectory { directory in
            let previous = FileManager.default.currentDirectoryPath
            #expect(FileManager.default.changeCurrentDirectoryPath(directory))
            defer { _ = FileManager.default.changeCurrentDirectoryPath(previous) }
            let spool = try Spool(directory: "relative/spool")
            #expect(spool.directory.hasPrefix("/") && spool.directory.hasSuffix("/relative/spool"))
        }
    }

    @Test func commitLeavesExactlyMessageAndEnvelopeInQueue() throws {
        try withSpool { spool in
            let text = "Received: from x\r\nSubject: hi\r\n\r\nbody\r\n"
            let message = try spool.begin()
            #expect(names(spool.directory + "/incoming") == ["\(message.id).msg"])
            try message.append(Array(text.utf8))
            let envelope = sampleEnvelope(message.id, recipients: ["a@example.test", "\"john smith\"@lab.example"])
            try spool.commit(message, envelope: envelope)

            let id = message.id
            #expect(names(spool.directory + "/incoming") == [])
            #expect(names(spool.directory + "/queue") == ["\(id).env", "\(id).msg"])
            #expect(fileMode(spool.messagePath(id)) == 0o600)
            #expect(fileMode(spool.directory + "/queue/\(id).env") == 0o600)
            #expect(try spool.readMessage(id) == Array(text.utf8))
            var expected = envelope
            expected.messageSize = Int64(text.utf8.count)
            #expect(try spool.envelope(id) == expected)
            #expect(try spool.queuedIDs() == [id])
        }
    }

    @Test func largeMessageIsWrittenInChunks() throws {
        try withSpool { spool in
            let message = try spool.begin()
            var expected: [UInt8] = []
            for index in 0..<300 {
                let chunk = [UInt8](repeating: UInt8(index % 251), count: 997)
                try message.append(chunk)
                expected += chunk
                #expect(message.size == Int64(expected.count))
            }
            try spool.commit(message, envelope: sampleEnvelope(message.id))
            #expect(try spool.readMessage(message.id) == expected)
            #expect(try spool.envelope(message.id).messageSize == Int64(expected.count))
        }
    }

    @Test func abortRemovesTheIncomingFileAndIsIdempotent() throws {
        try withSpool { spool in
            let message = try spool.begin()
            try message.append(Array("data".utf8))
            spool.abort(message)
            spool.abort(message)
            #expect(names(spool.directory + "/incoming") == [])
            #expect(throws: SpoolError.messageClosed(message.id)) { try message.append([1]) }
            #expect(throws: SpoolError.messageClosed(message.id)) {
                try spool.commit(message, envelope: sampleEnvelope(message.id))
            }
        }
    }

    @Test func droppedMessageIsRemoved() throws {
        try withSpool { spool in
            do {
                let message = try spool.begin()
                try message.append(Array("data".utf8))
            }
            #expect(names(spool.directory + "/incoming") == [])
        }
    }

    @Test func commitAfterCommitAndAbortAfterCommitChangeNothing() throws {
        try withSpool { spool in
            let message = try spool.begin()
            try message.append(Array("x".utf8))
            try spool.commit(message, envelope: sampleEnvelope(message.id))
            spool.abort(message)
            #expect(throws: SpoolError.messageClosed(message.id)) {
                try spool.commit(message, envelope: sampleEnvelope(message.id))
            }
            #expect(try spool.queuedIDs() == [message.id])
            #expect(try spool.readMessage(message.id) == Array("x".utf8))
        }
    }

    @Test func commitWithWrongIDRemovesEverything() throws {
        try withSpool { spool in
            let message = try spool.begin()
            try message.append(Array("x".utf8))
            let other = QueueID(microseconds: 1, suffix: 1)
            #expect(throws: SpoolError.self) { try spool.commit(message, envelope: sampleEnvelope(other)) }
            #expect(names(spool.directory + "/incoming") == [])
            #expect(names(spool.directory + "/queue") == [])
        }
    }

    @Test func failedEnvelopeRenameRemovesWhatCommitWrote() throws {
        try withSpool { spool in
            let message = try spool.begin()
            try message.append(Array("x".utf8))
            // A directory in the way makes rename(incoming/<id>.env, queue/<id>.env) fail after the data moved.
            let blocker = spool.directory + "/queue/\(message.id).env"
            #expect(mkdir(blocker, 0o700) == 0)
            #expect(throws: SpoolError.self) { try spool.commit(message, envelope: sampleEnvelope(message.id)) }
            #expect(names(spool.directory + "/incoming") == [])
            #expect(names(spool.directory + "/queue") == ["\(message.id).env"])
            #expect(!message.isOpen)
            rmdir(blocker)
        }
    }

    @Test func idsAreUniqueAndIncreasingAcrossThreads() throws {
        try withSpool { spool in
            let threads = 8
            let perThread = 1000
            let results = Results(count: threads)
            DispatchQueue.concurrentPerform(iterations: threads) { thread in
                var ids: [QueueID] = []
                var messages: [IncomingMessage] = []
                for _ in 0..<perThread {
                    guard let message = try? spool.begin() else { continue }
                    ids.append(message.id)
                    messages.append(message)
                }
                for message in messages { spool.abort(message) }
                results.set(thread, ids)
            }
            let all = results.all
            #expect(all.map(\.count) == Array(repeating: perThread, count: threads))
            #expect(Set(all.joined()).count == threads * perThread)
            for ids in all { #expect(ids == ids.sorted()) }  // arrival order within a thread
            #expect(names(spool.directory + "/incoming") == [])
        }
    }

    @Test func concurrentCommitsAllLand() throws {
        try withSpool { spool in
            let results = Results(count: 8)
            DispatchQueue.concurrentPerform(iterations: 8) { thread in
                var ids: [QueueID] = []
                for index in 0..<10 {
                    if let id = try? commitMessage(spool, "thread \(thread) message \(index)\r\n") { ids.append(id) }
                }
                results.set(thread, ids)
            }
            let all = results.all.joined()
            let queued = try spool.queuedIDs()
            #expect(all.count == 80)
            #expect(queued == all.sorted())
            #expect(names(spool.directory + "/incoming") == [])
        }
    }

    @Test func updateIsAtomicForConcurrentReaders() throws {
        try withSpool { spool in
            let id = try commitMessage(spool)
            let small = try spool.envelope(id)
            var large = small
            for index in 0..<200 {
                large.attempts.append(
                    AttemptRecord(
                        time: Int64(index), recipients: ["bob@example.test"], mx: "mx\(index).example",
                        preference: 10, address: "[2001:db8::\(index)]", family: "ipv6", result: "deferred",
                        reply: String(repeating: "x", count: 100), milliseconds: index))
            }
            large.recipients[0].lastStatus = EnhancedStatus(4, 4, 1)
            let big = large
            let stop = Results(count: 1)
            let outcomes = Results(count: 3)
            DispatchQueue.concurrentPerform(iterations: 3) { worker in
                if worker == 0 {
                    for round in 0..<150 { try? spool.update(round % 2 == 0 ? big : small) }
                    stop.set(0, [id])
                    return
                }
                // Reads until the writer is done (at least once); any failed or mixed read leaves the slot empty.
                var seen: [QueueID] = []
                repeat {
                    guard let read = try? spool.envelope(id), read == small || read == big else {
                        outcomes.set(worker, [])
                        return
                    }
                    seen.append(id)
                } while stop.all[0].isEmpty
                outcomes.set(worker, seen)
            }
            #expect(outcomes.all[1].count > 0 && outcomes.all[2].count > 0)
            #expect(try spool.envelope(id) == small)
            #expect(names(spool.directory + "/queue") == ["\(id).env", "\(id).msg"])
        }
    }

    @Test func updateKeepsTheOldEnvelopeOnFailure() throws {
        try withSpool { spool in
            let id = try commitMessage(spool)
            var envelope = try spool.envelope(id)
            envelope.messageSize += 1
            #expect(throws: SpoolError.self) { try spool.update(envelope) }
            envelope.messageSize -= 1
            envelope.recipients = []
            #expect(throws: SpoolError.invalidEnvelope("no recipients")) { try spool.update(envelope) }
            #expect(try spool.envelope(id).recipients.count == 1)
            #expect(names(spool.directory + "/queue") == ["\(id).env", "\(id).msg"])
        }
    }

    @Test func updateDoesNotResurrectARemovedMessage() throws {
        try withSpool { spool in
            let id = try commitMessage(spool)
            let envelope = try spool.envelope(id)
            try spool.remove(id)
            #expect(throws: SpoolError.notFound(id)) { try spool.update(envelope) }
            #expect(names(spool.directory + "/queue") == [])
        }
    }

    @Test func updateRecordsRecipientProgress() throws {
        try withSpool { spool in
            let id = try commitMessage(spool)
            var envelope = try spool.envelope(id)
            envelope.recipients[0].state = .delivered
            envelope.recipients[0].lastReply = "250 2.0.0 Ok"
            envelope.nextAttempt = 1_795_900_000
            envelope.held = true
            try spool.update(envelope)
            #expect(try spool.envelope(id) == envelope)
        }
    }

    @Test func removeTakesBothFilesAndThenReportsNotFound() throws {
        try withSpool { spool in
            let keep = try commitMessage(spool)
            let id = try commitMessage(spool)
            try spool.remove(id)
            #expect(names(spool.directory + "/queue") == ["\(keep).env", "\(keep).msg"])
            #expect(throws: SpoolError.notFound(id)) { try spool.remove(id) }
            #expect(throws: SpoolError.notFound(id)) { try spool.envelope(id) }
            #expect(throws: SpoolError.notFound(id)) { try spool.readMessage(id) }
        }
    }

    @Test func quarantineMovesBothFilesWithAReason() throws {
        try withSpool { spool in
            let id = try commitMessage(spool)
            try spool.quarantine(id, reason: "operator said so")
            #expect(try spool.queuedIDs() == [])
            #expect(names(spool.directory + "/corrupt") == ["\(id).env", "\(id).msg", "\(id).reason"])
            #expect(readFile(spool.directory + "/corrupt/\(id).reason") == Array("operator said so\n".utf8))
            #expect(throws: SpoolError.notFound(id)) { try spool.quarantine(id, reason: "again") }
        }
    }

    @Test func tamperedModeIsCorrupt() throws {
        try withSpool { spool in
            let id = try commitMessage(spool)
            #expect(chmod(spool.directory + "/queue/\(id).env", 0o666) == 0)
            #expect(throws: SpoolError.corrupt(id, reason: "envelope is group/world writable")) {
                try spool.envelope(id)
            }
        }
    }

    @Test func queuedIDsIgnoresEverythingButEnvelopes() throws {
        try withSpool { spool in
            let first = try commitMessage(spool)
            let second = try commitMessage(spool)
            try writeFile(spool.directory + "/queue/junk.env", [1])
            try writeFile(spool.directory + "/queue/\(first).ABCDEFGH.tmp", [1])
            #expect(try spool.queuedIDs() == [first, second])
        }
    }

    @Test func availableBytesIsReported() throws {
        try withSpool { spool in
            let available = try #require(spool.availableBytes())
            #expect(available > 0)
        }
    }
}

/// Per-thread result slots for concurrentPerform. Confinement: every access holds `lock`.
final class Results: @unchecked Sendable {
    private let lock = NSLock()
    private var slots: [[QueueID]]

    init(count: Int) { slots = Array(repeating: [], count: count) }

    func set(_ index: Int, _ ids: [QueueID]) { lock.withLock { slots[index] = ids } }
    var all: [[QueueID]] { lock.withLock { slots } }
}
