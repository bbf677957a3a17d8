import Glibc
import Logging
import Sockets

/// One configured listening socket: the address as configured (port 0 stays 0) and the service it offers.
public struct ListenerKey: Hashable, Sendable, CustomStringConvertible {
    public var address: SocketAddress
    public var kind: ListenerKind

    public var description: String { "\(address) (\(kind.rawValue))" }
}

/// What a reload did to the listening sockets.
public struct ListenerChanges: Sendable {
    public var added: [ListenerKey] = []
    public var removed: [ListenerKey] = []
    /// Wanted but not bound; the reason is ready for the log.
    public var failed: [(key: ListenerKey, reason: String)] = []
}

extension ServerConfiguration {
    /// Every listening socket this configuration asks for, in start-up order.
    var listenerKeys: [ListenerKey] {
        listen.map { ListenerKey(address: $0, kind: .smtp) }
            + submissionListen.map { ListenerKey(address: $0, kind: .submission) }
            + submissionsListen.map { ListenerKey(address: $0, kind: .submissions) }
    }
}

extension SMTPServer {
    /// The listeners to close and to open for a new configuration (pure).
    static func listenerDiff(current: [ListenerKey], wanted: [ListenerKey]) -> (
        close: [ListenerKey], open: [ListenerKey]
    ) {
        let wantedSet = Set(wanted)
        let currentSet = Set(current)
        return (current.filter { !wantedSet.contains($0) }, wanted.filter { !currentSet.contains($0) })
    }

    /// Applies a reloaded configuration: new sessions get the new settings at once; listeners that are no longer
    /// configured are closed (their open sessions go on to the end), new ones are bound. A listener that cannot be
    /// bound is reported in `failed` and the rest still applies. Call it from one thread at a time.
    public func reload(_ new: ServerConfiguration) -> ListenerChanges {
        var changes = ListenerChanges()
        let (currentKeys, stopping) = state.withLock { ($0.listenerKeys, $0.stopping) }
        guard !stopping else { return changes }
        let diff = Self.listenerDiff(current: currentKeys, wanted: new.listenerKeys)
        settings.withLock { $0 = new }

        let closing: [(ListenerKey, Listener)] = state.withLock { state in
            var closing: [(ListenerKey, Listener)] = []
            for key in diff.close {
                guard let index = state.listenerKeys.firstIndex(of: key) else { continue }
                closing.append((key, state.listeners.remove(at: index)))
                state.listenerKeys.remove(at: index)
            }
            return closing
        }
        for (key, listener) in closing {
            listener.close()
            changes.removed.append(key)
            logger.info(
                "listener-closed", metadata: ["addr": "\(listener.localAddress)", "service": "\(key.kind.rawValue)"])
        }

        for key in diff.open {
            if key.kind != .smtp && (new.tlsContext == nil || new.users == nil) {
                changes.failed.append((key, "a submission listener needs a TLS certificate and submission_users_file"))
                continue
            }
            let listener: Listener
            do throws(SocketError) {
                listener = try Listener.bind(key.address)
            } catch {
                changes.failed.append((key, Self.bindFailure(key.address, error)))
                continue
            }
            state.withLock { state in
                state.listeners.append(listener)
                state.listenerKeys.append(key)
            }
            changes.added.append(key)
            logger.info(
                "listening",
                metadata: [
                    "addr": "\(listener.localAddress)", "family": "\(listener.localAddress.family)",
                    "service": "\(key.kind.rawValue)",
                ])
            let kind = key.kind
            listener.start(
                queue: acceptQueue,
                onAccept: { [self] socket in accept(socket, kind: kind) },
                onError: { [self] error in acceptFailed(error) })
        }
        for failure in changes.failed {
            logger.error("listen-failed", metadata: ["addr": "\(failure.key.address)", "reason": "\(failure.reason)"])
        }
        return changes
    }

    /// Why a reload could not bind: after the start-up privilege drop, ports below 1024 need a restart.
    static func bindFailure(_ address: SocketAddress, _ error: SocketError, effectiveUser: uid_t = geteuid())
        -> String
    {
        if error.errnoCode == EACCES && address.port < 1024 && effectiveUser != 0 {
            return "\(error): ports below 1024 need root, and the daemon no longer runs as root after start-up; "
                + "restart it to listen on \(address)"
        }
        return "\(error)"
    }
}
