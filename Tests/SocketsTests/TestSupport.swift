import Dispatch
import Glibc
import NetAddress
import Testing

@testable import Sockets

/// Socket tests share process-wide resources (the fd table, RLIMIT_NOFILE, CPU time), so they run one at a
/// time under this parent suite; the per-type suites extend it.
@Suite(.serialized) enum SocketIO {}

/// A value shared between a Dispatch queue and the test thread.
final class Shared<Value>: @unchecked Sendable {
    // @unchecked Sendable: every access goes through `lock`.
    private let lock = Lock()
    private var value: Value

    init(_ value: Value) { self.value = value }

    func get() -> Value { lock.withLock { value } }
    func update<R>(_ body: (inout Value) -> R) -> R { lock.withLock { body(&value) } }
}

/// Test-only helper: a parse that must succeed (the literals are constants in the tests).
func address(_ text: String) throws -> SocketAddress {
    try #require(SocketAddress(parsing: text))
}

/// Waits for `semaphore` with a deadline; false on timeout.
func wait(_ semaphore: DispatchSemaphore, seconds: Double) -> Bool {
    semaphore.wait(timeout: .now() + seconds) == .success
}

/// Polls `condition` every 5 ms until it holds or `seconds` pass.
func poll(seconds: Double, _ condition: () -> Bool) -> Bool {
    let end = DispatchTime.now() + seconds
    while DispatchTime.now() < end {
        if condition() { return true }
        usleep(5_000)  // poll interval inside the deadline loop
    }
    return condition()
}

/// Connects and waits for the result (deadline: timeout + 5 s).
func connectAndWait(
    to remote: SocketAddress, from source: SocketAddress? = nil, timeout: Duration = .seconds(5),
    queue: DispatchQueue
) -> Result<Connection, SocketError>? {
    let result = Shared<Result<Connection, SocketError>?>(nil)
    let done = DispatchSemaphore(value: 0)
    Connection.connect(to: remote, from: source, timeout: timeout, queue: queue) { outcome in
        result.update { $0 = outcome }
        done.signal()
    }
    let seconds = Double(timeout.components.seconds) + 5
    guard wait(done, seconds: seconds) else { return nil }
    return result.get()
}

/// Open fds of this process that are sockets (other files opened by the test runner are left out).
func openSocketCount() -> Int {
    guard let directory = opendir("/proc/self/fd") else { return -1 }
    defer { closedir(directory) }
    var count = 0
    var target = [CChar](repeating: 0, count: 64)
    while let entry = readdir(directory) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
            String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
        guard name.first?.isNumber == true else { continue }
        let length = readlink("/proc/self/fd/\(name)", &target, target.count - 1)
        guard length > 0 else { continue }
        let link = target[0..<length].map { UInt8(bitPattern: $0) }
        if link.starts(with: Array("socket:".utf8)) { count += 1 }
    }
    return count
}

/// An fd limit that leaves exactly `free` descriptor numbers available (the kernel hands out the lowest free
/// number, and RLIMIT_NOFILE bounds the number itself, so gaps left by closed fds count as room).
func limitLeavingFreeDescriptors(_ free: Int) -> Int32 {
    var open = Set<Int32>()
    if let directory = opendir("/proc/self/fd") {
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if let number = Int32(name) { open.insert(number) }
        }
        open.remove(dirfd(directory))
        closedir(directory)
    }
    var candidate: Int32 = 0
    var seenFree = 0
    while true {
        if !open.contains(candidate) {
            if seenFree == free { return candidate }
            seenFree += 1
        }
        candidate += 1
    }
}

/// A plain blocking client socket connected to `remote` (used where the test must hold fds it opened itself).
func blockingConnect(to remote: SocketAddress) -> Int32 {
    let fd = socket(remote.family == .ipv4 ? AF_INET : AF_INET6, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return -1 }
    let result = remote.withSockAddr { Glibc.connect(fd, $0, $1) }
    if result != 0 {
        _ = Glibc.close(fd)
        return -1
    }
    return fd
}

/// A listener whose connections echo every byte back; closes a connection at end of stream.
final class EchoServer: @unchecked Sendable {
    // @unchecked Sendable: `connections` and `peers` are touched only on `queue`.
    let listener: Listener
    let queue = DispatchQueue(label: "echo-server")
    private var connections: [ObjectIdentifier: Connection] = [:]
    private(set) var peers: [SocketAddress] = []
    private(set) var acceptedCount = 0

    init(_ address: SocketAddress, backlog: Int32 = 1024) throws(SocketError) {
        listener = try Listener.bind(address, backlog: backlog)
        listener.start(queue: queue, onAccept: { [self] socket in accept(socket) }, onError: { _ in })
    }

    private func accept(_ socket: AcceptedSocket) {
        let connection = Connection(socket: socket, queue: queue)
        let key = ObjectIdentifier(connection)
        connections[key] = connection
        peers.append(socket.peer)
        acceptedCount += 1
        connection.startReading(
            { bytes in
                connection.write(Array(bytes))
            },
            onClose: { [self] _ in
                connection.close()
                connections[key] = nil
            })
    }

    var liveConnections: Int { queue.sync { connections.count } }
    var acceptedPeers: [SocketAddress] { queue.sync { peers } }
    var accepted: Int { queue.sync { acceptedCount } }

    func stop() {
        listener.close()
        queue.sync {
            for connection in connections.values { connection.close(afterFlush: false) }
            connections.removeAll()
        }
    }
}

/// Reads from a client connection into a buffer; signals when `expected` bytes arrived or the stream ended.
final class Collector: @unchecked Sendable {
    // @unchecked Sendable: `bytes` is written on the connection's queue and read through `lock`.
    private let lock = Lock()
    private var bytes: [UInt8] = []
    private var ended: SocketError?? = nil
    let done = DispatchSemaphore(value: 0)
    private let expected: Int

    init(expected: Int) { self.expected = expected }

    func start(_ connection: Connection) {
        connection.queue.sync {
            connection.startReading(
                { [self] chunk in
                    let count = lock.withLock {
                        bytes.append(contentsOf: chunk)
                        return bytes.count
                    }
                    if count >= expected { done.signal() }
                },
                onClose: { [self] error in
                    lock.withLock { ended = .some(error) }
                    done.signal()
                })
        }
    }

    var received: [UInt8] { lock.withLock { bytes } }
    var endOfStream: SocketError?? { lock.withLock { ended } }
}

/// One open socket, named by descriptor and inode, so a test can tell "closed" from "the number was reused by
/// another suite running at the same time": process-wide fd counts are not stable while other suites run.
struct SocketIdentity {
    let fd: Int32
    let inode: UInt64

    init?(fd: Int32) {
        var status = stat()
        guard fstat(fd, &status) == 0 else { return nil }
        self.fd = fd
        inode = UInt64(status.st_ino)
    }

    var isOpen: Bool {
        var status = stat()
        return stat("/proc/self/fd/\(fd)", &status) == 0 && UInt64(status.st_ino) == inode
    }
}
