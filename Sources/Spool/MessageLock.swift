import Dispatch
import Glibc
import Synchronization

/// The message lock: `flock(LOCK_EX)` on `queue/<id>.msg`, the one queue file that is never renamed while the
/// message is queued. A delivery run holds it from its first read of the envelope to its last write, and every
/// queue command (`hold`, `bounce`, `delete`, ...) holds it around its read-modify-write, so neither overwrites the
/// other. Closing the descriptor (`release`, or the object going away) releases it; so does the process dying.
public final class MessageLock: Sendable {
    private let descriptor: Mutex<Int32>

    init(descriptor: Int32) {
        self.descriptor = Mutex(descriptor)
    }

    public func release() {
        descriptor.withLock { fd in
            if fd >= 0 { close(fd) }
            fd = -1
        }
    }

    deinit { release() }
}

extension Spool {
    /// Takes the lock of a queued message, waiting as long as another holder keeps it (delivery runs: a queue
    /// command holds it for milliseconds). `.notFound` when the message is gone.
    public func lockMessage(_ id: QueueID) throws(SpoolError) -> MessageLock {
        let fd = try openForLock(id)
        while flock(fd, LOCK_EX) != 0 {
            guard errno == EINTR else {
                let code = errno
                close(fd)
                throw .io(operation: "flock", path: messagePath(id), errno: code)
            }
        }
        return MessageLock(descriptor: fd)
    }

    /// Takes the lock, waiting at most `timeout` for a delivery run that holds it (queue commands). The wait is a
    /// blocking `flock` on a second descriptor of the same open file, in a helper thread: no polling. If the time
    /// runs out first, the helper closes its descriptor as soon as its `flock` returns, which drops the late lock.
    public func lockMessage(_ id: QueueID, waitingAtMost timeout: Duration) throws(SpoolError) -> MessageLock {
        let fd = try openForLock(id)
        if flock(fd, LOCK_EX | LOCK_NB) == 0 { return MessageLock(descriptor: fd) }
        guard errno == EWOULDBLOCK || errno == EINTR else {
            let code = errno
            close(fd)
            throw .io(operation: "flock", path: messagePath(id), errno: code)
        }
        let helperFD = dup(fd)
        guard helperFD >= 0 else {
            let code = errno
            close(fd)
            throw .io(operation: "dup", path: messagePath(id), errno: code)
        }
        let wait = LockWait()
        let done = DispatchSemaphore(value: 0)
        DispatchQueue.global(qos: .utility).async {
            var result: Int32
            repeat { result = flock(helperFD, LOCK_EX) } while result != 0 && errno == EINTR
            let failure = result == 0 ? 0 : errno
            // The lock belongs to the open file, which `fd` still refers to unless the waiter gave up.
            wait.finish(errno: failure)
            close(helperFD)
            done.signal()
        }
        let (seconds, attoseconds) = timeout.components
        let deadline =
            DispatchTime.now() + .nanoseconds(Int(seconds) * 1_000_000_000 + Int(attoseconds / 1_000_000_000))
        _ = done.wait(timeout: deadline)
        switch wait.giveUpUnlessFinished() {
        case .acquired:
            return MessageLock(descriptor: fd)
        case .failed(let code):
            close(fd)
            throw .io(operation: "flock", path: messagePath(id), errno: code)
        case .abandoned:
            close(fd)
            throw .io(operation: "flock", path: messagePath(id), errno: ETIMEDOUT)
        }
    }

    private func openForLock(_ id: QueueID) throws(SpoolError) -> Int32 {
        let path = messagePath(id)
        let fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else {
            if errno == ENOENT { throw .notFound(id) }
            throw .io(operation: "open", path: path, errno: errno)
        }
        return fd
    }
}

/// The hand-over between a lock waiter and its helper thread: whichever comes second sees what the first did.
private final class LockWait: Sendable {
    enum State {
        case waiting
        case finished(errno: Int32)
        case abandoned
    }
    enum Result {
        case acquired
        case failed(Int32)
        case abandoned
    }
    private let state = Mutex(State.waiting)

    func finish(errno code: Int32) {
        state.withLock { state in
            if case .waiting = state { state = .finished(errno: code) }
        }
    }

    func giveUpUnlessFinished() -> Result {
        state.withLock { state in
            switch state {
            case .finished(let code): return code == 0 ? .acquired : .failed(code)
            case .waiting, .abandoned:
                state = .abandoned
                return .abandoned
            }
        }
    }
}
