// Sockets: non-blocking TCP for both address families on Glibc + Dispatch.
//
// - `SocketAddress` is an IP address and a port; IPv4 peers seen on an IPv6 socket as `::ffff:a.b.c.d` are
//   stored unmapped so logs and ACLs see a dotted quad.
// - `Listener` binds one address (IPv6 sockets always with IPV6_V6ONLY, so `[::]:N` and `0.0.0.0:N` are two
//   sockets that coexist) and accepts on a DispatchSource read source, backing off on EMFILE and friends.
// - `Connection` owns one connected fd with separate read and write sources; writes are queued and survive
//   EAGAIN and partial writes.
//
// Fd ownership rule: once a DispatchSource watches an fd, only the last cancel handler of the
// sources on that fd closes it. An fd that no source ever watched is closed directly.
// Leaves don't log: errors are typed `SocketError` values and the callers log them.

import Dispatch
import Glibc
import NetAddress

/// Linux socket flags, imported from Glibc as enum cases or macros; spelled once here.
enum SocketFlags {
    static let stream = Int32(SOCK_STREAM.rawValue)
    static let nonBlockingCloexec = Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
    static let noSignal = Int32(MSG_NOSIGNAL)
    static let peekNoWait = Int32(MSG_PEEK) | Int32(MSG_DONTWAIT)
}

/// accept4(2) is declared by glibc only under _GNU_SOURCE, which Swift's Glibc module does not define, so it is
/// looked up once at run time (it is in every glibc since 2.10). It sets O_NONBLOCK and FD_CLOEXEC atomically.
typealias Accept4Function =
    @convention(c) (
        Int32, UnsafeMutablePointer<sockaddr>?, UnsafeMutablePointer<socklen_t>?, Int32
    ) -> Int32

let accept4Function: Accept4Function? = {
    guard let handle = dlopen(nil, RTLD_NOW), let symbol = dlsym(handle, "accept4") else { return nil }
    return unsafeBitCast(symbol, to: Accept4Function.self)
}()

/// Accepts one connection as a non-blocking, close-on-exec fd; -1 with errno set on failure.
func acceptNonBlocking(
    _ fd: Int32, _ address: UnsafeMutablePointer<sockaddr>, _ length: UnsafeMutablePointer<socklen_t>
) -> Int32 {
    if let accept4Function { return accept4Function(fd, address, length, SocketFlags.nonBlockingCloexec) }
    // Fallback without accept4: same result in three calls (the CLOEXEC gap only matters if we ever exec).
    let newFD = accept(fd, address, length)
    if newFD < 0 { return newFD }
    _ = fcntl(newFD, F_SETFD, FD_CLOEXEC)
    _ = fcntl(newFD, F_SETFL, fcntl(newFD, F_GETFL) | O_NONBLOCK)
    return newFD
}

/// Reads the thread's errno; a function so call sites read `lastErrno()` right after the failing call.
@inline(__always)
func lastErrno() -> Int32 { errno }

/// Sets an integer socket option.
func setIntOption(_ fd: Int32, level: Int32, name: Int32, value: Int32) throws(SocketError) {
    var value = value
    let result = setsockopt(fd, level, name, &value, socklen_t(MemoryLayout<Int32>.size))
    if result != 0 { throw .system(call: "setsockopt", errno: lastErrno()) }
}

/// Reads an integer socket option (used for SO_ERROR after a non-blocking connect).
func intOption(_ fd: Int32, level: Int32, name: Int32) throws(SocketError) -> Int32 {
    var value: Int32 = 0
    var length = socklen_t(MemoryLayout<Int32>.size)
    if getsockopt(fd, level, name, &value, &length) != 0 { throw .system(call: "getsockopt", errno: lastErrno()) }
    return value
}

/// The local address of a socket (getsockname), with the kernel-chosen port resolved.
func localAddress(of fd: Int32) throws(SocketError) -> SocketAddress {
    var storage = sockaddr_storage()
    var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
    let result = withUnsafeMutablePointer(to: &storage) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    if result != 0 { throw .system(call: "getsockname", errno: lastErrno()) }
    guard let address = SocketAddress(storage: storage) else { throw .addressFamilyUnsupported }
    return address
}

/// Creates a non-blocking, close-on-exec TCP socket for `family`.
func makeStreamSocket(_ family: AddressFamily) throws(SocketError) -> Int32 {
    let domain = family == .ipv4 ? AF_INET : AF_INET6
    let fd = socket(domain, SocketFlags.stream | SocketFlags.nonBlockingCloexec, 0)
    if fd < 0 {
        let code = lastErrno()
        // IPv6 (or IPv4) disabled in the kernel: callers warn and run with the other family.
        if code == EAFNOSUPPORT { throw .addressFamilyUnsupported }
        throw .system(call: "socket", errno: code)
    }
    return fd
}

/// Binds `fd` to `address`.
func bindSocket(_ fd: Int32, to address: SocketAddress) throws(SocketError) {
    let result = address.withSockAddr { pointer, length in Glibc.bind(fd, pointer, length) }
    if result != 0 { throw .system(call: "bind", errno: lastErrno()) }
}

/// Converts a Swift `Duration` to a Dispatch deadline from now, clamping negative and huge values.
public func deadline(after duration: Duration) -> DispatchTime {
    let (seconds, attoseconds) = duration.components
    if seconds < 0 { return .now() }
    // A year is "forever" for a socket timeout and keeps the nanosecond arithmetic far from overflow.
    if seconds > 365 * 24 * 3600 { return .distantFuture }
    let nanoseconds = Int(seconds) * 1_000_000_000 + Int(attoseconds / 1_000_000_000)
    return .now() + .nanoseconds(nanoseconds)
}

/// A minimal mutex (no Foundation): guards state touched from more than one thread.
final class Lock: @unchecked Sendable {
    // Sendable because the pthread mutex itself is the synchronisation; the pointer never changes.
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>

    init() {
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    func withLock<R>(_ body: () throws -> R) rethrows -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }
}
