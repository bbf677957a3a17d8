import Foundation
import Glibc
import Testing

@testable import Spool

@Suite struct IncomingMessageTests {
    @Test func buffersSmallWritesAndFlushesFullBuffers() throws {
        try withSpool { spool in
            let message = try spool.begin()
            let path = spool.directory + "/incoming/\(message.id).msg"
            try message.append([UInt8](repeating: 7, count: 100))
            #expect(message.size == 100)
            #expect(readFile(path)?.count == 0)  // still buffered
            try message.append([UInt8](repeating: 8, count: IncomingMessage.bufferSize))
            #expect(readFile(path)?.count == 100 + IncomingMessage.bufferSize)
            #expect(message.size == Int64(100 + IncomingMessage.bufferSize))
            try message.append(ArraySlice([9, 9]))
            try message.append("ab".utf8)
            try spool.commit(message, envelope: sampleEnvelope(message.id))
            let bytes = try spool.readMessage(message.id)
            #expect(bytes.count == 104 + IncomingMessage.bufferSize)
            #expect(bytes.suffix(4) == [9, 9, 97, 98])
        }
    }

    @Test func incomingFileIsPrivateAndExclusive() throws {
        try withSpool { spool in
            let message = try spool.begin()
            let path = spool.directory + "/incoming/\(message.id).msg"
            #expect(fileMode(path) == 0o600)
            // Another open file description cannot take the lock: recover() in another process skips it.
            let other = open(path, O_RDONLY)
            defer { close(other) }
            #expect(flock(other, LOCK_EX | LOCK_NB) != 0)
            spool.abort(message)
            #expect(flock(other, LOCK_EX | LOCK_NB) == 0)
        }
    }
}
