import Foundation
import Logging
import Spool
import Synchronization
import Testing

@testable import MTA

@Suite struct ControlChannelTests {
    /// A fresh 0700 directory; long names exercise the /proc/self/fd path for sun_path overflow.
    private func directory(_ name: String = "c") throws -> String {
        let path = NSTemporaryDirectory() + "dualmta-control-\(UUID().uuidString)-" + name
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    private func poll(_ condition: () -> Bool) -> Bool {
        let end = ContinuousClock.now + .seconds(10)
        while !condition() {
            if ContinuousClock.now > end { return false }
            usleep(5_000)  // poll interval inside the deadline loop
        }
        return true
    }

    @Test(arguments: ["short", String(repeating: "long", count: 30)])
    func deliversCommandsToTheClosures(name: String) throws {
        let base = try directory(name)
        defer { try? FileManager.default.removeItem(atPath: base) }
        let path = ControlChannel.path(stateDirectory: base)
        let received = Mutex<[String]>([])
        let channel = try ControlChannel(
            path: path, logger: Logger(label: "test"),
            onFlush: { id in received.withLock { $0.append("flush \(id?.rawValue ?? "*")") } },
            onWake: { id in received.withLock { $0.append("wake \(id)") } })
        var status = stat()
        #expect(lstat(path, &status) == 0 && status.st_mode & 0o777 == 0o600)

        let id = try #require(QueueID("HOLLUQD0VU81QY"))
        try ControlClient.send(.flushAll, path: path)
        try ControlClient.send(.flush(id), path: path)
        try ControlClient.send(.wake(id), path: path)
        #expect(poll { received.withLock { $0.count } == 3 })
        #expect(received.withLock { $0 } == ["flush *", "flush HOLLUQD0VU81QY", "wake HOLLUQD0VU81QY"])

        channel.close()
        #expect(!FileManager.default.fileExists(atPath: path))
        #expect(throws: ControlChannelError.noDaemon) { try ControlClient.send(.flushAll, path: path) }
    }

    @Test func invalidDatagramsAreIgnored() throws {
        let base = try directory()
        defer { try? FileManager.default.removeItem(atPath: base) }
        let path = ControlChannel.path(stateDirectory: base)
        let count = Mutex(0)
        let channel = try ControlChannel(
            path: path, logger: Logger(label: "test"), onFlush: { _ in count.withLock { $0 += 1 } },
            onWake: { _ in count.withLock { $0 += 1 } })
        defer { channel.close() }
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        defer { close(fd) }
        #expect(UnixSocketAddress.with(path) { connect(fd, $0, $1) } == 0)
        for junk in ["flush ../../etc", "rm -rf /", String(repeating: "x", count: 1000)] {
            _ = junk.withCString { send(fd, $0, strlen($0), 0) }
        }
        try ControlClient.send(.flushAll, path: path)
        #expect(poll { count.withLock { $0 } == 1 })
    }

    @Test func noDaemonWithoutSocket() throws {
        let base = try directory()
        defer { try? FileManager.default.removeItem(atPath: base) }
        #expect(throws: ControlChannelError.noDaemon) {
            try ControlClient.send(.flushAll, path: ControlChannel.path(stateDirectory: base))
        }
    }

    @Test func staleSocketIsReplacedLiveOneIsNot() throws {
        let base = try directory()
        defer { try? FileManager.default.removeItem(atPath: base) }
        let path = ControlChannel.path(stateDirectory: base)
        // A socket file nobody is bound to any more (a daemon killed with -9).
        let stale = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        #expect(UnixSocketAddress.with(path) { bind(stale, $0, $1) } == 0)
        close(stale)
        let first = try ControlChannel(path: path, logger: Logger(label: "test"), onFlush: { _ in }, onWake: { _ in })
        defer { first.close() }
        #expect(throws: ControlChannelError.inUse(path)) {
            try ControlChannel(path: path, logger: Logger(label: "test"), onFlush: { _ in }, onWake: { _ in })
        }
        try ControlClient.send(.flushAll, path: path)
    }

    @Test func refusesSomethingElseAtThePath() throws {
        let base = try directory()
        defer { try? FileManager.default.removeItem(atPath: base) }
        let path = ControlChannel.path(stateDirectory: base)
        #expect(FileManager.default.createFile(atPath: path, contents: Data()))
        #expect(throws: ControlChannelError.notASocket(path)) {
            try ControlChannel(path: path, logger: Logger(label: "test"), onFlush: { _ in }, onWake: { _ in })
        }
    }
}
