import Dispatch
import Faults
import Glibc
import Metrics
import NetAddress
import Routing
import SMTPProtocol
import Sockets
import Spool

/// Failures on purpose on the sending side. At connect, a rule replaces the connect itself (before any packet) with
/// what the kernel would have reported: ECONNREFUSED, EHOSTUNREACH, or silence until `connect_timeout`; or it
/// waits first. Later, a rule replaces the peer's reply (the client session takes it as real), drops the
/// connection, or fails the TLS handshake. The results go through the same judgement, log lines, transport cache,
/// retries and reports as real ones; the delivery line carries `fault=F<n>`.
enum ConnectInjection: Sendable, Equatable {
    case fail(errno: Int32)
    case blackhole
    case delay(milliseconds: Int64)
}

/// A connect rule that fired for one attempt.
struct ConnectFault: Sendable, Equatable {
    var id: String
    var injection: ConnectInjection
}

extension AttemptMaker {
    /// What the rules know about an attempt.
    static func faultContext(_ attempt: PlannedAttempt, sender: String, recipients: [String]) -> FaultContext {
        FaultContext(
            family: attempt.family, mx: attempt.mxHost, addr: attempt.address, port: Int(attempt.port),
            from: sender, recipients: recipients)
    }

    /// The connect rule for this attempt, if one fires (counted and logged with the attempt).
    func connectFault(_ attempt: PlannedAttempt, sender: String, recipients: [String]) -> ConnectFault? {
        guard let book = configuration.faults, !book.isEmpty,
            let hit = book.evaluate(
                side: .outbound, stage: .connect, Self.faultContext(attempt, sender: sender, recipients: recipients))
        else { return nil }
        OutboundFaults.count(hit, family: attempt.family)
        switch hit.action {
        case .refuse: return ConnectFault(id: hit.id, injection: .fail(errno: ECONNREFUSED))
        case .unreachable: return ConnectFault(id: hit.id, injection: .fail(errno: EHOSTUNREACH))
        case .blackhole: return ConnectFault(id: hit.id, injection: .blackhole)
        case .delay(let milliseconds): return ConnectFault(id: hit.id, injection: .delay(milliseconds: milliseconds))
        default: return nil  // the parser allows no other action at outbound connect
        }
    }

    /// The hook the client session consults for each reply; nil without rules.
    func sessionFaults(_ attempt: PlannedAttempt, sender: String, recipients: [String]) -> OutboundFaults? {
        guard let book = configuration.faults, !book.isEmpty else { return nil }
        return OutboundFaults(
            book: book, context: Self.faultContext(attempt, sender: sender, recipients: recipients))
    }
}

/// The rules for one attempt's session, and which of them fired (for the delivery line). Used on the attempt's
/// queue only; the lock makes it safe to read the result from the completion.
final class OutboundFaults: @unchecked Sendable {
    // @unchecked Sendable: `fired` and `failHandshake` are written on the connection's queue while the session
    // runs and read there when it ends (the completion), never concurrently.
    let book: FaultBook
    let context: FaultContext
    private(set) var fired: String?
    /// A tls-fail rule fired on the STARTTLS reply: the handshake that follows is to fail.
    private(set) var failHandshake = false

    init(book: FaultBook, context: FaultContext) {
        self.book = book
        self.context = context
    }

    static func count(_ hit: FaultHit, family: AddressFamily) {
        DualMTAMetrics.registry.increment(
            DualMTAMetrics.faults, ["side": "outbound", "stage": hit.stage.rawValue, "family": family.rawValue])
    }

    var hook: ClientFaultHook {
        { @Sendable [self] stage, recipient in
            guard let faultStage = FaultStage(rawValue: stage.rawValue) else { return nil }
            var context = self.context
            if let recipient { context.recipients = [recipient] }
            guard let hit = book.evaluate(side: .outbound, stage: faultStage, context) else { return nil }
            Self.count(hit, family: context.family)
            fired = hit.id
            switch hit.action {
            case .reply(let reply):
                return .reply(Reply(reply.code, reply.status.map { EnhancedStatus($0.0, $0.1, $0.2) }, reply.text))
            case .drop:
                return .drop
            case .tlsFail:
                failHandshake = true
                return nil
            default:
                return nil
            }
        }
    }
}

/// A connect that may be a rule's stand-in: the same completion values (`.system(call: "connect", errno:)`,
/// `.timedOut`, `.closed` on cancel) as `Connection.connect`, on the same queue.
final class FaultableConnect: @unchecked Sendable {
    // @unchecked Sendable: every mutable property is touched only on `queue`.
    private let queue: DispatchQueue
    private var completion: (@Sendable (Result<Connection, SocketError>) -> Void)?
    private var real: PendingConnect?
    private var timer: DispatchSourceTimer?

    private init(queue: DispatchQueue, completion: @escaping @Sendable (Result<Connection, SocketError>) -> Void) {
        self.queue = queue
        self.completion = completion
    }

    static func connect(
        to remote: SocketAddress, from source: SocketAddress?, timeout: Duration, queue: DispatchQueue,
        fault: ConnectInjection?, completion: @escaping @Sendable (Result<Connection, SocketError>) -> Void
    ) -> FaultableConnect {
        let handle = FaultableConnect(queue: queue, completion: completion)
        queue.async {
            switch fault {
            case nil:
                handle.startReal(remote, source, timeout)
            case .fail(let code):
                handle.end(.failure(.system(call: "connect", errno: code)))
            case .blackhole:
                handle.after(timeout) { handle.end(.failure(.timedOut)) }
            case .delay(let milliseconds):
                handle.after(.milliseconds(milliseconds)) { handle.startReal(remote, source, timeout) }
            }
        }
        return handle
    }

    /// Abandons the attempt: the completion gets `.closed` unless it already ran. Safe from any thread.
    func cancel() {
        queue.async { [self] in
            if let real { return real.cancel() }
            end(.failure(.closed))
        }
    }

    private func startReal(_ remote: SocketAddress, _ source: SocketAddress?, _ timeout: Duration) {
        timer = nil
        guard completion != nil else { return }
        real = Connection.connect(to: remote, from: source, timeout: timeout, queue: queue) { [self] result in
            end(result)
        }
    }

    private func after(_ wait: Duration, _ body: @escaping @Sendable () -> Void) {
        let timer = DispatchSource.makeTimerSource(queue: queue)
        timer.schedule(deadline: .now() + wait.faultInterval)
        timer.setEventHandler(handler: body)
        self.timer = timer
        timer.activate()
    }

    private func end(_ result: Result<Connection, SocketError>) {
        timer?.cancel()
        timer = nil
        guard let completion else {
            if case .success(let connection) = result { connection.close(afterFlush: false) }
            return
        }
        self.completion = nil
        completion(result)
    }
}

extension Duration {
    fileprivate var faultInterval: DispatchTimeInterval {
        let (seconds, attoseconds) = components
        return .nanoseconds(Int(seconds) * 1_000_000_000 + Int(attoseconds / 1_000_000_000))
    }
}
