import DNS
import Delivery
import Foundation
import Logging
import NetAddress
import Routing
import SMTPProtocol

extension Configuration {
    /// How outbound attempts are made: EHLO name, timeouts, source addresses, TLS, connect strategy.
    public var outbound: OutboundConfiguration {
        var configuration = OutboundConfiguration(
            heloName: hostname, connectTimeout: connectTimeout, replyTimeout: smtpReplyTimeout,
            bindAddress: bindAddress, bindAddress6: bindAddress6)
        configuration.tlsPolicy = smtpTLS
        configuration.tlsPolicyTable = smtpTLSPolicy
        configuration.connectStrategy = connectStrategy
        configuration.connectionAttemptDelay = connectionAttemptDelay
        return configuration
    }

    /// A new, empty outbound connection cache with these settings, or nil when `smtp_connection_cache = no`.
    public func connectionCache(logger: Logger) -> ConnectionCache? {
        smtpConnectionCache ? ConnectionCache(settings: smtpConnectionCacheSettings, logger: logger) : nil
    }

    /// Where mail goes: who we are (names, addresses, listeners), which families we can use, static routes.
    public func routingPolicy(interfaceAddresses: Set<IPAddress>) -> RoutingPolicy {
        let identity = LocalIdentity(
            hostname: hostname, aliases: [], addresses: interfaceAddresses, proxyAddresses: [],
            listeners: listen.map { Endpoint(address: $0.ip, port: $0.port) }, localDomains: Set(allLocalDomains))
        return RoutingPolicy(
            identity: identity,
            capability: Capability(usableFamilies: inetProtocols, preferredFamily: addressPreference),
            staticRoutes: routes, mxPort: mxPort, familyMismatch: familyMismatch, acceptLoopbackFromDNS: allowLoopbackMX
        )
    }

    /// The live router over `dns_servers` (or the system resolver) and the transport cache in `cacheFile`. An
    /// address that refused is skipped at most until the shortest retry interval (and never over 5 minutes), so
    /// a retry always finds it usable again.
    public func router(interfaceAddresses: Set<IPAddress>, cacheFile: String?, logger: Logger) -> Router {
        let shortestRetry = retrySchedule.min() ?? .seconds(60)
        return Router(
            policy: routingPolicy(interfaceAddresses: interfaceAddresses),
            resolver: SystemResolver(servers: dnsServers), transportCacheTTL: transportCacheTTL,
            negativeCacheTTL: min(shortestRetry, .seconds(300)), cacheFile: cacheFile, logger: logger)
    }

    var transportCacheFile: String { spoolDirectory + "/state/transport-cache.json" }
}

/// `dualmta route`: the plan delivery would execute right now, from the same planner, DNS and transport cache.
public enum RouteExplainer {
    public enum Failure: Error, CustomStringConvertible {
        case badDestination(String)

        public var description: String {
            switch self {
            case .badDestination(let text): return "\"\(text)\" is not an address, a domain or an address literal"
            }
        }
    }

    public static func explain(_ target: String, configuration: Configuration, json: Bool, logger: Logger)
        throws(Failure) -> String
    {
        guard let destination = Destination(parsing: target) else { throw .badDestination(target) }
        let router = configuration.router(
            interfaceAddresses: LocalAddresses.interfaceAddresses(),
            cacheFile: FileManager.default.fileExists(atPath: configuration.transportCacheFile)
                ? configuration.transportCacheFile : nil,
            logger: logger)
        let plan = router.plan(destination, now: Date())
        guard json else {
            let recipient = target.contains("@") ? target : nil
            let faults = FaultPreview.text(
                rules: configuration.faultRules, attempts: plan.attempts, recipient: recipient)
            guard configuration.connectStrategy == .happyEyeballs, case .deliver = plan.verdict else {
                return plan.text + faults
            }
            let schedule = HappyEyeballsSchedule(attempts: plan.attempts, delay: configuration.connectionAttemptDelay)
            return plan.text + schedule.text + faults
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        guard let data = try? encoder.encode(plan), let text = String(data: data, encoding: .utf8) else {
            return "{}\n"
        }
        return text + "\n"
    }
}
