import Glibc

/// A message being received: `incoming/<id>.msg`, open for writing, created by `Spool.begin()`.
///
/// Writes are buffered (64 KiB) and go to disk in `append` when the buffer fills and in `Spool.commit`. The file is
/// held under `flock(LOCK_EX)` from creation until commit or abort, so `recover()` in another process (a daemon
/// starting while `dualmta send` writes) leaves it alone; the lock dies with the process, so a crash never leaves a
/// stale one. Dropping the object without commit or abort aborts it.
///
/// Confinement (why `@unchecked Sendable` is sound): an IncomingMessage belongs to one SMTP transaction, and every call
/// on it (`append`, `size`, and `Spool.commit`/`abort` with it) is made from that connection's serial queue or work
/// queue, one at a time. It may be handed from one to the other, but never used from two threads at once.
public final class IncomingMessage: @unchecked Sendable {
    public let id: QueueID
    let path: String
    private(set) var fd: Int32
    private var buffer: [UInt8] = []
    private var written: Int64 = 0
    private var failure: SpoolError?

    static let bufferSize = 64 * 1024

    init(id: QueueID, path: String, fd: Int32) {
        self.id = id
        self.path = path
        self.fd = fd
        buffer.reserveCapacity(Self.bufferSize)
    }

    deinit {
        if fd >= 0 {
            Glibc.unlink(path)
            Glibc.close(fd)
        }
    }

    /// Bytes appended so far (buffered or written).
    public var size: Int64 { written + Int64(buffer.count) }

    /// True until the message is committed, aborted, or a write failed.
    public var isOpen: Bool { fd >= 0 && failure == nil }

    /// Appends message bytes. After the first failure every later call throws the same error, and commit refuses.
    public func append(_ bytes: some Collection<UInt8>) throws(SpoolError) {
        if let failure { throw failure }
        guard fd >= 0 else { throw .messageClosed(id) }
        buffer.append(contentsOf: bytes)
        if buffer.count >= Self.bufferSize { try flush() }
    }

    /// Writes the buffer out; the data is durable only after `Spool.commit` fsyncs it.
    func flush() throws(SpoolError) {
        if let failure { throw failure }
        guard fd >= 0 else { throw .messageClosed(id) }
        guard !buffer.isEmpty else { return }
        do {
            try FileSystem.writeAll(fd, buffer, path: path)
        } catch {
            failure = error
            throw error
        }
        written += Int64(buffer.count)
        buffer.removeAll(keepingCapacity: true)
    }

    /// Closes the descriptor (releasing the lock) without touching the file.
    func close() {
        guard fd >= 0 else { return }
        Glibc.close(fd)
        fd = -1
        buffer = []
    }

    func markFailed(_ error: SpoolError) {
        if failure == nil { failure = error }
    }
}
