import Dispatch
import Glibc
import NetAddress

/// A freshly accepted connection: a non-blocking, close-on-exec fd that nothing watches yet.
///
/// The receiver owns the fd: wrap it in a `Connection` (which then owns it) or call `close()`.
public struct AcceptedSocket: Sendable {
    public let fd: Int32
    public let peer: SocketAddress
    public let local: SocketAddress

    public init(fd: Int32, peer: SocketAddress, local: SocketAddress) {
        self.fd = fd
        self.peer = peer
        self.local = local
    }

    /// Closes an accepted socket that will not become a `Connection` (no source watches it yet).
    public func close() {
        _ = Glibc.close(fd)
    }
}

/// A listening TCP socket on one address, accepting on a Dispatch read source.
///
/// Lifetime: a started listener runs until `close()` (its source holds it); the fd is closed by the source's
/// cancel handler. A listener that was never started is closed by `close()` or when it is released.
public final class Listener: @unchecked Sendable {
    // Confinement: `fd` and `localAddress` are immutable. `started`/`closed` are guarded by `lock` (start and
    // close may come from any thread). `source`, `suspended` and `stopped` are touched only on `queue` once
    // `start` has published them under the lock.

    /// Pause after EMFILE/ENFILE/ENOBUFS/ENOMEM before accepting again. A level-triggered read source would
    /// otherwise fire again at once while the backlog is non-empty and spin at 100 % CPU.
    /// `Tests/Integration/test_floods.py` checks this under a low fd limit.
    public static let acceptRetryDelay: Duration = .milliseconds(100)

    public let localAddress: SocketAddress
    let fd: Int32

    private let lock = Lock()
    private var started = false
    private var closed = false

    private var queue: DispatchQueue?
    private var source: DispatchSourceRead?
    private var suspended = false
    private var stopped = false
    private var onAccept: (@Sendable (AcceptedSocket) -> Void)?
    private var onError: (@Sendable (SocketError) -> Void)?
    /// How often the read source fired (on `queue`); tests use it to prove there is no busy loop.
    private(set) var wakeups = 0

    private init(fd: Int32, localAddress: SocketAddress) {
        self.fd = fd
        self.localAddress = localAddress
    }

    deinit {
        // Reached only if the source never existed (a started listener is kept alive by its source).
        let needsClose = lock.withLock { !started && !closed }
        if needsClose { _ = Glibc.close(fd) }
    }

    /// Creates a listening socket: socket(), SO_REUSEADDR (never SO_REUSEPORT: a second instance would share
    /// the port silently), IPV6_V6ONLY=1 on IPv6 sockets before bind (so `[::]:N` and `0.0.0.0:N` coexist
    /// whatever `net.ipv6.bindv6only` says), O_NONBLOCK, FD_CLOEXEC, bind, listen.
    ///
    /// - Parameters:
    ///   - address: the address to bind; port 0 lets the kernel choose (read it back from `localAddress`).
    ///   - backlog: the listen() backlog (the kernel caps it at net.core.somaxconn).
    /// - Throws: `.addressFamilyUnsupported` if the kernel lacks the family, else `.system(call:errno:)` naming
    ///   the failing call, e.g. `.system(call: "bind", errno: EADDRINUSE)`.
    public static func bind(_ address: SocketAddress, backlog: Int32 = 1024) throws(SocketError) -> Listener {
        let fd = try makeStreamSocket(address.family)
        do throws(SocketError) {
            try setIntOption(fd, level: SOL_SOCKET, name: SO_REUSEADDR, value: 1)
            if address.family == .ipv6 {
                try setIntOption(fd, level: Int32(IPPROTO_IPV6), name: IPV6_V6ONLY, value: 1)
            }
            try bindSocket(fd, to: address)
            if Glibc.listen(fd, backlog) != 0 { throw SocketError.system(call: "listen", errno: lastErrno()) }
            let local = try Sockets.localAddress(of: fd)
            return Listener(fd: fd, localAddress: local)
        } catch {
            // No source watches this fd yet, so closing it here is the only way.
            _ = Glibc.close(fd)
            throw error
        }
    }

    /// Starts accepting on `queue`. Each readiness event accepts in a loop until EAGAIN; every accepted fd is
    /// non-blocking and close-on-exec and handed to `onAccept` (which owns it from then on).
    ///
    /// On EMFILE/ENFILE/ENOBUFS/ENOMEM (and unexpected errors) the source is suspended, `onError` is called
    /// (the caller logs, rate-limited), and accepting resumes after `acceptRetryDelay`. Per-connection errors
    /// (ECONNABORTED, EPROTO, network errors Linux passes up from accept) are skipped silently.
    /// Calling `start` twice, or after `close`, does nothing.
    public func start(
        queue: DispatchQueue, onAccept: @escaping @Sendable (AcceptedSocket) -> Void,
        onError: @escaping @Sendable (SocketError) -> Void
    ) {
        lock.withLock {
            guard !started, !closed else { return }
            started = true
            self.queue = queue
            self.onAccept = onAccept
            self.onError = onError
            let source = DispatchSource.makeReadSource(fileDescriptor: fd, queue: queue)
            let fd = self.fd
            // The handler holds `self` on purpose: the listener lives until close() cancels the source.
            source.setEventHandler { self.acceptPending() }
            source.setCancelHandler {
                _ = Glibc.close(fd)
                self.source = nil
                self.onAccept = nil
                self.onError = nil
            }
            self.source = source
            source.activate()
        }
    }

    /// Stops accepting and closes the socket (in the source's cancel handler if started). Idempotent, any thread.
    public func close() {
        let queueToUse: DispatchQueue? = lock.withLock {
            guard !closed else { return nil }
            closed = true
            if !started {
                _ = Glibc.close(fd)
                return nil
            }
            return queue
        }
        queueToUse?.async { self.stopOnQueue() }
    }

    /// True once `close()` was called.
    public var isClosed: Bool { lock.withLock { closed } }

    // MARK: - On `queue`

    private func stopOnQueue() {
        guard !stopped, let source else { return }
        stopped = true
        source.cancel()
        // A suspended source never runs its cancel handler: resume it after cancel so no event is delivered.
        if suspended {
            suspended = false
            source.resume()
        }
    }

    private func acceptPending() {
        wakeups += 1
        while !stopped {
            if lock.withLock({ closed }) { return }
            var storage = sockaddr_storage()
            var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let newFD = withUnsafeMutablePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    acceptNonBlocking(fd, $0, &length)
                }
            }
            if newFD >= 0 {
                guard let peer = SocketAddress(storage: storage), let local = try? Sockets.localAddress(of: newFD)
                else {
                    _ = Glibc.close(newFD)
                    continue
                }
                onAccept?(AcceptedSocket(fd: newFD, peer: peer, local: local))
                continue
            }
            let code = lastErrno()
            switch code {
            case EAGAIN, EWOULDBLOCK:
                return
            case EINTR, ECONNABORTED, EPROTO, ENETDOWN, ENOPROTOOPT, EHOSTDOWN, ENONET, EHOSTUNREACH, EOPNOTSUPP,
                ENETUNREACH, EPERM:
                // accept(2): these belong to the connection just taken off the queue; try the next one.
                continue
            default:
                // EMFILE/ENFILE/ENOBUFS/ENOMEM or anything unexpected: back off instead of spinning.
                backOff()
                onError?(.system(call: "accept", errno: code))
                return
            }
        }
    }

    private func backOff() {
        guard let source, let queue, !suspended else { return }
        suspended = true
        source.suspend()
        queue.asyncAfter(deadline: deadline(after: Self.acceptRetryDelay)) {
            guard !self.stopped, self.suspended, let source = self.source else { return }
            self.suspended = false
            source.resume()
        }
    }
}
