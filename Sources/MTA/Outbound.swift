import Delivery
import Foundation
import Logging
import NetAddress
import Routing
import SMTPProtocol

extension Configuration {
    /// The outbound engine's view of the settings: who we are (names, addresses, listeners), which families we can
    /// use, routes, DNS, cache and timeouts.
    public func outbound(interfaceAddresses: Set<IPAddress>) -> OutboundConfiguration {
        let identity = LocalIdentity(
            hostname: hostname, aliases: [], addresses: interfaceAddresses, proxyAddresses: [],
            listeners: listen.map { Endpoint(address: $0.ip, port: $0.port) }, localDomains: Set(allLocalDomains))
        var configuration = OutboundConfiguration(
            heloName: hostname, identity: identity,
            capability: Capability(usableFamilies: inetProtocols, preferredFamily: addressPreference),
            staticRoutes: routes, mxPort: mxPort, familyMismatch: familyMismatch,
            acceptLoopbackFromDNS: allowLoopbackMX, dnsServers: dnsServers, transportCacheTTL: transportCacheTTL,
            connectTimeout: connectTimeout, replyTimeout: smtpReplyTimeout, bindAddress: bindAddress,
            bindAddress6: bindAddress6, retrySchedule: RetrySchedule(retrySchedule))
        configuration.tlsPolicy = ClientTLSPolicy(rawValue: smtpTLS.rawValue) ?? .may
        configuration.tlsPolicyTable = smtpTLSPolicy
        configuration.connectStrategy = connectStrategy
        configuration.connectionAttemptDelay = connectionAttemptDelay
        return configuration
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
        let router = Router(
            configuration: configuration.outbound(interfaceAddresses: LocalAddresses.interfaceAddresses()),
            cacheFile: FileManager.default.fileExists(atPath: configuration.transportCacheFile)
                ? configuration.transportCacheFile : nil,
            logger: logger)
        let plan = router.plan(destination)
        guard json else {
            guard configuration.connectStrategy == .happyEyeballs, case .deliver = plan.verdict else {
                return plan.text
            }
            let schedule = HappyEyeballsSchedule(attempts: plan.attempts, delay: configuration.connectionAttemptDelay)
            return plan.text + schedule.text
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        guard let data = try? encoder.encode(plan), let text = String(data: data, encoding: .utf8) else {
            return "{}\n"
        }
        return text + "\n"
    }
}
