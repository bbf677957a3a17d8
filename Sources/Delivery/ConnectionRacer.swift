import Dispatch
import Routing
import Sockets

/// Happy Eyeballs at the connection level (RFC 8305 §5): connects to the candidates of one MX
/// preference level in the given order, starting the next one when the previous has not connected after `delay`
/// or at once when an attempt fails, keeping the earlier attempts running. The first TCP connection that completes
/// wins; every other attempt still in progress is cancelled (closed) and reported `lost`. The winning `Connection`
/// is handed to the caller, which runs the SMTP session on it (`RemoteDelivery.deliver(over:)`).
final class ConnectionRacer: @unchecked Sendable {
    // @unchecked Sendable — confinement invariant: created on the caller's thread, then every mutable property is
    // touched only on `queue` (start() is queued there; the connect completions and the delay timer run there).

    struct Candidate: Sendable {
        var attempt: PlannedAttempt
        /// `bind_address` / `bind_address6` for the attempt's family, or nil.
        var source: SocketAddress?
        /// A lab fault rule that replaces this connect.
        var fault: ConnectFault? = nil

        var remote: SocketAddress { SocketAddress(ip: attempt.address, port: attempt.port) }
    }

    enum AttemptResult: Sendable, Equatable {
        case won
        case lost
        case failed(SocketError)

        var label: String {
            switch self {
            case .won: return "won"
            case .lost: return "lost"
            case .failed: return "failed"
            }
        }
    }

    /// One started attempt and how it ended.
    struct Report: Sendable {
        /// Position in the candidate list.
        var index: Int
        var result: AttemptResult
        /// From its start to its end (the connect, the failure, or the cancel).
        var milliseconds: Int
    }

    struct Outcome: Sendable {
        /// Every started attempt, in start order. Candidates after the winner that never started are not listed.
        var reports: [Report]
        var winner: (index: Int, connection: Connection)?
    }

    private let candidates: [Candidate]
    private let delay: Duration
    private let timeout: Duration
    private let queue: DispatchQueue
    private var completion: (@Sendable (Outcome) -> Void)?

    private var next = 0
    private var startOrder: [Int] = []
    private var startTimes: [Int: ContinuousClock.Instant] = [:]
    private var pending: [Int: FaultableConnect] = [:]
    private var results: [Int: (AttemptResult, Int)] = [:]
    private var winner: (index: Int, connection: Connection)?
    private var timer: DispatchSourceTimer?
    private var timerGeneration = 0

    private init(
        candidates: [Candidate], delay: Duration, timeout: Duration, queue: DispatchQueue,
        completion: @escaping @Sendable (Outcome) -> Void
    ) {
        self.candidates = candidates
        self.delay = delay
        self.timeout = timeout
        self.queue = queue
        self.completion = completion
    }

    /// Races `candidates` (already in Happy Eyeballs order). `completion` runs once, on `queue` (a serial queue that
    /// also becomes the winning connection's queue), as soon as one connection won or every attempt failed.
    static func race(
        _ candidates: [Candidate], delay: Duration, connectTimeout: Duration, queue: DispatchQueue,
        completion: @escaping @Sendable (Outcome) -> Void
    ) {
        let racer = ConnectionRacer(
            candidates: candidates, delay: delay, timeout: connectTimeout, queue: queue, completion: completion)
        queue.async { racer.startNext() }
    }

    /// On `queue`.
    private func startNext() {
        guard winner == nil, completion != nil else { return }
        guard next < candidates.count else {
            if pending.isEmpty { finish() }
            return
        }
        let index = next
        next += 1
        startOrder.append(index)
        startTimes[index] = .now
        let candidate = candidates[index]
        pending[index] = FaultableConnect.connect(
            to: candidate.remote, from: candidate.source, timeout: timeout, queue: queue,
            fault: candidate.fault?.injection
        ) { result in
            self.ended(index, result)
        }
        armTimer()
    }

    /// The Connection Attempt Delay restarts with every start: the next one begins `delay` after the latest.
    private func armTimer() {
        timer?.cancel()
        timer = nil
        guard next < candidates.count else { return }
        timerGeneration += 1
        let generation = timerGeneration
        let timer = DispatchSource.makeTimerSource(queue: queue)
        let (seconds, attoseconds) = delay.components
        let nanoseconds = Int(seconds) * 1_000_000_000 + Int(attoseconds / 1_000_000_000)
        timer.schedule(deadline: .now() + .nanoseconds(nanoseconds))
        timer.setEventHandler { [weak self] in
            guard let self, generation == self.timerGeneration else { return }
            self.startNext()
        }
        self.timer = timer
        timer.activate()
    }

    private func ended(_ index: Int, _ result: Result<Connection, SocketError>) {
        let connect = pending.removeValue(forKey: index)
        guard winner == nil, completion != nil else {
            // A loser that connected in the same instant as the winner, or after its cancel was queued: close it.
            if case .success(let connection) = result { connection.close(afterFlush: false) }
            _ = connect
            return
        }
        let elapsed = milliseconds(since: startTimes[index] ?? .now)
        switch result {
        case .failure(let error):
            results[index] = (.failed(error), elapsed)
            // A failed attempt starts the next one at once (RFC 8305 §5).
            startNext()
        case .success(let connection):
            results[index] = (.won, elapsed)
            winner = (index, connection)
            timer?.cancel()
            timer = nil
            timerGeneration += 1
            for (other, handle) in pending {
                handle.cancel()
                results[other] = (.lost, milliseconds(since: startTimes[other] ?? .now))
            }
            pending.removeAll()
            finish()
        }
    }

    private func finish() {
        guard let completion else { return }
        self.completion = nil
        timer?.cancel()
        timer = nil
        let reports = startOrder.compactMap { index in
            results[index].map { Report(index: index, result: $0.0, milliseconds: $0.1) }
        }
        completion(Outcome(reports: reports, winner: winner))
    }

    private func milliseconds(since start: ContinuousClock.Instant) -> Int {
        let (seconds, attoseconds) = (ContinuousClock.now - start).components
        return Int(seconds) * 1000 + Int(attoseconds / 1_000_000_000_000_000)
    }
}
