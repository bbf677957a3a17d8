import Console
import Delivery
import Dispatch
import Faults
import Foundation
import Logging
import Metrics
import NetAddress
import SMTPProtocol
import SMTPServer
import Sockets
import Spool
import Synchronization

/// The running MTA: spool recovery, the SMTP listeners and the queue runner, wired together, plus the signal
/// handling (SIGTERM/SIGINT: stop accepting, let commits in progress finish, exit; SIGHUP: reload, Reload.swift).
public final class MTAService: Sendable {
    public let configuration: Configuration
    let logger: Logger
    let spool: Spool
    let server: SMTPServer
    let runner: QueueRunner
    /// The control socket (`dualmta queue flush`, `dualmta send`); set by start(), cleared by stop().
    let controlChannel = Mutex<ControlChannel?>(nil)
    /// The web console (`http_listen`, also `/metrics`), when bound; set by start(), cleared by stop().
    let console = Mutex<HTTPServer?>(nil)
    /// The start-up self-check's findings, for the console's overview; nil until it has run.
    let selfCheckReport = Mutex<SelfCheck.Report?>(nil)
    /// The settings in force: `configuration` until a SIGHUP reload replaces them.
    let live: Mutex<Configuration>
    /// The fault rules in force: the config's `fault =` lines and those added with `dualmta fault add`.
    let faults = FaultBook()

    public init(configuration: Configuration, logger: Logger) throws(StartupError) {
        self.configuration = configuration
        self.live = Mutex(configuration)
        self.logger = logger
        do throws(SpoolError) {
            spool = try Spool(directory: configuration.spoolDirectory)
        } catch {
            throw .spool(error)
        }
        // The same wiring a SIGHUP reload builds again from the new config (Reload.swift).
        let wiring = try Self.wiring(configuration, spool: spool, faults: faults, logger: logger)
        faults.replaceConfigured(configuration.faultRules)
        let runner = QueueRunner(spool: spool, configuration: wiring.delivery, logger: logger)
        self.runner = runner
        server = SMTPServer(
            configuration: wiring.server, spool: spool, logger: logger, onQueued: { id in runner.wake(id) })
    }

    /// The relay-control policy: local domains (hostname always), our own addresses, the recipient lists.
    static func recipientPolicy(_ configuration: Configuration) -> RecipientPolicy {
        var own = LocalAddresses.interfaceAddresses()
        for address in configuration.listen where address.ip.addressClass != .unspecified { own.insert(address.ip) }
        return RecipientPolicy(
            hostname: configuration.hostname, localDomains: Set(configuration.allLocalDomains), ownAddresses: own,
            localRecipients: configuration.localRecipients.map(Set.init),
            relayDomains: Set(configuration.relayDomains.map { $0.lowercased() }),
            relayRecipients: configuration.relayRecipients.map(Set.init))
    }

    static func serverConfiguration(_ configuration: Configuration, policy: RecipientPolicy) -> ServerConfiguration {
        var session = ServerSession.Configuration(
            hostname: configuration.hostname, maxMessageSize: configuration.messageSizeLimit, policy: policy)
        session.maxRecipients = configuration.recipientLimit
        var server = ServerConfiguration(
            listen: configuration.listen, session: session, relayNetworks: configuration.relayNetworks,
            maxConnections: configuration.maxConnections,
            maxConnectionsPerClient: configuration.maxConnectionsPerClient,
            commandTimeout: configuration.commandTimeout)
        server.holdIncoming = configuration.holdIncoming
        return server
    }

    /// Recovers the spool, binds the listeners, starts the queue runner. Throws before anything listens if the
    /// spool cannot be used or an address cannot be bound.
    public func start() throws(StartupError) {
        // With run_as_user the spool is recovered as its owner, only binding keeps root, and then root is dropped for
        // good, before the first delivery or control command runs.
        try PrivilegeDrop.run(
            user: configuration.runAsUser, spoolDirectory: spool.directory,
            usersFile: configuration.submissionUsersFile, logger: logger,
            asSpoolOwner: { () throws(StartupError) in try recoverSpool() },
            asRoot: { () throws(StartupError) in try bindListeners() })
        runner.start()
        startControlChannel()
        // The self-check asks DNS about our own name: off the start path, but at start (its lines follow `ready`).
        DispatchQueue.global(qos: .utility).async { [self] in
            let report = SelfCheck.run(configuration)
            SelfCheck.log(report, logger: logger)
            selfCheckReport.withLock { $0 = report }
        }
        logger.info(
            "ready",
            metadata: [
                "hostname": "\(configuration.hostname)", "spool": "\(spool.directory)",
                "local_domains": "\(configuration.allLocalDomains.joined(separator: ","))",
            ])
    }

    /// Start-up recovery of the spool (see `Spool.recover`), logged.
    private func recoverSpool() throws(StartupError) {
        do throws(SpoolError) {
            let report = try spool.recover()
            logger.info(
                "spool-recovered",
                metadata: [
                    "spool": "\(spool.directory)", "queued": "\(report.valid.count)",
                    "removed_incoming": "\(report.removedIncoming.count)",
                    "removed_uncommitted": "\(report.removedUncommitted.count)",
                    "quarantined": "\(report.quarantined.count)", "busy": "\(report.busy.count)",
                ])
            for item in report.quarantined {
                logger.warning("quarantined", metadata: ["file": "\(item.name)", "reason": "\(item.reason)"])
            }
            for problem in report.problems {
                logger.warning("spool-recovery-problem", metadata: ["reason": "\(problem)"])
            }
            // Before any delivery runs: copies left in a Maildir tmp/ by a crash (never visible to readers).
            let now = Int64(Date().timeIntervalSince1970)
            for path in MaildirWriter(root: spool.mailboxDirectory).removeStaleTemporaryFiles(now: now) {
                logger.notice("maildir-tmp-removed", metadata: ["file": "\(path)"])
            }
        } catch {
            throw .spool(error)
        }
    }

    /// The SMTP listeners and the metrics listener.
    private func bindListeners() throws(StartupError) {
        do throws(ServerError) {
            try server.start()
        } catch {
            throw .server(error)
        }
        try startConsole()
    }

    /// Serves the web console, its JSON API and `/metrics` on `http_listen`. A configured address that cannot be
    /// bound stops the start; the default one (127.0.0.1:8025) is a convenience, so when its port is taken the
    /// daemon says so and runs without the console.
    func startConsole() throws(StartupError) {
        guard let address = configuration.httpListen else { return }
        let site = ConsoleSite(
            source: ConsoleData(
                configuration: configuration, spool: spool, faultBook: faults,
                selfCheckReport: { [weak self] in self?.selfCheckReport.withLock { $0 } ?? nil },
                connectionCache: { [runner] in runner.connectionCache }))
        do throws(SocketError) {
            let server = try HTTPServer.start(on: address) { request in site.respond(request) }
            console.withLock { $0 = server }
            logger.info("http-listening", metadata: ["addr": "\(server.localAddress)"])
        } catch {
            guard let key = configuration.httpListenKey else {
                logger.warning(
                    "http-disabled",
                    metadata: ["addr": "\(address)", "reason": "\(error)", "hint": "set http_listen or none"])
                return
            }
            throw .metrics("\(key) \(address): \(error)")
        }
    }

    /// Binds `<spool>/state/control` so the CLI can flush and wake messages without a restart. Without it the
    /// daemon still works (retries on schedule), so a failure is logged, not fatal.
    func startControlChannel() {
        do throws(ControlChannelError) {
            let channel = try ControlChannel(
                path: ControlChannel.path(stateDirectory: spool.stateDirectory), logger: logger,
                onFlush: { [runner, spool, logger] id in
                    if let id { return runner.wake(id) }
                    do throws(SpoolError) {
                        for queued in try spool.queuedIDs() { runner.wake(queued) }
                    } catch {
                        logger.error("queue-scan-failed", metadata: ["reason": "\(error)"])
                    }
                },
                onWake: { [runner] id in runner.wake(id) },
                onFault: { [faults, logger] command in
                    let reply = command.execute(on: faults)
                    let status = reply.split(separator: "\n").first ?? ""
                    logger.info("fault-control", metadata: ["command": "\(command.text)", "reply": "\(status)"])
                    return reply
                })
            controlChannel.withLock { $0 = channel }
        } catch {
            logger.warning("control-channel-unavailable", metadata: ["reason": "\(error)"])
        }
    }

    /// Stops accepting, waits (bounded) for sessions and deliveries in progress, then returns.
    public func stop(deadline: Duration = .seconds(10)) {
        logger.info("stopping")
        server.stop()
        runner.stop()
        controlChannel.withLock { channel in
            channel?.close()
            channel = nil
        }
        console.withLock { server in
            server?.close()
            server = nil
        }
        let clock = ContinuousClock()
        let end = clock.now + deadline
        while clock.now < end && (server.activeSessions > 0 || runner.busy > 0) {
            // Waiting on the main thread for other queues to drain; nothing else runs here.
            usleep(20_000)
        }
        logger.info("stopped", metadata: ["open_sessions": "\(server.activeSessions)"])
    }

    /// Runs until SIGTERM or SIGINT, then stops cleanly and exits; SIGHUP reloads `configPath` (nil: the embedded
    /// defaults were used, so there is nothing to re-read). Never returns.
    public func runUntilSignalled(configPath: String? = nil) -> Never {
        signal(SIGPIPE, SIG_IGN)
        let signalQueue = DispatchQueue(label: "dualmta.signals")
        var sources: [DispatchSourceSignal] = []
        for number in [SIGTERM, SIGINT] {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: signalQueue)
            source.setEventHandler { [self] in
                logger.info("signal", metadata: ["signal": "\(number == SIGTERM ? "TERM" : "INT")"])
                stop()
                exit(0)
            }
            source.resume()
            sources.append(source)
        }
        signal(SIGHUP, SIG_IGN)
        let hangUp = DispatchSource.makeSignalSource(signal: SIGHUP, queue: signalQueue)
        hangUp.setEventHandler { [self] in
            logger.info("signal", metadata: ["signal": "HUP"])
            reload(from: configPath)
        }
        hangUp.resume()
        sources.append(hangUp)
        withExtendedLifetime(sources) { dispatchMain() }
    }
}

public enum StartupError: Error, CustomStringConvertible {
    case spool(SpoolError)
    case server(ServerError)
    /// The configured certificate or key cannot be used, or TLS is missing where submission needs it.
    case tls(String)
    /// A configured `http_listen` (or `metrics_listen`) cannot be bound.
    case metrics(String)
    /// `run_as_user` could not be applied.
    case privileges(String)

    public var description: String {
        switch self {
        case .spool(let error): return "spool: \(error)"
        case .server(let error): return "\(error)"
        case .tls(let reason): return "tls: \(reason)"
        case .metrics(let reason): return reason
        case .privileges(let reason): return reason
        }
    }
}
