import DNS
import Dispatch
import Foundation
import NetAddress
import Routing
import SMTPProtocol
import Sockets
import Synchronization

/// `dualmta check DOMAIN`: the I/O half of `Routing.DomainAudit`. Asks DNS exactly as delivery does (the same
/// `SystemResolver`, the configured `dns_servers`), then probes SMTP on every address DNS gave for the domain's MX
/// hosts — and on nothing else: connect, read the 220 banner, EHLO, QUIT, all probes in parallel on one private
/// queue, the CLI thread waiting on a semaphore. A CLI tool, not the daemon.
public enum ReadinessCheck {
    public enum Failure: Error, CustomStringConvertible {
        case badDomain(String)

        public var description: String {
            switch self {
            case .badDomain(let text): return "\"\(text)\" is not a domain (address literals have no MX to check)"
            }
        }
    }

    /// Connect and reply waits are capped: a check that hangs for `connect_timeout = 30s` per stage is no check.
    public static let timeoutCap: Duration = .seconds(5)

    /// DNS, probes, audit. `probe: false` skips the SMTP connections (DNS findings only).
    public static func run(_ target: String, configuration: Configuration, internet: Bool, probe: Bool = true)
        throws(Failure) -> DomainAuditReport
    {
        guard case .domain(let domain) = Destination(parsing: target) else { throw .badDomain(target) }
        let options = AuditOptions(
            internet: internet, acceptLoopback: configuration.allowLoopbackMX, mxPort: configuration.mxPort)
        let resolver = RouteResolver(resolver: SystemResolver(servers: configuration.dnsServers))
        let lookups = resolver.gather(.domain(domain), context: DomainAudit.gatherContext(options))
        let dnsOnly = DomainAudit.audit(domain: domain, lookups: lookups, probes: nil, options: options)
        guard probe else { return dnsOnly }
        let targets = DomainAudit.probeTargets(dnsOnly, options: options)
        let probes = probeAll(targets, configuration: configuration)
        return DomainAudit.audit(domain: domain, lookups: lookups, probes: probes, options: options)
    }

    /// What the CLI prints (text or JSON) and its exit status (0 ok, 1 warnings, 2 problems).
    public static func check(
        _ target: String, configuration: Configuration, internet: Bool, probe: Bool, json: Bool
    ) throws(Failure) -> (text: String, status: Int32) {
        let report = try run(target, configuration: configuration, internet: internet, probe: probe)
        return (json ? Self.json(report) : report.text, report.exitStatus)
    }

    /// Pretty-printed, sorted keys: the same structure as the text.
    public static func json(_ report: DomainAuditReport) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        guard let data = try? encoder.encode(report), let text = String(data: data, encoding: .utf8) else {
            return "{}\n"
        }
        return text + "\n"
    }

    /// One probe per address, all at once; families off in `inet_protocols` are skipped, not tried.
    static func probeAll(_ targets: [IPAddress], configuration: Configuration) -> [IPAddress: ProbeResult] {
        let queue = DispatchQueue(label: "dualmta.check.probes")
        let results = Mutex<[IPAddress: ProbeResult]>([:])
        let done = DispatchSemaphore(value: 0)
        let timeout = min(configuration.connectTimeout, timeoutCap)
        let replyTimeout = min(configuration.smtpReplyTimeout ?? timeoutCap, timeoutCap)
        var started = 0
        for address in targets {
            guard configuration.inetProtocols.contains(address.family) else {
                let name = address.family == .ipv6 ? "IPv6" : "IPv4"
                results.withLock {
                    $0[address] = ProbeResult(outcome: .skipped, detail: "\(name) not enabled in inet_protocols")
                }
                continue
            }
            let source = (address.family == .ipv6 ? configuration.bindAddress6 : configuration.bindAddress).map {
                SocketAddress(ip: $0, port: 0)
            }
            let probe = SMTPProbe(
                remote: SocketAddress(ip: address, port: configuration.mxPort), heloName: configuration.hostname,
                replyTimeout: replyTimeout, queue: queue
            ) { result in
                results.withLock { $0[address] = result }
                done.signal()
            }
            probe.start(source: source, connectTimeout: timeout)
            started += 1
        }
        for _ in 0..<started { done.wait() }
        return results.withLock { $0 }
    }
}

/// One SMTP probe: connect, 220 banner, EHLO, QUIT. Each stage has its own deadline; the result is handed out once.
/// Confinement: every `var` is read and written only on `queue` (a serial queue): the connect completion, the read
/// handlers and the deadline timers all run there, which is what makes `@unchecked Sendable` sound.
private final class SMTPProbe: @unchecked Sendable {
    enum Stage {
        case connecting
        case greeting
        case ehlo
        case quit
        case done
    }

    let remote: SocketAddress
    let heloName: String
    let replyTimeout: Duration
    let queue: DispatchQueue
    let completion: @Sendable (ProbeResult) -> Void
    let started = ContinuousClock.now

    var stage = Stage.connecting
    /// Bumped at every stage change: a deadline timer of an older stage does nothing.
    var generation = 0
    var parser = ReplyParser()
    var connection: Connection?
    var result = ProbeResult(outcome: .ok)

    init(
        remote: SocketAddress, heloName: String, replyTimeout: Duration, queue: DispatchQueue,
        completion: @escaping @Sendable (ProbeResult) -> Void
    ) {
        self.remote = remote
        self.heloName = heloName
        self.replyTimeout = replyTimeout
        self.queue = queue
        self.completion = completion
    }

    func start(source: SocketAddress?, connectTimeout: Duration) {
        Connection.connect(to: remote, from: source, timeout: connectTimeout, queue: queue) { outcome in
            self.connected(outcome)
        }
    }

    private func connected(_ outcome: Result<Connection, SocketError>) {
        switch outcome {
        case .failure(let error):
            finish(ProbeResult(outcome: Self.classify(error), milliseconds: elapsed(), detail: error.description))
        case .success(let connection):
            self.connection = connection
            enter(.greeting)
            connection.startReading(
                { [self] bytes in received(bytes) },
                onClose: { [self] error in closed(error) })
        }
    }

    private static func classify(_ error: SocketError) -> ProbeResult.Outcome {
        switch error {
        case .timedOut: return .timeout
        case .addressFamilyUnsupported: return .unreachable
        case .system(_, let code) where code == ECONNREFUSED: return .refused
        case .system(_, let code) where code == ETIMEDOUT: return .timeout
        default: return .unreachable
        }
    }

    private func received(_ bytes: UnsafeRawBufferPointer) {
        parser.append(bytes)
        while stage != .done {
            let reply: Reply?
            do {
                reply = try parser.nextReply()
            } catch {
                protocolFailure("invalid reply: \(error)")
                return
            }
            guard let reply else { return }
            handle(reply)
        }
    }

    private func handle(_ reply: Reply) {
        switch stage {
        case .greeting:
            result.milliseconds = elapsed()
            guard reply.code == 220 else {
                result.outcome = .rejected
                result.detail = "greeting \(reply.code) \(reply.lines.first ?? "")"
                send("QUIT", next: .quit)
                return
            }
            result.banner = reply.lines.first ?? ""
            send("EHLO \(heloName)", next: .ehlo)
        case .ehlo:
            if reply.code == 250 {
                result.ehlo = reply.lines.dropFirst().map(Self.normalizedExtension)
            } else {
                result.detail = "EHLO answered \(reply.code) \(reply.lines.first ?? "")"
            }
            send("QUIT", next: .quit)
        case .quit:
            finish(result)
        case .connecting, .done:
            break
        }
    }

    /// `size 10240000` → `SIZE 10240000`: keywords are case-insensitive, parameters are kept.
    private static func normalizedExtension(_ line: String) -> String {
        let words = line.split(separator: " ", omittingEmptySubsequences: true)
        guard let keyword = words.first else { return "" }
        return ([keyword.uppercased()] + words.dropFirst().map(String.init)).joined(separator: " ")
    }

    private func send(_ command: String, next: Stage) {
        enter(next)
        connection?.write(Array((command + "\r\n").utf8))
    }

    private func enter(_ next: Stage) {
        stage = next
        generation += 1
        let mine = generation
        queue.asyncAfter(deadline: .now() + Self.seconds(replyTimeout)) { [self] in
            guard generation == mine else { return }
            deadlinePassed()
        }
    }

    private func deadlinePassed() {
        switch stage {
        case .greeting:
            finish(
                ProbeResult(
                    outcome: .timeout, milliseconds: elapsed(), detail: "no banner within \(replyTimeout)"))
        case .ehlo:
            result.detail = "no EHLO answer within \(replyTimeout)"
            finish(result)
        case .quit:
            finish(result)
        case .connecting, .done:
            break
        }
    }

    private func closed(_ error: SocketError?) {
        switch stage {
        case .greeting:
            let why = error.map { "connection lost before the banner: \($0)" } ?? "closed before the banner"
            finish(ProbeResult(outcome: .rejected, milliseconds: elapsed(), detail: why))
        case .ehlo:
            result.detail = "closed after the banner, before answering EHLO"
            finish(result)
        case .quit:
            finish(result)
        case .connecting, .done:
            break
        }
    }

    private func protocolFailure(_ why: String) {
        if stage == .greeting {
            finish(ProbeResult(outcome: .rejected, milliseconds: elapsed(), detail: why))
        } else {
            result.detail = why
            finish(result)
        }
    }

    private func finish(_ outcome: ProbeResult) {
        guard stage != .done else { return }
        stage = .done
        generation += 1
        connection?.close(afterFlush: true, drainTimeout: .seconds(1))
        connection = nil
        completion(outcome)
    }

    private func elapsed() -> Int {
        let duration = ContinuousClock.now - started
        return Int(duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000)
    }

    private static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }
}
