import Dispatch
import Foundation
import Glibc
import Logging
import Spool

// The control channel lets `dualmta queue flush` and `dualmta send` talk to a running daemon without a restart:
// a UNIX datagram socket at `<spool>/state/control`, mode 0600 inside the 0700 state directory, so only the spool's
// owner (and root) can send to it. One datagram is one command, plain ASCII:
//
//     flush          retry every queued message now
//     flush <ID>     retry one message now
//     wake <ID>      a message was committed or released: schedule it
//     fault ...      list, add, delete or clear fault rules (FaultControl.swift); answered with a datagram to the
//                    sender's (autobound) address
//
// The other datagrams are fire-and-forget: the sender learns only whether a daemon is bound ("no daemon" otherwise). The
// commands carry no state of their own; the CLI edits the envelope first (nextAttempt, held), and the daemon re-reads
// it when it runs the message, so a lost datagram delays a message until its next scheduled run, never loses it.

/// One control command.
public enum ControlMessage: Hashable, Sendable {
    case flushAll
    case flush(QueueID)
    case wake(QueueID)
    case fault(FaultControlCommand)

    /// Parses the wire text; anything else (extra words, bad ids, trailing newline aside) is nil.
    public init?(_ text: String) {
        var text = Substring(text)
        if text.hasSuffix("\n") { text = text.dropLast() }
        let words = text.split(separator: " ", omittingEmptySubsequences: false)
        switch (words.first, words.count) {
        case ("flush", 1):
            self = .flushAll
        case ("flush", 2):
            guard let id = QueueID(String(words[1])) else { return nil }
            self = .flush(id)
        case ("wake", 2):
            guard let id = QueueID(String(words[1])) else { return nil }
            self = .wake(id)
        case ("fault", _):
            guard let command = FaultControlCommand(words: Array(words.dropFirst())) else { return nil }
            self = .fault(command)
        default:
            return nil
        }
    }

    public var text: String {
        switch self {
        case .flushAll: return "flush"
        case .flush(let id): return "flush \(id)"
        case .wake(let id): return "wake \(id)"
        case .fault(let command): return command.text
        }
    }
}

public enum ControlChannelError: Error, Equatable, Sendable, CustomStringConvertible {
    /// Nothing is bound at the path (no socket file, or a stale one): no daemon runs on this spool.
    case noDaemon
    /// Another live process is bound at the path (a second daemon on the same spool).
    case inUse(String)
    /// Something that is not a socket sits at the path.
    case notASocket(String)
    case system(operation: String, path: String, errno: Int32)

    public var description: String {
        switch self {
        case .noDaemon: return "no running daemon"
        case .inUse(let path): return "\(path) is in use by another running daemon"
        case .notASocket(let path): return "\(path) exists and is not a socket"
        case .system(let operation, let path, let code):
            return "\(operation) \(path): \(String(cString: strerror(code))) (errno \(code))"
        }
    }
}

/// The daemon's end: binds the socket and calls the closures for each valid command on its own serial queue.
///
/// Confinement (why `@unchecked Sendable` is sound): `source` and `closed` are only touched while `lock` is held;
/// the descriptor is closed only by the source's cancel handler.
public final class ControlChannel: @unchecked Sendable {
    public let path: String
    private let lock = NSLock()
    private var source: DispatchSourceRead?
    private var closed = false
    private let fd: Int32
    private let inode: ino_t

    /// `<state directory>/control`.
    public static func path(stateDirectory: String) -> String { stateDirectory + "/control" }

    /// Binds `path` (removing a stale socket left by a daemon that died) and starts receiving.
    /// - Parameters:
    ///   - onFlush: `flush` (nil: every message) and `flush <ID>`.
    ///   - onWake: `wake <ID>`.
    ///   - onFault: `fault ...`; returns the reply for the sender.
    public init(
        path: String, logger: Logger, onFlush: @escaping @Sendable (QueueID?) -> Void,
        onWake: @escaping @Sendable (QueueID) -> Void,
        onFault: (@Sendable (FaultControlCommand) -> String)? = nil
    ) throws(ControlChannelError) {
        self.path = path
        try Self.removeStaleSocket(path)
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw .system(operation: "socket", path: path, errno: errno) }
        let bound = UnixSocketAddress.with(path) { address, length in bind(fd, address, length) }
        guard bound == 0 else {
            let code = errno
            Glibc.close(fd)
            throw code == EADDRINUSE ? .inUse(path) : .system(operation: "bind", path: path, errno: code)
        }
        // bind creates the file as 0777 & ~umask; the state directory is 0700, so the mode matters only for root
        // tooling, but the socket must not stay looser than the spool's files.
        var status = stat()
        guard chmod(path, 0o600) == 0, fstat(fd, &status) == 0, fcntl(fd, F_SETFL, O_NONBLOCK) == 0 else {
            let code = errno
            Glibc.close(fd)
            unlink(path)
            throw .system(operation: "chmod/fcntl", path: path, errno: code)
        }
        var pathStatus = stat()
        inode = lstat(path, &pathStatus) == 0 ? pathStatus.st_ino : 0
        self.fd = fd

        let queue = DispatchQueue(label: "dualmta.control")
        let source = DispatchSource.makeReadSource(fileDescriptor: fd, queue: queue)
        source.setEventHandler {
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                var sender = sockaddr_un()
                var senderLength = socklen_t(MemoryLayout<sockaddr_un>.size)
                let count = buffer.withUnsafeMutableBytes { raw in
                    withUnsafeMutablePointer(to: &sender) {
                        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                            recvfrom(fd, raw.baseAddress, raw.count, Int32(MSG_TRUNC), $0, &senderLength)
                        }
                    }
                }
                if count < 0 { break }  // EAGAIN: drained
                guard count <= buffer.count, let text = String(validating: buffer[0..<count], as: UTF8.self),
                    let message = ControlMessage(text)
                else {
                    logger.warning("control-invalid", metadata: ["bytes": "\(count)"])
                    continue
                }
                logger.info("control", metadata: ["command": "\(message.text)"])
                switch message {
                case .flushAll: onFlush(nil)
                case .flush(let id): onFlush(id)
                case .wake(let id): onWake(id)
                case .fault(let command):
                    let reply = Array((onFault?(command) ?? "error: fault rules are not available\n").utf8)
                    // Only a sender with an address (the CLI autobinds one) can be answered.
                    guard senderLength > socklen_t(MemoryLayout<sa_family_t>.size) else { continue }
                    _ = reply.withUnsafeBytes { raw in
                        withUnsafePointer(to: &sender) {
                            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                                sendto(fd, raw.baseAddress, raw.count, Int32(MSG_DONTWAIT), $0, senderLength)
                            }
                        }
                    }
                }
            }
        }
        source.setCancelHandler { Glibc.close(fd) }
        self.source = source
        source.resume()
    }

    /// Stops receiving and removes the socket file, unless another daemon has replaced it meanwhile. Idempotent.
    public func close() {
        let source: DispatchSourceRead? = lock.withLock {
            guard !closed else { return nil }
            closed = true
            defer { self.source = nil }
            return self.source
        }
        guard let source else { return }
        var status = stat()
        if lstat(path, &status) == 0, status.st_ino == inode { unlink(path) }
        source.cancel()
    }

    deinit { close() }

    /// A socket file whose owner is gone refuses connections: remove it. A live one means another daemon.
    static func removeStaleSocket(_ path: String) throws(ControlChannelError) {
        var status = stat()
        guard lstat(path, &status) == 0 else { return }
        guard status.st_mode & S_IFMT == S_IFSOCK else { throw .notASocket(path) }
        switch ControlClient.probe(path) {
        case .success: throw .inUse(path)
        case .failure(.noDaemon):
            if unlink(path) != 0 && errno != ENOENT { throw .system(operation: "unlink", path: path, errno: errno) }
        case .failure(let error): throw error
        }
    }
}

/// The CLI's end.
public enum ControlClient {
    /// Sends one command. `.noDaemon` when nobody is bound; waits at most a second when the daemon's receive queue
    /// is full.
    public static func send(_ message: ControlMessage, path: String) throws(ControlChannelError) {
        let fd = try connected(path)
        defer { close(fd) }
        let bytes = Array(message.text.utf8)
        let sent = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        guard sent == bytes.count else {
            let code = errno
            if code == ECONNREFUSED || code == ENOTCONN { throw .noDaemon }
            throw .system(operation: "send", path: path, errno: code)
        }
    }

    /// Sends one command and waits (at most `timeout`) for the daemon's datagram reply. The socket autobinds an
    /// abstract address so the daemon can answer.
    public static func request(_ message: ControlMessage, path: String, timeout: Int = 5) throws(ControlChannelError)
        -> String
    {
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw .system(operation: "socket", path: path, errno: errno) }
        defer { close(fd) }
        var unnamed = sockaddr_un()
        unnamed.sun_family = sa_family_t(AF_UNIX)
        let bound = withUnsafePointer(to: &unnamed) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sa_family_t>.size))
            }
        }
        guard bound == 0 else { throw .system(operation: "bind", path: "(autobind)", errno: errno) }
        var wait = timeval(tv_sec: timeout, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &wait, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &wait, socklen_t(MemoryLayout<timeval>.size))
        let connected = UnixSocketAddress.with(path) { address, length in connect(fd, address, length) }
        guard connected == 0 else {
            let code = errno
            if code == ENOENT || code == ECONNREFUSED { throw .noDaemon }
            throw .system(operation: "connect", path: path, errno: code)
        }
        let bytes = Array(message.text.utf8)
        let sent = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        guard sent == bytes.count else {
            let code = errno
            if code == ECONNREFUSED || code == ENOTCONN { throw .noDaemon }
            throw .system(operation: "send", path: path, errno: code)
        }
        var buffer = [UInt8](repeating: 0, count: 65536)
        let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        guard count >= 0 else { throw .system(operation: "recv", path: path, errno: errno) }
        return String(decoding: buffer[0..<count], as: UTF8.self)
    }

    /// Whether a daemon is bound at `path` (connect only, nothing sent).
    static func probe(_ path: String) -> Result<Void, ControlChannelError> {
        do throws(ControlChannelError) {
            close(try connected(path))
            return .success(())
        } catch {
            return .failure(error)
        }
    }

    private static func connected(_ path: String) throws(ControlChannelError) -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw .system(operation: "socket", path: path, errno: errno) }
        var timeout = timeval(tv_sec: 1, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let result = UnixSocketAddress.with(path) { address, length in connect(fd, address, length) }
        guard result == 0 else {
            let code = errno
            close(fd)
            if code == ENOENT || code == ECONNREFUSED { throw .noDaemon }
            throw .system(operation: "connect", path: path, errno: code)
        }
        return fd
    }
}

/// `sockaddr_un` for a path. sun_path holds 107 bytes; a longer path (a deep test directory) is reached through
/// `/proc/self/fd/<directory fd>/<name>`, which bind and connect resolve like any other path on Linux.
enum UnixSocketAddress {
    static let maximumPathBytes = MemoryLayout.size(ofValue: sockaddr_un().sun_path) - 1

    static func with(_ path: String, _ body: (UnsafePointer<sockaddr>, socklen_t) -> Int32) -> Int32 {
        var effective = path
        var directoryFD: Int32 = -1
        defer { if directoryFD >= 0 { close(directoryFD) } }
        if path.utf8.count > maximumPathBytes, let slash = path.lastIndex(of: "/") {
            let directory = slash == path.startIndex ? "/" : String(path[..<slash])
            directoryFD = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            guard directoryFD >= 0 else { return -1 }
            effective = "/proc/self/fd/\(directoryFD)/" + path[path.index(after: slash)...]
        }
        let bytes = Array(effective.utf8)
        guard bytes.count <= maximumPathBytes, !bytes.contains(0) else {
            errno = ENAMETOOLONG
            return -1
        }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + 1)
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, length) }
        }
    }
}
