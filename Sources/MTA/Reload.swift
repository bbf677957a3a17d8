import Delivery
import Faults
import Foundation
import Logging
import SMTPServer
import Spool

/// SIGHUP: read the config file again and apply it without a restart. Listeners are diffed (new ones bound,
/// removed ones closed, open sessions go on), and routes, TLS policies, relay and recipient policies, the TLS
/// certificate and key, the submission users file and the delivery settings are rebuilt from the new file. A file
/// that does not validate (or a certificate that cannot be loaded) is logged with its file:line and the running
/// settings stay. Settings that only a restart can change are named in a warning and keep their running value.
extension MTAService {
    /// What the server and the queue runner are built from; the same code at start and at every reload.
    static func wiring(_ configuration: Configuration, spool: Spool, faults: FaultBook, logger: Logger)
        throws(StartupError)
        -> (delivery: DeliveryConfiguration, server: ServerConfiguration)
    {
        let policy = recipientPolicy(configuration)
        let router = configuration.router(
            interfaceAddresses: LocalAddresses.interfaceAddresses(),
            cacheFile: spool.stateDirectory + "/transport-cache.json", logger: logger)
        var outbound = configuration.outbound
        outbound.faults = faults
        // A new cache each time: a reload closes the parked sessions of the old one (QueueRunner.update), so none
        // carries mail under settings (EHLO name, TLS policy, source address) that no longer apply.
        outbound.connectionCache = configuration.connectionCache(logger: logger)
        var delivery = DeliveryConfiguration(
            policy: policy, concurrency: configuration.deliveryConcurrency,
            outbound: OutboundTransport(configuration: outbound, router: router),
            retrySchedule: RetrySchedule(configuration.retrySchedule),
            bounces: configuration.bounceSettings)
        delivery.historyRetention = configuration.historyRetention
        var server = serverConfiguration(configuration, policy: policy)
        server.faults = faults
        if configuration.senderReturnCheck != .off {
            server.session.checkSenderReturnPath = true
            server.senderCheck =
                SenderReturnCheck(router: router, mode: configuration.senderReturnCheck, logger: logger)
                .check
        }
        try TLSSetup.configureServer(&server, configuration, stateDirectory: spool.stateDirectory, logger: logger)
        return (delivery, server)
    }

    /// Keys read once at start: a reload that changes them keeps the running value and says so.
    static func restartOnlyChanges(running: Configuration, new: inout Configuration) -> [String] {
        var kept: [String] = []
        func keep<Value: Equatable>(_ key: String, _ path: WritableKeyPath<Configuration, Value>) {
            guard new[keyPath: path] != running[keyPath: path] else { return }
            new[keyPath: path] = running[keyPath: path]
            kept.append(key)
        }
        keep("spool_dir", \.spoolDirectory)
        keep("log_format", \.logFormat)
        keep("log_file", \.logFile)
        keep("http_listen", \.httpListen)
        return kept
    }

    /// Re-reads `path` and applies it (see the type's comment). Runs on the signal queue, one reload at a time.
    public func reload(from path: String?) {
        guard let path else {
            logger.warning("reload-skipped", metadata: ["reason": "started on the embedded defaults: no file to read"])
            return
        }
        var new: Configuration
        do throws(ConfigurationError) {
            new = try ConfigurationFile.load(path: path)
        } catch {
            logger.error("reload-failed", metadata: ["reason": "\(error)", "kept": "the running configuration"])
            return
        }
        let running = live.withLock { $0 }
        for key in Self.restartOnlyChanges(running: running, new: &new) {
            logger.warning("reload-needs-restart", metadata: ["key": "\(key)", "reason": "read only at start"])
        }
        let wiring: (delivery: DeliveryConfiguration, server: ServerConfiguration)
        do throws(StartupError) {
            wiring = try Self.wiring(new, spool: spool, faults: faults, logger: logger)
        } catch {
            logger.error(
                "reload-failed", metadata: ["reason": "\(path): \(error)", "kept": "the running configuration"])
            return
        }
        runner.update(wiring.delivery)
        faults.replaceConfigured(new.faultRules)
        let changes = server.reload(wiring.server)
        live.withLock { $0 = new }
        // The listeners or the host name may have changed: the start-up self-check again, off the signal queue.
        DispatchQueue.global(qos: .utility).async { [logger, new] in SelfCheck.log(SelfCheck.run(new), logger: logger) }
        logger.info(
            "reloaded",
            metadata: [
                "file": "\(path)", "listeners_added": "\(changes.added.count)",
                "listeners_removed": "\(changes.removed.count)", "listeners_failed": "\(changes.failed.count)",
            ])
    }
}

extension Configuration {
    /// The bounce and lifetime keys as the queue runner (and `queue list/show` for `expires`) use them.
    public var bounceSettings: BounceSettings {
        BounceSettings(
            hostname: hostname, maxQueueLifetime: maxQueueLifetime, delayWarningAfter: delayWarningAfter,
            doubleBounceRecipient: doubleBounceRecipient, bounceQueueLifetime: bounceQueueLifetime)
    }
}
