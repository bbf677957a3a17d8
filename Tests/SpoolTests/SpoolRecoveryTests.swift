import Foundation
import Glibc
import Testing

@testable import Spool

/// Start-up recovery (Q01–Q06; docs/rules.md, "The queue"): each case damages one queue entry next to a valid one, then runs recover().
@Suite struct SpoolRecoveryTests {
    enum Damage: String, CaseIterable, Sendable {
        case messageWithoutEnvelope, envelopeWithoutMessage, truncatedEnvelope, flippedByte, messageSizeMismatch
        case zeroLengthEnvelope, randomBytes, envelopeSymlink, messageSymlink, worldWritable, hugeSparseEnvelope
        case interruptedAfterDataRename, unknownVersion, envelopeIsFIFO
    }

    enum Expected { case removed, quarantined }

    static func expected(_ damage: Damage) -> Expected {
        switch damage {
        case .messageWithoutEnvelope, .interruptedAfterDataRename: return .removed
        default: return .quarantined
        }
    }

    /// The reason recorded for a quarantined entry (what the operator reads in corrupt/<id>.reason).
    static func reason(_ damage: Damage) -> String {
        switch damage {
        case .messageWithoutEnvelope, .interruptedAfterDataRename: return ""
        case .envelopeWithoutMessage: return "message file missing"
        case .truncatedEnvelope: return "no END record (truncated)"
        case .flippedByte: return "checksum mismatch"
        case .messageSizeMismatch: return "message size 10 != recorded 9"
        case .zeroLengthEnvelope: return "empty file"
        case .randomBytes: return ""  // depends on the bytes
        case .envelopeSymlink, .messageSymlink: return "symbolic link"
        case .worldWritable: return "envelope is group/world writable"
        case .hugeSparseEnvelope: return "envelope file too large (2147483648 bytes)"
        case .unknownVersion: return "unsupported version"
        case .envelopeIsFIFO: return "envelope is not a regular file"
        }
    }

    @Test(arguments: Damage.allCases)
    func damagedEntryIsHandledAndValidOneUntouched(_ damage: Damage) throws {
        try withSpool { spool in
            let keeper = try commitMessage(spool, "keep me\r\n")
            let keeperEnvelope = try spool.envelope(keeper)
            let id = try commitMessage(spool, "damaged\r\n")
            let queue = spool.directory + "/queue"
            let envelopePath = "\(queue)/\(id).env"
            let messagePath = "\(queue)/\(id).msg"
            let envelopeBytes = try #require(readFile(envelopePath))

            switch damage {
            case .messageWithoutEnvelope:
                unlink(envelopePath)
            case .envelopeWithoutMessage:
                unlink(messagePath)
            case .truncatedEnvelope:
                try writeFile(envelopePath, Array(envelopeBytes.prefix(envelopeBytes.count / 2)))
            case .flippedByte:
                var bytes = envelopeBytes
                bytes[bytes.count / 3] ^= 0x04
                try writeFile(envelopePath, bytes)
            case .messageSizeMismatch:
                try writeFile(messagePath, Array("damaged!\r\n".utf8))
            case .zeroLengthEnvelope:
                try writeFile(envelopePath, [])
            case .randomBytes:
                try writeFile(envelopePath, (0..<500).map { _ in UInt8.random(in: 0...255) })
            case .envelopeSymlink:
                unlink(envelopePath)
                #expect(symlink("/etc/passwd", envelopePath) == 0)
            case .messageSymlink:
                unlink(messagePath)
                #expect(symlink("/etc/passwd", messagePath) == 0)
            case .worldWritable:
                #expect(chmod(envelopePath, 0o666) == 0)
            case .hugeSparseEnvelope:
                #expect(truncate(envelopePath, 2 << 30) == 0)  // 2 GiB, rejected by size without reading
            case .interruptedAfterDataRename:
                // State 3: the data is in queue/, the envelope still in incoming/.
                #expect(rename(envelopePath, spool.directory + "/incoming/\(id).env") == 0)
            case .unknownVersion:
                let text = String(decoding: envelopeBytes, as: UTF8.self)
                try writeFile(
                    envelopePath,
                    sealed(
                        text.replacingOccurrences(of: "DUALMTA-ENV 2", with: "DUALMTA-ENV 9")
                            .split(separator: "\n").dropLast().map(String.init)))
            case .envelopeIsFIFO:
                unlink(envelopePath)
                #expect(mkfifo(envelopePath, 0o600) == 0)
            }

            let report = try spool.recover()

            #expect(report.valid == [keeper])
            #expect(try spool.envelope(keeper) == keeperEnvelope)
            #expect(try spool.readMessage(keeper) == Array("keep me\r\n".utf8))
            #expect(try spool.queuedIDs() == [keeper])
            #expect(names(queue) == ["\(keeper).env", "\(keeper).msg"])
            #expect(names(spool.directory + "/incoming") == [])
            #expect(report.problems == [])
            switch Self.expected(damage) {
            case .removed:
                #expect(report.removedUncommitted == [id])
                #expect(report.quarantined == [])
                #expect(names(spool.directory + "/corrupt") == [])
            case .quarantined:
                #expect(report.quarantined.map(\.name) == [id.rawValue])
                if !Self.reason(damage).isEmpty { #expect(report.quarantined.first?.reason == Self.reason(damage)) }
                #expect(names(spool.directory + "/corrupt").contains("\(id).reason"))
                #expect(names(spool.directory + "/corrupt").contains("\(id).env"))
            }
            // Symlink targets are never touched.
            #expect((readFile("/etc/passwd")?.count ?? 0) > 0)
            // A second run finds nothing more to do.
            let again = try spool.recover()
            #expect(again.valid == [keeper] && again.quarantined == [] && again.removedUncommitted == [])
        }
    }

    @Test func incomingResidueAndTemporariesAreRemovedButLiveWritersKept() throws {
        try withSpool { spool in
            let keeper = try commitMessage(spool)
            let live = try spool.begin()  // flocked: like a `dualmta send` still writing in another process
            try live.append(Array("still coming".utf8))
            let incoming = spool.directory + "/incoming"
            try writeFile(incoming + "/0M8ZK3Q1F2A7XQ.msg", Array("partial".utf8))
            try writeFile(incoming + "/0M8ZK3Q1F2A7XQ.env", Array("DUALMTA-ENV 1\n".utf8))
            #expect(symlink("/etc/passwd", incoming + "/0M8ZK3Q1F2A7XR.msg") == 0)
            try writeFile(spool.directory + "/queue/\(keeper).ABCDEFGH.tmp", Array("half an update".utf8))
            try writeFile(spool.directory + "/queue/notes.txt", Array("junk".utf8))

            let report = try spool.recover()

            #expect(
                report.removedIncoming.sorted() == ["0M8ZK3Q1F2A7XQ.env", "0M8ZK3Q1F2A7XQ.msg", "0M8ZK3Q1F2A7XR.msg"])
            #expect(report.busy == ["\(live.id).msg"])
            #expect(report.removedTemporary == ["\(keeper).ABCDEFGH.tmp"])
            #expect(report.quarantined.map(\.name) == ["notes.txt"])
            #expect(names(spool.directory + "/corrupt") == ["foreign.notes.txt"])
            #expect(report.valid == [keeper])
            #expect(names(incoming) == ["\(live.id).msg"])
            // The live writer can still commit.
            try spool.commit(live, envelope: sampleEnvelope(live.id))
            #expect(try spool.queuedIDs() == [keeper, live.id].sorted())
        }
    }

    @Test func emptySpoolRecoversToAnEmptyReport() throws {
        try withSpool { spool in
            let report = try spool.recover()
            #expect(report == RecoveryReport())
        }
    }
}
