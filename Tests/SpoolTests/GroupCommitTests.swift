import Dispatch
import Foundation
import Testing

@testable import Spool

@Suite struct GroupCommitTests {
    @Test func oneBatchCommitsEveryMessageAndAFailureStaysAlone() throws {
        try withSpool { spool in
            var batch: [PendingCommit] = []
            for index in 0..<3 {
                let message = try spool.begin()
                try message.append(Array("Subject: \(index)\r\n\r\nbody \(index)\r\n".utf8))
                // The middle one carries an envelope for another id: it must fail without touching the others.
                let envelopeID = index == 1 ? QueueID(microseconds: 1, suffix: 1) : message.id
                batch.append(PendingCommit(message: message, envelope: sampleEnvelope(envelopeID)))
            }
            let results = spool.commit(batch)
            #expect(results.count == 3)
            #expect((try? results[0].get()) != nil)
            #expect((try? results[1].get()) == nil)
            #expect((try? results[2].get()) != nil)
            let committed = [batch[0].message.id, batch[2].message.id]
            #expect(try spool.queuedIDs() == committed.sorted())
            #expect(names(spool.directory + "/incoming") == [])
            for (index, id) in [(0, committed[0]), (2, committed[1])] {
                #expect(try spool.readMessage(id) == Array("Subject: \(index)\r\n\r\nbody \(index)\r\n".utf8))
                #expect(try spool.envelope(id).messageSize == Int64(spool.readMessage(id).count))
            }
            for pending in batch { #expect(!pending.message.isOpen) }
        }
    }

    /// The file round spreads a batch over the commit thread and its lanes; each file's result must come back at
    /// its own index, whichever lane synced it (a wrong mapping would let a message whose sync failed commit).
    @Test(arguments: [
        (19, [0]), (19, [1]), (19, [7]), (19, [8]), (19, [13]), (19, [0, 9, 18]), (19, []),
        (2, [1]), (2, [0]), (1, [0]), (1, []), (0, []),
    ])
    func everyFileOfTheRoundGetsItsOwnResult(count: Int, failing: [Int]) throws {
        try withSpool { spool in
            var files: [(fd: Int32, path: String)] = []
            for index in 0..<count {
                let path = spool.directory + "/incoming/round.\(index)"
                let fd = failing.contains(index) ? -1 : open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
                #expect(failing.contains(index) || fd >= 0)
                files.append((fd, path))
            }
            defer { for file in files where file.fd >= 0 { close(file.fd) } }
            let errors = spool.syncTogether(files)
            #expect(errors.count == files.count)
            for (index, error) in errors.enumerated() {
                if failing.contains(index) {
                    guard case .io("fdatasync", let path, EBADF) = error else {
                        Issue.record("file \(index): expected EBADF, got \(String(describing: error))")
                        continue
                    }
                    #expect(path == files[index].path)
                } else {
                    #expect(error == nil, "file \(index)")
                }
            }
        }
    }

    @Test func requestsThatWaitTogetherShareOneBatch() throws {
        try withSpool { spool in
            let queue = DispatchQueue(label: "test.group-commit")
            queue.suspend()  // as if a batch were running: the ten requests line up behind it
            let committer = GroupCommit(spool: spool, queue: queue)
            let outcomes = try submit(10, to: committer, spool: spool, whileWaiting: { queue.resume() })
            #expect(outcomes.allSatisfy { $0 })
            #expect(committer.counts == (batches: 1, messages: 10))
            #expect(try spool.queuedIDs().count == 10)
        }
    }

    @Test func batchesStopAtTheMaximumSize() throws {
        try withSpool { spool in
            let queue = DispatchQueue(label: "test.group-commit")
            queue.suspend()
            let committer = GroupCommit(spool: spool, maximumBatch: 4, queue: queue)
            let outcomes = try submit(10, to: committer, spool: spool, whileWaiting: { queue.resume() })
            #expect(outcomes.allSatisfy { $0 })
            #expect(committer.counts == (batches: 3, messages: 10))
        }
    }

    @Test func aLoneRequestIsCommittedWithoutWaitingForCompany() throws {
        try withSpool { spool in
            let committer = GroupCommit(spool: spool)
            let outcomes = try submit(1, to: committer, spool: spool, whileWaiting: {})
            #expect(outcomes == [true])
            #expect(committer.counts == (batches: 1, messages: 1))
        }
    }

    /// Submits `count` messages, runs `whileWaiting`, and waits (with a deadline) for every completion.
    private func submit(
        _ count: Int, to committer: GroupCommit, spool: Spool, whileWaiting: () -> Void
    ) throws -> [Bool] {
        let done = DispatchSemaphore(value: 0)
        let outcomes = Outcomes(count: count)
        for index in 0..<count {
            let message = try spool.begin()
            try message.append(Array("Subject: \(index)\r\n\r\nbody\r\n".utf8))
            committer.submit(message, envelope: sampleEnvelope(message.id)) { result in
                outcomes.set(index, (try? result.get()) != nil)
                done.signal()
            }
        }
        whileWaiting()
        for _ in 0..<count {
            #expect(done.wait(timeout: .now() + 30) == .success)
        }
        return outcomes.all
    }
}

private final class Outcomes: @unchecked Sendable {
    private let lock = NSLock()
    private var values: [Bool]
    init(count: Int) { values = Array(repeating: false, count: count) }
    func set(_ index: Int, _ value: Bool) { lock.withLock { values[index] = value } }
    var all: [Bool] { lock.withLock { values } }
}
