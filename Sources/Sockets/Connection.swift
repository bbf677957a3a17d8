import Dispatch
import Glibc
import NetAddress

/// One connected, non-blocking TCP socket driven by a read source and a write source on `queue`.
///
/// **Threading invariant:** every method and property (except the immutable `peer`, `local` and `queue`) must be
/// used on `queue`; handlers and completions are called on `queue`. Use a serial queue.
///
/// Lifetime: the fd is closed exactly once — by the last cancel handler of the sources watching it, or at once
/// if no source watches it. After end of stream (`onClose(nil)`) reading has stopped but writing still works
/// (a client may half-close after QUIT); the owner calls `close()`. After an I/O error the connection closes
/// itself. A connection with a live source keeps itself alive until closed; one without is closed on release.
///
/// Back-pressure: while more than `outputHighWater` bytes wait to be sent, no more input is read (until they drain
/// to `outputLowWater`), so a peer that sends without reading is held by TCP flow control, not by our memory.
public final class Connection: @unchecked Sendable {
    // @unchecked Sendable: all mutable state below is touched only on `queue` (the invariant above); handing the
    // reference to another thread is fine, using it there is not.

    /// Bytes read per recv() call.
    public static let readChunkSize = 64 * 1024
    /// Unsent output above which the connection stops reading: a peer that sends commands and never reads the
    /// replies is held back by TCP flow control instead of growing our memory. One chunk read before the pause
    /// can add its replies on top, so a connection holds at most this plus the replies to `readChunkSize` bytes.
    public static let outputHighWater = 64 * 1024
    /// Reading resumes once the unsent output has drained to this level.
    public static let outputLowWater = 16 * 1024

    public let peer: SocketAddress
    public let local: SocketAddress
    public let queue: DispatchQueue
    let fd: Int32

    private enum State {
        case open
        case draining  // close(afterFlush: true) called, waiting for queued bytes to go out
        case closed
    }

    private struct PendingWrite {
        var bytes: [UInt8]
        var offset: Int
        var completion: (() -> Void)?
    }

    private var state = State.open
    private var fdClosed = false
    private var liveSources = 0

    private var readSource: DispatchSourceRead?
    /// Internal for tests: the read source is suspended only once input arrives while paused.
    private(set) var readSourceSuspended = false
    private var readCancelled = false
    /// The owner asked for a pause (`pauseReading`), e.g. while a commit or a password check runs.
    private var pausedByOwner = false
    /// Unsent output passed `outputHighWater` and has not yet drained to `outputLowWater`.
    private var pausedByBacklog = false
    private var readPaused: Bool { pausedByOwner || pausedByBacklog }
    private var readHandler: ((UnsafeRawBufferPointer) -> Void)?
    private var onClose: ((SocketError?) -> Void)?

    private var writeSource: DispatchSourceWrite?
    private var writeSourceSuspended = false
    private var writeCancelled = false
    private var pendingWrites: [PendingWrite] = []
    private var pendingHead = 0
    private var flushing = false
    private var drainTimer: DispatchSourceTimer?

    /// Bytes queued and not yet accepted by the kernel.
    public private(set) var pendingWriteBytes = 0

    /// Wraps an accepted (or connected) non-blocking socket; the connection owns the fd from now on.
    public init(socket: AcceptedSocket, queue: DispatchQueue) {
        fd = socket.fd
        peer = socket.peer
        local = socket.local
        self.queue = queue
        // SMTP is request/reply and every reply group leaves in one write: Nagle's algorithm only adds delayed-ACK
        // stalls (~40 ms per exchange on loopback). Best effort: a failure here changes timing, not correctness.
        let tcpNoDelay: Int32 = 1  // TCP_NODELAY (Glibc does not export the constant to Swift)
        try? setIntOption(fd, level: Int32(IPPROTO_TCP), name: tcpNoDelay, value: 1)
    }

    /// Caps the kernel's send buffer for this socket (SO_SNDBUF; the kernel doubles the value for bookkeeping).
    /// A server connection only ever sends short replies, and without a cap the kernel lets the buffer grow to
    /// megabytes for a peer that does not read, so back-pressure would set in only after that much memory.
    /// Best effort: without the cap back-pressure still works, only later.
    public func limitKernelSendBuffer(to bytes: Int) {
        try? setIntOption(fd, level: SOL_SOCKET, name: SO_SNDBUF, value: Int32(clamping: bytes))
    }

    deinit {
        // Only reachable when no source is alive (live sources hold `self`), so closing here is safe.
        if !fdClosed { _ = Glibc.close(fd) }
    }

    /// True once `close()` was called or the connection failed; no more writes are accepted.
    public var isClosed: Bool { state != .open }

    // MARK: - Outbound

    /// Opens a connection to `remote` without blocking: optional bind to `source` first, then a non-blocking
    /// connect whose result arrives on `queue`.
    ///
    /// - Parameters:
    ///   - remote: the destination; its family picks the socket family.
    ///   - source: a local address of the same family to bind first (`bind_address`/`bind_address6`), or nil to
    ///     let the kernel choose (RFC 6724 source selection).
    ///   - timeout: how long to wait for the handshake (`connect_timeout`).
    ///   - completion: called once on `queue` with the connection, or `.system(call: "connect", errno:)`
    ///     (ECONNREFUSED, EHOSTUNREACH, ENETUNREACH, EACCES, EINVAL, ...: what an unreachable or
    ///     filtered route gives), `.system` for
    ///     socket/bind failures, `.familyMismatch`, `.addressFamilyUnsupported`, or `.timedOut`.
    /// - Returns: a handle whose `cancel()` abandons the handshake (Happy Eyeballs closes the losers); callers that
    ///   never cancel ignore it.
    @discardableResult
    public static func connect(
        to remote: SocketAddress, from source: SocketAddress?, timeout: Duration, queue: DispatchQueue,
        completion: @escaping @Sendable (Result<Connection, SocketError>) -> Void
    ) -> PendingConnect {
        let attempt = ConnectAttempt(
            remote: remote, source: source, timeout: timeout, queue: queue,
            completion: completion)
        queue.async { attempt.start() }
        return PendingConnect(attempt: attempt, queue: queue)
    }

    // MARK: - Reading

    /// Starts the read source. `handler` gets each chunk (up to `readChunkSize` bytes, valid only during the
    /// call). `onClose` is called at most once: `nil` at end of stream, or the error that killed the connection
    /// (a read or write failure); never because the owner called `close()`. Calling it again does nothing.
    public func startReading(
        _ handler: @escaping (UnsafeRawBufferPointer) -> Void, onClose: @escaping (SocketError?) -> Void
    ) {
        guard state == .open, readSource == nil, !readCancelled else { return }
        readHandler = handler
        self.onClose = onClose
        let source = DispatchSource.makeReadSource(fileDescriptor: fd, queue: queue)
        source.setEventHandler { self.readAvailable() }
        source.setCancelHandler { self.sourceCancelled(read: true) }
        readSource = source
        liveSources += 1
        source.activate()
        if readPaused {
            source.suspend()
            readSourceSuspended = true
        }
    }

    /// Stops delivering reads until `resumeReading()` (while a reply is being committed or a check runs).
    /// The read source is suspended lazily, only if input arrives while paused: a client normally sends nothing
    /// while it waits for a reply, and suspending and resuming a Dispatch source costs a wake-up of the event
    /// thread each (two per message accepted, measured with strace).
    public func pauseReading() {
        pausedByOwner = true
    }

    /// Ends the owner's pause; reading still waits while the output backlog drains.
    public func resumeReading() {
        pausedByOwner = false
        resumeReadSourceIfAllowed()
    }

    /// True while reading waits for the peer to take our output (tests and logs).
    public var isHeldByBacklog: Bool { pausedByBacklog }

    private func resumeReadSourceIfAllowed() {
        guard !readPaused else { return }
        if let readSource, readSourceSuspended, !readCancelled {
            readSourceSuspended = false
            readSource.resume()
        }
    }

    /// True if bytes are readable right now (recv with MSG_PEEK|MSG_DONTWAIT): catches clients that talk
    /// before the greeting. End of stream is not input.
    public func hasPendingInput() -> Bool {
        guard !fdClosed, state != .closed else { return false }
        var byte: UInt8 = 0
        return recv(fd, &byte, 1, SocketFlags.peekNoWait) > 0
    }

    private func readAvailable() {
        guard state != .closed, !readCancelled else { return }
        if readPaused {
            // Input while paused: now stop the (level-triggered) source, or it would fire again at once.
            if let readSource, !readSourceSuspended {
                readSource.suspend()
                readSourceSuspended = true
            }
            return
        }
        let chunkSize = Self.readChunkSize
        // Allocated per read, so an idle connection holds no buffer.
        withUnsafeTemporaryAllocation(byteCount: chunkSize, alignment: 16) { buffer in
            while true {
                let count = recv(fd, buffer.baseAddress, chunkSize, 0)
                if count > 0 {
                    readHandler?(UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
                    return
                }
                if count == 0 {
                    readEnded(nil)
                    return
                }
                let code = lastErrno()
                if code == EINTR { continue }
                if code == EAGAIN || code == EWOULDBLOCK { return }
                readEnded(.system(call: "recv", errno: code))
                return
            }
        }
    }

    private func readEnded(_ error: SocketError?) {
        cancelReadSource()
        readHandler = nil
        if let error {
            fail(error)
        } else {
            reportClose(nil)
        }
    }

    private func reportClose(_ error: SocketError?) {
        guard let handler = onClose else { return }
        onClose = nil
        handler(error)
    }

    // MARK: - Writing

    /// Queues `bytes`; sends at once when the socket can take them, else when the write source fires. Partial
    /// writes and EAGAIN are handled; send() uses MSG_NOSIGNAL, so a gone peer is an EPIPE error, not SIGPIPE.
    /// `completion` runs on `queue` once these bytes are all in the kernel; it never runs if the connection is
    /// closed or fails first. Writes after `close()` are dropped.
    public func write(_ bytes: [UInt8], completion: (() -> Void)? = nil) {
        guard state == .open else { return }
        pendingWrites.append(PendingWrite(bytes: bytes, offset: 0, completion: completion))
        pendingWriteBytes += bytes.count
        if pendingWriteBytes > Self.outputHighWater { pausedByBacklog = true }
        let waitingForWritable = writeSource != nil && !writeSourceSuspended && !writeCancelled
        if !waitingForWritable { flush() }
    }

    private func flush() {
        guard !flushing else { return }  // a completion called write(): the running loop picks it up
        flushing = true
        defer { flushing = false }
        while pendingHead < pendingWrites.count {
            guard state != .closed else { return }
            let item = pendingWrites[pendingHead]
            let remaining = item.bytes.count - item.offset
            if remaining > 0 {
                let sent = item.bytes.withUnsafeBytes { raw in
                    send(fd, raw.baseAddress.map { $0 + item.offset }, remaining, SocketFlags.noSignal)
                }
                if sent < 0 {
                    let code = lastErrno()
                    if code == EINTR { continue }
                    if code == EAGAIN || code == EWOULDBLOCK {
                        armWriteSource()
                        return
                    }
                    fail(.system(call: "send", errno: code))
                    return
                }
                pendingWrites[pendingHead].offset += sent
                pendingWriteBytes -= sent
                if pausedByBacklog && pendingWriteBytes <= Self.outputLowWater {
                    pausedByBacklog = false
                    resumeReadSourceIfAllowed()
                }
                if sent < remaining { continue }
            }
            let completion = pendingWrites[pendingHead].completion
            pendingWrites[pendingHead].bytes = []
            pendingHead += 1
            if pendingHead > 64 && pendingHead * 2 > pendingWrites.count {
                pendingWrites.removeFirst(pendingHead)
                pendingHead = 0
            }
            completion?()
        }
        pendingWrites.removeAll()
        pendingHead = 0
        disarmWriteSource()
        if state == .draining { teardown() }
    }

    private func armWriteSource() {
        guard !writeCancelled else { return }
        if let writeSource {
            if writeSourceSuspended {
                writeSourceSuspended = false
                writeSource.resume()
            }
            return
        }
        let source = DispatchSource.makeWriteSource(fileDescriptor: fd, queue: queue)
        source.setEventHandler { self.writable() }
        source.setCancelHandler { self.sourceCancelled(read: false) }
        writeSource = source
        liveSources += 1
        source.activate()
    }

    private func disarmWriteSource() {
        // Writability is level-triggered: an armed source on an idle socket would fire forever.
        if let writeSource, !writeSourceSuspended, !writeCancelled {
            writeSource.suspend()
            writeSourceSuspended = true
        }
    }

    private func writable() {
        guard state != .closed, !writeCancelled else { return }
        flush()
    }

    // MARK: - Closing

    /// Closes the connection. With `afterFlush` (the default) queued bytes are sent first; reading stops now.
    /// Without it, or if the peer is gone, queued bytes are dropped. Idempotent; a later call without
    /// `afterFlush` cuts a pending drain short.
    /// - Parameter drainTimeout: a peer that stops reading would keep a draining connection (and its fd) forever;
    ///   after this long the queued bytes are dropped and the connection closes anyway.
    public func close(afterFlush: Bool = true, drainTimeout: Duration = .seconds(60)) {
        switch state {
        case .closed:
            return
        case .draining:
            if !afterFlush { teardown() }
        case .open:
            cancelReadSource()
            readHandler = nil
            onClose = nil
            if afterFlush && pendingHead < pendingWrites.count {
                state = .draining
                // flush() is running (close called from a completion) or the write source is armed.
                let timer = DispatchSource.makeTimerSource(queue: queue)
                timer.schedule(deadline: deadline(after: drainTimeout))
                timer.setEventHandler { self.teardown() }
                drainTimer = timer
                timer.activate()
                return
            }
            teardown()
        }
    }

    /// A read or write failure: the peer is gone, drop everything and tell the owner.
    private func fail(_ error: SocketError) {
        guard state != .closed else { return }
        let handler = onClose
        onClose = nil
        teardown()
        handler?(error)
    }

    private func teardown() {
        guard state != .closed else { return }
        state = .closed
        drainTimer?.cancel()
        drainTimer = nil
        pendingWrites.removeAll()
        pendingHead = 0
        pendingWriteBytes = 0
        readHandler = nil
        onClose = nil
        cancelReadSource()
        cancelWriteSource()
        if liveSources == 0 { closeDescriptor() }
    }

    private func cancelReadSource() {
        guard let readSource, !readCancelled else { return }
        readCancelled = true
        readSource.cancel()
        // A suspended source never runs its cancel handler; resuming after cancel delivers no more events.
        if readSourceSuspended {
            readSourceSuspended = false
            readSource.resume()
        }
    }

    private func cancelWriteSource() {
        guard let writeSource, !writeCancelled else { return }
        writeCancelled = true
        writeSource.cancel()
        if writeSourceSuspended {
            writeSourceSuspended = false
            writeSource.resume()
        }
    }

    private func sourceCancelled(read: Bool) {
        if read { readSource = nil } else { writeSource = nil }
        liveSources -= 1
        // The fd may be closed only when no source watches it any more.
        if liveSources == 0 && state == .closed { closeDescriptor() }
    }

    private func closeDescriptor() {
        guard !fdClosed else { return }
        fdClosed = true
        _ = Glibc.close(fd)
    }
}

/// An outbound connect that may still be in progress.
public final class PendingConnect: Sendable {
    private let attempt: ConnectAttempt
    private let queue: DispatchQueue

    fileprivate init(attempt: ConnectAttempt, queue: DispatchQueue) {
        self.attempt = attempt
        self.queue = queue
    }

    /// Abandons the handshake: the fd is closed and the completion gets `.closed`, unless it already ran (then
    /// nothing happens; the caller owns the connection it got). Safe from any thread, any number of times.
    public func cancel() {
        queue.async { [attempt] in attempt.cancel() }
    }
}

/// One outbound connect in flight; confined to its queue. Owns the fd until it hands it to a `Connection`.
private final class ConnectAttempt: @unchecked Sendable {
    // @unchecked Sendable: created on the caller's thread, then touched only on `queue` (start() is queued).

    private let remote: SocketAddress
    private let source: SocketAddress?
    private let timeout: Duration
    private let queue: DispatchQueue
    private var completion: (@Sendable (Result<Connection, SocketError>) -> Void)?

    private var fd: Int32 = -1
    private var writeSource: DispatchSourceWrite?
    private var timer: DispatchSourceTimer?
    private var outcome: Result<Void, SocketError>?

    init(
        remote: SocketAddress, source: SocketAddress?, timeout: Duration, queue: DispatchQueue,
        completion: @escaping @Sendable (Result<Connection, SocketError>) -> Void
    ) {
        self.remote = remote
        self.source = source
        self.timeout = timeout
        self.queue = queue
        self.completion = completion
    }

    func start() {
        if let source, source.family != remote.family {
            finish(.failure(.familyMismatch(source: source, remote: remote)))
            return
        }
        do throws(SocketError) {
            fd = try makeStreamSocket(remote.family)
        } catch {
            finish(.failure(error))
            return
        }
        if let source {
            if source.port == 0 {
                // Pick the port at connect time (4-tuple aware), not at bind, so many sources don't exhaust ports.
                try? setIntOption(fd, level: Int32(IPPROTO_IP), name: IP_BIND_ADDRESS_NO_PORT, value: 1)
            }
            do throws(SocketError) {
                try bindSocket(fd, to: source)
            } catch {
                closeUnwatched()
                finish(.failure(error))
                return
            }
        }
        let result = remote.withSockAddr { pointer, length in Glibc.connect(fd, pointer, length) }
        if result == 0 {
            handOver()
            return
        }
        let code = lastErrno()
        // EINTR: the handshake goes on asynchronously, exactly like EINPROGRESS.
        guard code == EINPROGRESS || code == EINTR else {
            closeUnwatched()
            finish(.failure(.system(call: "connect", errno: code)))
            return
        }
        let writeSource = DispatchSource.makeWriteSource(fileDescriptor: fd, queue: queue)
        writeSource.setEventHandler { self.connectFinished() }
        writeSource.setCancelHandler { self.sourceCancelled() }
        self.writeSource = writeSource
        let timer = DispatchSource.makeTimerSource(queue: queue)
        timer.schedule(deadline: deadline(after: timeout))
        timer.setEventHandler { self.conclude(.failure(.timedOut)) }
        self.timer = timer
        writeSource.activate()
        timer.activate()
    }

    /// On `queue`. Queued after `start()`, so the handshake is either in flight (conclude it) or already over.
    func cancel() {
        guard writeSource != nil else { return }
        conclude(.failure(.closed))
    }

    private func connectFinished() {
        do throws(SocketError) {
            let code = try intOption(fd, level: SOL_SOCKET, name: SO_ERROR)
            conclude(code == 0 ? .success(()) : .failure(.system(call: "connect", errno: code)))
        } catch {
            conclude(.failure(error))
        }
    }

    /// Records the first outcome and cancels the sources; the fd moves on in the write source's cancel handler.
    private func conclude(_ result: Result<Void, SocketError>) {
        guard outcome == nil else { return }
        outcome = result
        timer?.cancel()
        timer = nil
        writeSource?.cancel()
    }

    private func sourceCancelled() {
        writeSource = nil
        switch outcome {
        case .success:
            handOver()
        case .failure(let error):
            _ = Glibc.close(fd)
            finish(.failure(error))
        case nil:
            _ = Glibc.close(fd)
            finish(.failure(.closed))
        }
    }

    /// Connected, and no source of ours watches the fd any more: wrap it in a Connection.
    private func handOver() {
        do throws(SocketError) {
            let local = try localAddress(of: fd)
            let peer = SocketAddress(ip: remote.ip.unmapped, port: remote.port)
            finish(.success(Connection(socket: AcceptedSocket(fd: fd, peer: peer, local: local), queue: queue)))
        } catch {
            closeUnwatched()
            finish(.failure(error))
        }
    }

    private func closeUnwatched() {
        _ = Glibc.close(fd)
        fd = -1
    }

    private func finish(_ result: Result<Connection, SocketError>) {
        guard let completion else { return }
        self.completion = nil
        completion(result)
    }
}
