import DNS
import Foundation
import Logging
import NetAddress
import Sockets

/// The startup self-check (the paper's Dovecot finding turned into a warning): which
/// families each listener serves, and warnings for a host name that resolves to an address no listener covers,
/// IPv6 enabled for delivery without a global IPv6 address or route, and `bind_address`/`bind_address6` that are
/// not addresses of this host. `evaluate` is pure; `gather` does the I/O (DNS via the configured resolver, getifaddrs,
/// /proc/net). `dualmta serve` logs the result at start, `dualmta config check` prints it.
public enum SelfCheck {
    /// What the kernel says about IPv6 on this host.
    public struct IPv6State: Sendable, Equatable {
        /// A global-scope IPv6 address exists (ULA and documentation prefixes count: the kernel calls them global).
        public var hasGlobalAddress: Bool
        /// A usable route to something beyond link-local and loopback exists (a default route or a prefix route).
        public var hasRoute: Bool
        /// The kernel has no IPv6 at all (/proc/net/if_inet6 missing).
        public var disabled: Bool

        public init(hasGlobalAddress: Bool, hasRoute: Bool, disabled: Bool = false) {
            self.hasGlobalAddress = hasGlobalAddress
            self.hasRoute = hasRoute
            self.disabled = disabled
        }
    }

    public struct Inputs: Sendable {
        public var hostname: String
        /// Every SMTP listener (`listen`, `submission_listen`, `submissions_listen`).
        public var listeners: [SocketAddress]
        /// The host name's A and AAAA addresses; nil when the lookup failed (`lookupProblem` says why).
        public var hostnameAddresses: [IPAddress]?
        public var lookupProblem: String?
        public var localAddresses: Set<IPAddress>
        public var deliveryFamilies: Set<AddressFamily>
        public var ipv6: IPv6State
        public var bindAddress: IPAddress?
        public var bindAddress6: IPAddress?
        /// `relay_networks`: a /0 there lets anyone relay.
        public var relayNetworks: [CIDR]

        public init(
            hostname: String, listeners: [SocketAddress], hostnameAddresses: [IPAddress]?, lookupProblem: String? = nil,
            localAddresses: Set<IPAddress>, deliveryFamilies: Set<AddressFamily>, ipv6: IPv6State,
            bindAddress: IPAddress? = nil, bindAddress6: IPAddress? = nil, relayNetworks: [CIDR] = []
        ) {
            self.relayNetworks = relayNetworks
            self.hostname = hostname
            self.listeners = listeners
            self.hostnameAddresses = hostnameAddresses
            self.lookupProblem = lookupProblem
            self.localAddresses = localAddresses
            self.deliveryFamilies = deliveryFamilies
            self.ipv6 = ipv6
            self.bindAddress = bindAddress
            self.bindAddress6 = bindAddress6
        }
    }

    public struct Report: Sendable, Equatable {
        /// One line per listener: `[::]:25 serves ipv6 (every IPv6 address; V6ONLY)`.
        public var listeners: [String]
        public var warnings: [String]
        /// Findings that are expected in the setup and need no action (logged as info, not warning).
        public var notes: [String] = []
    }

    /// The checks, as a pure function of what was gathered.
    public static func evaluate(_ inputs: Inputs) -> Report {
        var listenerLines: [String] = []
        for listener in inputs.listeners {
            let scope: String
            if listener.ip.addressClass == .unspecified {
                scope =
                    listener.family == .ipv6
                    ? "every IPv6 address, not IPv4 (IPV6_V6ONLY)" : "every IPv4 address"
            } else {
                scope = "\(listener.ip) only"
            }
            listenerLines.append("\(listener) serves \(listener.family): \(scope)")
        }

        var warnings: [String] = []
        let servedFamilies = Set(inputs.listeners.map(\.family))
        if let addresses = inputs.hostnameAddresses {
            for address in addresses {
                let record = address.family == .ipv6 ? "AAAA" : "A"
                let sameFamily = inputs.listeners.filter { $0.family == address.family }
                let prefix = "hostname \(inputs.hostname) has \(record) \(address)"
                if !servedFamilies.contains(address.family) {
                    warnings.append(
                        "\(prefix) but no listener accepts \(address.family): clients that use that address "
                            + "are refused")
                } else if !sameFamily.contains(where: { $0.ip.addressClass == .unspecified || $0.ip == address }) {
                    warnings.append("\(prefix) but no listener is bound to it")
                } else if !inputs.localAddresses.isEmpty, !inputs.localAddresses.contains(address) {
                    warnings.append("\(prefix), which is not an address of this host")
                }
            }
        } else if let problem = inputs.lookupProblem {
            warnings.append("hostname \(inputs.hostname) could not be resolved: \(problem)")
        }

        // A host that only listens on loopback is a lab or a local relay: no global IPv6 is expected there, so the
        // IPv6 findings are notes rather than warnings.
        let loopbackOnly =
            !inputs.listeners.isEmpty && inputs.listeners.allSatisfy { $0.ip.addressClass == .loopback }
        var ipv6Findings: [String] = []
        if inputs.deliveryFamilies.contains(.ipv6) {
            if inputs.ipv6.disabled {
                ipv6Findings.append("inet_protocols enables IPv6 for delivery but the kernel has no IPv6")
            } else {
                if !inputs.ipv6.hasGlobalAddress {
                    ipv6Findings.append(
                        "inet_protocols enables IPv6 for delivery but this host has no global IPv6 address")
                }
                if !inputs.ipv6.hasRoute {
                    ipv6Findings.append(
                        "inet_protocols enables IPv6 for delivery but this host has no IPv6 route beyond "
                            + "link-local (no default route)")
                }
            }
        }
        var notes: [String] = []
        if loopbackOnly { notes = ipv6Findings } else { warnings += ipv6Findings }
        if let bind = inputs.bindAddress6, !inputs.localAddresses.contains(bind) {
            warnings.append("bind_address6 \(bind) is not an address of this host: IPv6 connects will fail")
        }
        if let bind = inputs.bindAddress, !inputs.localAddresses.contains(bind) {
            warnings.append("bind_address \(bind) is not an address of this host: IPv4 connects will fail")
        }
        for network in inputs.relayNetworks where network.prefixLength == 0 {
            warnings.append(
                "relay_networks \(network) lets every \(network.address.family) client relay: this is an open relay")
        }
        return Report(listeners: listenerLines, warnings: warnings, notes: notes)
    }

    // MARK: - Gathering (I/O)

    /// Resolves the host name (A and AAAA, through `dns_servers` or the system resolver), reads the interfaces and
    /// /proc/net, and evaluates. Blocks on DNS: call it off the start path's critical section.
    public static func run(_ configuration: Configuration) -> Report {
        let resolver = SystemResolver(servers: configuration.dnsServers, timeout: 2, attempts: 1)
        var addresses: [IPAddress] = []
        var problems: [String] = []
        // RFC 6761 special-use names never reach the public DNS: asking the system resolver about them is pointless
        // (and the test suites promise never to). With `dns_servers` (the lab DNS) they are looked up.
        let lookUp = configuration.dnsServers != nil || !isSpecialUse(configuration.hostname)
        for family in [AddressFamily.ipv6, .ipv4] where lookUp {
            switch resolver.addresses(configuration.hostname, family: family) {
            case .records(let records, _): addresses += records.map(\.address)
            case .noData: break
            case .noSuchDomain: problems.append("no such domain")
            case .temporaryFailure(let why): problems.append(why)
            }
        }
        let lookupFailed = addresses.isEmpty && !problems.isEmpty
        let inputs = Inputs(
            hostname: configuration.hostname,
            listeners: configuration.listen + configuration.submissionListen + configuration.submissionsListen,
            hostnameAddresses: lookupFailed ? nil : addresses, lookupProblem: problems.first,
            localAddresses: LocalAddresses.interfaceAddresses(), deliveryFamilies: configuration.inetProtocols,
            ipv6: readIPv6State(), bindAddress: configuration.bindAddress, bindAddress6: configuration.bindAddress6,
            relayNetworks: configuration.relayNetworks)
        var report = evaluate(inputs)
        report.warnings += FaultCheck.warnings(rules: configuration.faultRules, listeners: inputs.listeners)
        return report
    }

    static func isSpecialUse(_ name: String) -> Bool {
        let lower = name.lowercased()
        if lower == "localhost" || !lower.contains(".") { return true }
        return [".test", ".example", ".invalid", ".localhost", ".local"].contains { lower.hasSuffix($0) }
    }

    /// Logs the report: one `listener` line per listener, one `self-check-note` (info) or `self-check-warning` per
    /// finding.
    public static func log(_ report: Report, logger: Logger) {
        for line in report.listeners { logger.info("self-check", metadata: ["listener": "\(line)"]) }
        for note in report.notes { logger.info("self-check-note", metadata: ["reason": "\(note)"]) }
        for warning in report.warnings { logger.warning("self-check-warning", metadata: ["reason": "\(warning)"]) }
        logger.info("self-check-done", metadata: ["warnings": "\(report.warnings.count)"])
    }

    static func readIPv6State() -> IPv6State {
        guard let addresses = try? String(contentsOfFile: "/proc/net/if_inet6", encoding: .utf8) else {
            return IPv6State(hasGlobalAddress: false, hasRoute: false, disabled: true)
        }
        let routes = (try? String(contentsOfFile: "/proc/net/ipv6_route", encoding: .utf8)) ?? ""
        return IPv6State(
            hasGlobalAddress: hasGlobalAddress(ifInet6: addresses), hasRoute: hasUsableRoute(ipv6Route: routes))
    }

    /// /proc/net/if_inet6: `address ifindex prefixlen scope flags name`; scope 00 is global. Tentative (0x40) and
    /// DAD-failed (0x08) addresses cannot be used yet.
    static func hasGlobalAddress(ifInet6 text: String) -> Bool {
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 6, let scope = UInt8(fields[3], radix: 16), let flags = UInt8(fields[4], radix: 16)
            else { continue }
            if scope == 0 && flags & 0x48 == 0 { return true }
        }
        return false
    }

    /// /proc/net/ipv6_route: `dest plen src plen nexthop metric refcnt use flags dev`. A usable route is up
    /// (RTF_UP 0x1), not a reject route (RTF_REJECT 0x200), not on `lo`, and leads beyond fe80::/10, ff00::/8 and
    /// ::1.
    static func hasUsableRoute(ipv6Route text: String) -> Bool {
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 10, let flags = UInt32(fields[8], radix: 16) else { continue }
            let destination = fields[0].lowercased()
            guard flags & 0x1 != 0, flags & 0x200 == 0, fields[9] != "lo" else { continue }
            if destination.hasPrefix("fe8") || destination.hasPrefix("fe9") || destination.hasPrefix("fea")
                || destination.hasPrefix("feb") || destination.hasPrefix("ff")
            {
                continue
            }
            if destination == "00000000000000000000000000000001" { continue }
            return true
        }
        return false
    }
}
