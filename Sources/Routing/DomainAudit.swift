/// `dualmta check DOMAIN`: the paper's recommendations as an audit (RFC 3974 §4, RFC 7505). Pure: the DNS
/// answers `RouteResolver.gather` collected (both families) and the SMTP probe results go in, a report with
/// findings, a one-line verdict and an exit status comes out. The I/O half (DNS, connects) is
/// `MTA.ReadinessCheck`.
///
/// Choices:
/// - An address's family counts for an MX host only if the router would use it (not `isUnusableForDelivery`, not
///   loopback unless allowed): an MX with AAAA `fe80::1` and A `192.0.2.1` is IPv4-only.
/// - "Can an IPv4-only / IPv6-only sender deliver?" is asked of `RoutePlanner` itself, with that capability, so the
///   checker and delivery never disagree.
/// - Documentation addresses are a note (exit 0) unless `internet` mode is on, where they are problems: the lab
///   lives in documentation space, and the table's "warn" would make every lab domain exit 1.
/// - A valid null MX is a note: the domain says, correctly, that it takes no mail.

import DNS
import NetAddress

/// How bad a finding is; the worst one decides the exit status.
public enum AuditSeverity: String, Sendable, Hashable, Codable, Comparable {
    case note
    case warning
    case problem

    private var rank: Int {
        switch self {
        case .note: return 0
        case .warning: return 1
        case .problem: return 2
        }
    }

    public static func < (lhs: AuditSeverity, rhs: AuditSeverity) -> Bool { lhs.rank < rhs.rank }

    /// 0 ok, 1 warnings, 2 problems.
    public var exitStatus: Int32 { Int32(rank) }
}

/// One thing the audit found. `code` is stable (scripts and tests match it); `subject` is a host, an address or nil
/// for the domain.
public struct AuditFinding: Sendable, Hashable, Codable, CustomStringConvertible {
    public var severity: AuditSeverity
    public var code: String
    public var subject: String?
    public var message: String

    public init(_ severity: AuditSeverity, _ code: String, subject: String? = nil, _ message: String) {
        self.severity = severity
        self.code = code
        self.subject = subject
        self.message = message
    }

    public var description: String { "\(severity) \(code): \(message)" }
}

/// Which families an MX host can be reached over.
public enum MXFamilyClass: String, Sendable, Hashable, Codable {
    case dualStack = "dual-stack"
    case ipv4Only = "IPv4-only"
    case ipv6Only = "IPv6-only"
    case noAddress = "no address"

    init(_ families: Set<AddressFamily>) {
        switch (families.contains(.ipv4), families.contains(.ipv6)) {
        case (true, true): self = .dualStack
        case (true, false): self = .ipv4Only
        case (false, true): self = .ipv6Only
        case (false, false): self = .noAddress
        }
    }
}

/// What one SMTP probe of one address saw: connect, 220 banner, EHLO, QUIT.
public struct ProbeResult: Sendable, Hashable, Codable {
    public enum Outcome: String, Sendable, Hashable, Codable {
        /// Connected and got a 220 banner.
        case ok
        case refused
        /// No route (EHOSTUNREACH, ENETUNREACH, family unsupported here).
        case unreachable
        case timeout
        /// Connected, but the greeting was not 220 (e.g. 554), or the server broke the protocol.
        case rejected
        /// Not attempted: the family is off in `inet_protocols`, or the address is one nobody should connect to.
        case skipped
    }

    public var outcome: Outcome
    public var milliseconds: Int?
    /// The greeting's first line without the code.
    public var banner: String?
    /// The EHLO extension lines (keyword and parameters, keyword uppercased), nil if EHLO was not answered 250.
    public var ehlo: [String]?
    /// The errno text, the non-220 reply, or why the probe was skipped.
    public var detail: String?

    public init(
        outcome: Outcome, milliseconds: Int? = nil, banner: String? = nil, ehlo: [String]? = nil, detail: String? = nil
    ) {
        self.outcome = outcome
        self.milliseconds = milliseconds
        self.banner = banner
        self.ehlo = ehlo
        self.detail = detail
    }

    /// "ok 3 ms", "refused 1 ms: connect: Connection refused", "skipped: IPv6 off in inet_protocols".
    public var summary: String {
        var text = outcome.rawValue
        if let milliseconds { text += " \(milliseconds) ms" }
        if outcome == .ok, let banner { text += " \"\(banner)\"" } else if let detail { text += ": \(detail)" }
        return text
    }
}

/// One A or AAAA address of an MX host.
public struct AuditedAddress: Sendable, Hashable, Codable {
    public var address: String
    public var family: AddressFamily
    /// `AddressClass` raw value: "global", "6to4", "link-local", ...
    public var addressClass: String
    /// The messages of the warnings and problems about this address (notes such as "documentation address" are
    /// in the report's findings only).
    public var warnings: [String]
    /// nil before probing (or when probing was not asked for).
    public var reachability: ProbeResult?
}

/// One MX record (or the implicit MX) with its addresses.
public struct AuditedMX: Sendable, Hashable, Codable {
    public var preference: UInt16
    /// "." for a null MX.
    public var host: String
    public var implicit: Bool
    public var familyClass: MXFamilyClass
    /// Set when the target is a CNAME (RFC 2181 §10.3).
    public var canonicalName: String?
    public var ipv6: [AuditedAddress]
    public var ipv4: [AuditedAddress]
    /// "null MX", "numeric target", "NXDOMAIN", "AAAA lookup failed: ..."
    public var notes: [String]
}

/// EHLO extensions that one host announces over one family only.
public struct EHLODifference: Sendable, Hashable, Codable {
    public var host: String
    public var onlyIPv6: [String]
    public var onlyIPv4: [String]
}

/// Everything `dualmta check` prints; `--json` encodes this.
public struct DomainAuditReport: Sendable, Hashable, Codable {
    public var domain: String
    /// "mx", "implicit mx", "null mx", "none".
    public var source: String
    public var mx: [AuditedMX]
    public var ehloDifferences: [EHLODifference]
    /// Every finding: domain-level, per host and per address.
    public var findings: [AuditFinding]
    public var severity: AuditSeverity
    public var exitStatus: Int32
    public var verdict: String
}

/// Settings that change what counts as a problem.
public struct AuditOptions: Sendable, Hashable {
    /// Documentation addresses (and 3fff::/20) are problems, not notes.
    public var internet: Bool
    /// `allow_loopback_mx`: loopback addresses in DNS count as usable (lab only).
    public var acceptLoopback: Bool
    public var mxPort: UInt16

    public init(internet: Bool = false, acceptLoopback: Bool = false, mxPort: UInt16 = 25) {
        self.internet = internet
        self.acceptLoopback = acceptLoopback
        self.mxPort = mxPort
    }
}

public enum DomainAudit {
    /// The context `RouteResolver.gather` needs to ask every question the audit uses: both families, no self names
    /// (nothing pruned), no static routes, no local domains.
    public static func gatherContext(_ options: AuditOptions) -> RoutingContext {
        RoutingContext(
            identity: LocalIdentity(hostname: "", localDomains: []), capability: .dualStack, mxPort: options.mxPort,
            acceptLoopbackFromDNS: options.acceptLoopback)
    }

    /// The addresses to probe: every address DNS gave for the domain's MX hosts (or the implicit MX), except those
    /// no one should connect to (unusable classes, loopback unless allowed). Deduplicated, in report order.
    public static func probeTargets(_ report: DomainAuditReport, options: AuditOptions) -> [IPAddress] {
        var seen: Set<IPAddress> = []
        var targets: [IPAddress] = []
        for entry in report.mx {
            for audited in entry.ipv6 + entry.ipv4 {
                guard let address = IPAddress(audited.address), isUsable(address, options),
                    seen.insert(address).inserted
                else { continue }
                targets.append(address)
            }
        }
        return targets
    }

    /// The audit. `probes` holds the SMTP probe result per address; nil = no probing (DNS findings only).
    public static func audit(
        domain: String, lookups: RouteLookups, probes: [IPAddress: ProbeResult]?, options: AuditOptions
    ) -> DomainAuditReport {
        var work = AuditWork(domain: DNSName.normalized(domain), lookups: lookups, options: options)
        work.run(probes: probes)
        return work.report()
    }

    /// The findings for one address: what it is and how bad that is in DNS. Empty for a plain global address.
    public static func addressFindings(_ address: IPAddress, options: AuditOptions) -> [AuditFinding] {
        let subject = address.description
        var found: [AuditFinding] = []
        func add(_ severity: AuditSeverity, _ message: String) {
            found.append(AuditFinding(severity, "address-\(address.addressClass)", subject: subject, message))
        }
        switch address {
        case .v4(let v4): ipv4Findings(v4, options: options, add: add)
        case .v6(let v6): ipv6Findings(v6, options: options, add: add)
        }
        // ISATAP is an interface identifier under any prefix (RFC 5214), so it is checked besides the class.
        if case .v6(let v6) = address, let embedded = v6.isatapIPv4, v6.addressClass != .ipv4Mapped,
            v6.addressClass != .ipv4Compatible
        {
            found.append(
                AuditFinding(
                    .warning, "address-isatap", subject: subject,
                    "\(subject) is an ISATAP address (RFC 5214): a tunnel endpoint over IPv4 \(embedded)"))
        }
        return found
    }

    static func isUsable(_ address: IPAddress, _ options: AuditOptions) -> Bool {
        let addressClass = address.addressClass
        if addressClass.isUnusableForDelivery { return false }
        return addressClass != .loopback || options.acceptLoopback
    }

    private static func ipv4Findings(
        _ address: IPv4Address, options: AuditOptions, add: (AuditSeverity, String) -> Void
    ) {
        let text = address.description
        switch address.addressClass {
        case .global: break
        case .unspecified, .broadcastOrReserved: add(.problem, "\(text) is a reserved IPv4 address: unusable")
        case .loopback:
            add(options.acceptLoopback ? .warning : .problem, "\(text) is a loopback address: it points at the sender")
        case .linkLocal: add(.problem, "\(text) is link-local (169.254/16): meaningless in DNS")
        case .multicast: add(.problem, "\(text) is a multicast address: unusable for SMTP")
        case .privateIPv4: add(.warning, "\(text) is a private address (RFC 1918): not reachable from the Internet")
        case .sharedIPv4: add(.warning, "\(text) is shared address space (100.64/10, CGN): not reachable from outside")
        case .documentation: add(documentationSeverity(options), documentationText(text))
        default: add(.warning, "\(text) is a \(address.addressClass) address")
        }
    }

    private static func ipv6Findings(
        _ address: IPv6Address, options: AuditOptions, add: (AuditSeverity, String) -> Void
    ) {
        let text = address.description
        let g = address.groups
        switch address.addressClass {
        case .global: break
        case .unspecified: add(.problem, "\(text) is the unspecified address: unusable")
        case .loopback:
            add(options.acceptLoopback ? .warning : .problem, "\(text) is a loopback address: it points at the sender")
        case .ipv4Mapped:
            let embedded = address.embeddedIPv4.map { " (\($0))" } ?? ""
            add(.problem, "\(text) is IPv4-mapped\(embedded): an internal representation, never valid in DNS")
        case .ipv4Compatible:
            let embedded = address.embeddedIPv4.map { " (\($0))" } ?? ""
            add(.problem, "\(text) is IPv4-compatible\(embedded): deprecated (RFC 4291), unusable")
        case .linkLocal: add(.problem, "\(text) is link-local (fe80::/10): needs a zone index, meaningless in DNS")
        case .siteLocal: add(.problem, "\(text) is site-local (fec0::/10): deprecated (RFC 3879), unusable")
        case .multicast: add(.problem, "\(text) is a multicast address: unusable for SMTP")
        case .uniqueLocal:
            add(.warning, "\(text) is a unique local address (RFC 4193): not reachable from the Internet")
        case .documentation: add(documentationSeverity(options), documentationText(text))
        case .sixToFour:
            let embedded = IPv4Address(UInt8(g[1] >> 8), UInt8(g[1] & 0xff), UInt8(g[2] >> 8), UInt8(g[2] & 0xff))
            add(
                .warning,
                "\(text) is a 6to4 address (2002::/16) with embedded IPv4 \(embedded): tunnelled, relays deprecated "
                    + "(RFC 7526), often broken")
        case .teredo:
            let server = IPv4Address(UInt8(g[2] >> 8), UInt8(g[2] & 0xff), UInt8(g[3] >> 8), UInt8(g[3] & 0xff))
            let c6 = g[6] ^ 0xffff
            let c7 = g[7] ^ 0xffff
            let client = IPv4Address(UInt8(c6 >> 8), UInt8(c6 & 0xff), UInt8(c7 >> 8), UInt8(c7 & 0xff))
            add(
                .problem,
                "\(text) is a Teredo address (2001::/32): server IPv4 \(server), client IPv4 \(client) port "
                    + "\(g[5] ^ 0xffff); a NAT-traversal client, not a mail server")
        case .nat64:
            add(
                .warning,
                "\(text) is a NAT64 address\(nat64Embedded(g).map { " for IPv4 \($0)" } ?? ""): synthesized by DNS64, "
                    + "never valid in authoritative data")
        case .reserved:
            add(.problem, "\(text) is in a reserved range (6bone, ORCHID, benchmarking or discard-only): unusable")
        default: add(.warning, "\(text) is a \(address.addressClass) address")
        }
    }

    /// RFC 6052: the IPv4 address in 64:ff9b::/96 (last 32 bits) or 64:ff9b:1::/48 (bits 48–63 and 72–87).
    private static func nat64Embedded(_ g: [UInt16]) -> IPv4Address? {
        if g[2...5].allSatisfy({ $0 == 0 }) {
            return IPv4Address(UInt8(g[6] >> 8), UInt8(g[6] & 0xff), UInt8(g[7] >> 8), UInt8(g[7] & 0xff))
        }
        if g[2] == 1 {
            return IPv4Address(UInt8(g[3] >> 8), UInt8(g[3] & 0xff), UInt8(g[4] & 0xff), UInt8(g[5] >> 8))
        }
        return nil
    }

    private static func documentationSeverity(_ options: AuditOptions) -> AuditSeverity {
        options.internet ? .problem : .note
    }

    private static func documentationText(_ text: String) -> String {
        "\(text) is a documentation address: fine in a lab, unroutable on the Internet"
    }

    /// "1 problem, 2 warnings".
    static func count(_ findings: [AuditFinding], _ severity: AuditSeverity) -> String {
        let number = findings.filter { $0.severity == severity }.count
        return "\(number) \(severity)\(number == 1 ? "" : "s")"
    }
}

/// The state of one audit run; `DomainAudit.audit` is the entry point.
struct AuditWork {
    let domain: String
    let lookups: RouteLookups
    let options: AuditOptions
    var source = "mx"
    var entries: [AuditedMX] = []
    var findings: [AuditFinding] = []
    var ehloDifferences: [EHLODifference] = []
    /// The verdict's first words when no finding decides it (null MX, DNS failure).
    var headline: String?

    init(domain: String, lookups: RouteLookups, options: AuditOptions) {
        self.domain = domain
        self.lookups = lookups
        self.options = options
    }

    mutating func run(probes: [IPAddress: ProbeResult]?) {
        guard let answer = lookups.mx else {
            source = "none"
            add(.problem, "dns-failure", "no MX answer for \(domain) was gathered")
            return
        }
        switch answer {
        case .temporaryFailure(let why):
            source = "none"
            add(.problem, "dns-failure", "MX lookup for \(domain) failed: \(why); nothing else can be checked")
            return
        case .noSuchDomain:
            source = "none"
            add(.problem, "no-such-domain", "\(domain) does not exist (NXDOMAIN)")
            return
        case .noData, .records([], _):
            source = "implicit mx"
            add(.note, "implicit-mx", "\(domain) has no MX records: senders use its own addresses (implicit MX)")
            entries = [hostEntry(preference: 0, host: domain, implicit: true)]
        case .records(let records, let canonicalName):
            if let canonicalName, canonicalName != domain {
                add(.note, "domain-cname", "\(domain) is a CNAME for \(canonicalName): its MX records are used")
            }
            if records.contains(where: \.isNullMX) {
                nullMX(records)
                return
            }
            for record in deduplicated(records) {
                entries.append(hostEntry(preference: record.preference, host: record.exchange, implicit: false))
            }
        }
        if let probes { applyProbes(probes) }
        routability()
        if let probes, !probes.isEmpty { reachability() }
    }

    // MARK: - Null MX (RFC 7505)

    private mutating func nullMX(_ records: [MXRecord]) {
        source = "null mx"
        for record in records.sorted(by: { ($0.preference, $0.exchange) < ($1.preference, $1.exchange) }) {
            entries.append(
                AuditedMX(
                    preference: record.preference, host: record.isNullMX ? "." : record.exchange, implicit: false,
                    familyClass: .noAddress, canonicalName: nil, ipv6: [], ipv4: [],
                    notes: record.isNullMX ? ["null MX"] : ["ignored: the domain has a null MX"]))
        }
        if records.count > 1 {
            add(
                .problem, "null-mx-mixed",
                "invalid null MX set: \".\" is mixed with other MX records; senders treat the domain as taking no mail "
                    + "(RFC 7505 §3)")
        } else if records[0].preference != 0 {
            add(.warning, "null-mx-preference", "null MX has preference \(records[0].preference), RFC 7505 says 0")
        } else {
            add(.note, "null-mx", "\(domain) has a null MX: it accepts no mail (RFC 7505)")
        }
        headline = "\(domain) accepts no mail (null MX)"
    }

    /// One entry per exchange, its best preference; sorted by preference, then name (no shuffle: a report).
    private func deduplicated(_ records: [MXRecord]) -> [MXRecord] {
        var best: [String: MXRecord] = [:]
        for record in records where best[record.exchange].map({ record.preference < $0.preference }) ?? true {
            best[record.exchange] = record
        }
        return best.values.sorted { ($0.preference, $0.exchange) < ($1.preference, $1.exchange) }
    }

    // MARK: - One host and its addresses

    private mutating func hostEntry(preference: UInt16, host: String, implicit: Bool) -> AuditedMX {
        var entry = AuditedMX(
            preference: preference, host: host, implicit: implicit, familyClass: .noAddress, canonicalName: nil,
            ipv6: [], ipv4: [], notes: [])
        if IPAddress(host) != nil || (host.hasPrefix("[") && host.hasSuffix("]")) {
            entry.notes.append("numeric target")
            add(
                .problem, "mx-target-ip", subject: host,
                "MX \(preference) \(host) is an IP address, not a host name (RFC 5321 §5.1): senders skip it or "
                    + "misuse it")
            return entry
        }
        let answers = lookups.addresses(of: host)
        var usable: Set<AddressFamily> = []
        var nxdomain = 0
        for family in [AddressFamily.ipv6, .ipv4] {
            let type = family == .ipv6 ? "AAAA" : "A"
            switch answers[family] {
            case .none:
                entry.notes.append("\(type) not looked up")
            case .temporaryFailure(let why):
                entry.notes.append("\(type) lookup failed: \(why)")
                add(.warning, "host-lookup-failed", subject: host, "\(type) lookup for \(host) failed: \(why)")
            case .noSuchDomain:
                nxdomain += 1
            case .noData:
                break
            case .records(let records, let canonicalName):
                if let canonicalName, canonicalName != host, entry.canonicalName == nil {
                    entry.canonicalName = canonicalName
                    add(
                        .warning, "mx-target-cname", subject: host,
                        "MX target \(host) is a CNAME for \(canonicalName) (RFC 2181 §10.3): some senders refuse it")
                }
                for record in records {
                    let address = record.address
                    let found = DomainAudit.addressFindings(address, options: options)
                    findings.append(contentsOf: found)
                    let audited = AuditedAddress(
                        address: address.description, family: family, addressClass: address.addressClass.rawValue,
                        warnings: found.filter { $0.severity >= .warning }.map(\.message), reachability: nil)
                    if family == .ipv6 { entry.ipv6.append(audited) } else { entry.ipv4.append(audited) }
                    if DomainAudit.isUsable(address, options) { usable.insert(family) }
                }
            }
        }
        entry.familyClass = MXFamilyClass(usable)
        if nxdomain == 2 {
            entry.notes.append("NXDOMAIN")
            if !implicit { add(.warning, "host-nxdomain", subject: host, "MX host \(host) does not exist (NXDOMAIN)") }
        } else if entry.ipv6.isEmpty && entry.ipv4.isEmpty && !entry.notes.contains(where: { $0.contains("failed") }) {
            if !implicit {
                add(.warning, "host-no-address", subject: host, "MX host \(host) has no AAAA and no A record")
            }
        } else if usable.isEmpty && !(entry.ipv6.isEmpty && entry.ipv4.isEmpty) {
            add(.warning, "host-no-usable-address", subject: host, "MX host \(host) has no usable address")
        }
        return entry
    }

    // MARK: - Unroutable combinations (RFC 3974 §4)

    private mutating func routability() {
        let named = entries.filter { !$0.notes.contains("numeric target") }
        if named.allSatisfy({ $0.familyClass == .noAddress }) {
            if source == "implicit mx" {
                add(
                    .problem, "no-mx-no-address",
                    "\(domain) has no MX records and no usable AAAA or A: no mail possible")
            } else {
                add(.problem, "no-usable-mx-address", "no MX host of \(domain) has a usable address: no mail possible")
            }
            return
        }
        // Ask the planner itself, as a single-family sender would.
        for (capability, family, label) in [
            (Capability.ipv4Only, AddressFamily.ipv4, "IPv4"), (Capability.ipv6Only, AddressFamily.ipv6, "IPv6"),
        ] {
            var context = DomainAudit.gatherContext(options)
            context.policy.capability = capability
            let plan = RoutePlanner.plan(.domain(domain), lookups: lookups, context: context)
            switch plan.verdict {
            case .deliver, .deliverLocally:
                break
            case .temporaryFailure(_, let reason):
                add(.warning, "undecided-\(family)-senders", "\(label)-only senders: could not decide (\(reason))")
            case .permanentFailure(_, let reason):
                add(
                    .problem, "unroutable-\(family)-senders",
                    "\(label)-only senders cannot deliver to \(domain): \(reason)")
            }
        }
        backups()
        bestLevel()
    }

    /// A backup MX relays upward only: it must share a family with some better MX (RFC 3974 §4).
    private mutating func backups() {
        guard let best = entries.map(\.preference).min() else { return }
        for backup in entries where backup.preference > best && backup.familyClass != .noAddress {
            let families = families(of: backup.familyClass)
            let better = entries.filter { $0.preference < backup.preference && $0.familyClass != .noAddress }
            guard !better.isEmpty else { continue }
            if better.contains(where: { !families.isDisjoint(with: self.families(of: $0.familyClass)) }) { continue }
            let list = better.map { "\($0.host) (\($0.preference), \($0.familyClass.rawValue))" }
                .joined(separator: ", ")
            add(
                .problem, "unroutable-backup", subject: backup.host,
                "backup MX \(backup.preference) \(backup.host) is \(backup.familyClass.rawValue) and cannot reach any "
                    + "better MX [\(list)]: mail it accepts is stuck until it expires and bounces (RFC 3974 §4)")
        }
    }

    private mutating func bestLevel() {
        guard let best = entries.filter({ $0.familyClass != .noAddress }).map(\.preference).min() else { return }
        let level = entries.filter { $0.preference == best }
        guard !level.contains(where: { $0.familyClass == .dualStack }) else { return }
        let covered = level.reduce(into: Set<AddressFamily>()) { $0.formUnion(families(of: $1.familyClass)) }
        let missing = [AddressFamily.ipv6, .ipv4].filter { !covered.contains($0) }
        let who =
            missing.isEmpty ? "" : ": \(missing.map(label).joined(separator: " and "))-only senders must use a backup"
        add(.warning, "no-dual-stack-best-mx", "no dual-stack MX at the best preference (\(best))\(who)")
    }

    private func families(of familyClass: MXFamilyClass) -> Set<AddressFamily> {
        switch familyClass {
        case .dualStack: return [.ipv4, .ipv6]
        case .ipv4Only: return [.ipv4]
        case .ipv6Only: return [.ipv6]
        case .noAddress: return []
        }
    }

    private func label(_ family: AddressFamily) -> String { family == .ipv6 ? "IPv6" : "IPv4" }

    // MARK: - SMTP reachability

    private mutating func applyProbes(_ probes: [IPAddress: ProbeResult]) {
        for index in entries.indices {
            for family in [AddressFamily.ipv6, .ipv4] {
                var list = family == .ipv6 ? entries[index].ipv6 : entries[index].ipv4
                for slot in list.indices {
                    guard let address = IPAddress(list[slot].address), let result = probes[address] else { continue }
                    list[slot].reachability = result
                    switch result.outcome {
                    case .ok, .skipped: break
                    default:
                        let message =
                            "\(entries[index].host) \(address.smtpLiteral):\(options.mxPort) does not "
                            + "answer SMTP: \(result.summary)"
                        list[slot].warnings.append(message)
                        add(.warning, "smtp-\(result.outcome.rawValue)", subject: address.description, message)
                    }
                }
                if family == .ipv6 { entries[index].ipv6 = list } else { entries[index].ipv4 = list }
            }
            compareEHLO(entries[index])
        }
    }

    /// Extensions that a dual-stack host announces over one family only (e.g. STARTTLS over IPv4 only).
    private mutating func compareEHLO(_ entry: AuditedMX) {
        func extensions(_ list: [AuditedAddress]) -> Set<String>? {
            let answers = list.compactMap { $0.reachability?.ehlo.map(Set.init) }
            guard let first = answers.first else { return nil }
            return answers.dropFirst().reduce(first) { $0.intersection($1) }
        }
        guard let v6 = extensions(entry.ipv6), let v4 = extensions(entry.ipv4), v6 != v4 else { return }
        let difference = EHLODifference(
            host: entry.host, onlyIPv6: v6.subtracting(v4).sorted(), onlyIPv4: v4.subtracting(v6).sorted())
        ehloDifferences.append(difference)
        var parts: [String] = []
        if !difference.onlyIPv6.isEmpty {
            parts.append("only over IPv6: \(difference.onlyIPv6.joined(separator: ", "))")
        }
        if !difference.onlyIPv4.isEmpty {
            parts.append("only over IPv4: \(difference.onlyIPv4.joined(separator: ", "))")
        }
        add(
            .warning, "ehlo-differs", subject: entry.host,
            "\(entry.host) answers EHLO differently by family: \(parts.joined(separator: "; "))")
    }

    /// Per family: addresses were probed but none answered 220.
    private mutating func reachability() {
        var answered = false
        for family in [AddressFamily.ipv6, .ipv4] {
            let probed = entries.flatMap { family == .ipv6 ? $0.ipv6 : $0.ipv4 }.compactMap(\.reachability)
                .filter { $0.outcome != .skipped }
            guard !probed.isEmpty else { continue }
            if probed.contains(where: { $0.outcome == .ok }) {
                answered = true
            } else {
                add(
                    .problem, "no-smtp-\(family)",
                    "no MX address of \(domain) answers SMTP over \(label(family)) (\(probed.count) tried)")
            }
        }
        let probedAny = entries.contains {
            ($0.ipv6 + $0.ipv4).contains { $0.reachability.map { $0.outcome != .skipped } ?? false }
        }
        if probedAny && !answered {
            add(.problem, "no-smtp-answer", "no MX address of \(domain) answers SMTP")
        }
    }

    // MARK: - Report

    private mutating func add(_ severity: AuditSeverity, _ code: String, subject: String? = nil, _ message: String) {
        findings.append(AuditFinding(severity, code, subject: subject, message))
    }

    func report() -> DomainAuditReport {
        let severity = findings.map(\.severity).max() ?? .note
        return DomainAuditReport(
            domain: domain, source: source, mx: entries, ehloDifferences: ehloDifferences, findings: findings,
            severity: severity, exitStatus: severity.exitStatus, verdict: verdict(severity))
    }

    private func verdict(_ severity: AuditSeverity) -> String {
        switch severity {
        case .problem:
            let first = findings.first { $0.severity == .problem }?.message ?? ""
            return "problems: \(domain): \(first) (\(DomainAudit.count(findings, .problem)), "
                + "\(DomainAudit.count(findings, .warning)))"
        case .warning:
            let first = findings.first { $0.severity == .warning }?.message ?? ""
            return "warnings: \(domain): \(first) (\(DomainAudit.count(findings, .warning)))"
        case .note:
            if let headline { return "ok: \(headline)" }
            let classes = Set(entries.map(\.familyClass))
            let stack =
                classes == [.dualStack] ? "all dual-stack" : classes.map(\.rawValue).sorted().joined(separator: ", ")
            let all = entries.flatMap { $0.ipv6 + $0.ipv4 }.compactMap(\.reachability).filter { $0.outcome != .skipped }
            let answering = all.filter { $0.outcome == .ok }.count
            let smtp = all.isEmpty ? "not probed" : "\(answering) of \(all.count) addresses answer SMTP"
            let hosts = "\(entries.count) MX host\(entries.count == 1 ? "" : "s")"
            return "ok: \(domain) takes mail over IPv4 and IPv6 (\(hosts), \(stack); \(smtp))"
        }
    }
}

extension DomainAuditReport {
    /// The human form `dualmta check` prints: each MX with its family class, each address with its class,
    /// reachability and warnings, EHLO differences, the domain and host findings, and the verdict.
    public var text: String {
        var lines = ["check \(domain) (\(source))"]
        let addressSubjects = Set(mx.flatMap { ($0.ipv6 + $0.ipv4).map(\.address) })
        for entry in mx {
            var line = "MX \(entry.preference) \(entry.host)"
            if entry.implicit { line += " (implicit)" }
            if entry.host != "." && !entry.notes.contains("numeric target") {
                line += ": \(entry.familyClass.rawValue)"
            }
            if let canonicalName = entry.canonicalName { line += ", CNAME for \(canonicalName)" }
            if !entry.notes.isEmpty { line += "  [\(entry.notes.joined(separator: "; "))]" }
            lines.append(line)
            for audited in entry.ipv6 + entry.ipv4 {
                let type = audited.family == .ipv6 ? "AAAA" : "A   "
                var row = "  \(type) \(audited.address.leftAligned(24))\(audited.addressClass.leftAligned(15))"
                row += audited.reachability?.summary ?? "not probed"
                lines.append(row)
                lines.append(contentsOf: audited.warnings.map { "       ! \($0)" })
            }
        }
        if !ehloDifferences.isEmpty {
            lines.append("EHLO differences:")
            for difference in ehloDifferences {
                var parts: [String] = []
                if !difference.onlyIPv6.isEmpty {
                    parts.append("only IPv6: \(difference.onlyIPv6.joined(separator: ", "))")
                }
                if !difference.onlyIPv4.isEmpty {
                    parts.append("only IPv4: \(difference.onlyIPv4.joined(separator: ", "))")
                }
                lines.append("  \(difference.host): \(parts.joined(separator: "; "))")
            }
        }
        let general = findings.filter { !addressSubjects.contains($0.subject ?? "") }
        if !general.isEmpty {
            lines.append("findings:")
            for finding in general {
                lines.append("  \(finding.severity.rawValue.leftAligned(8))\(finding.code): \(finding.message)")
            }
        }
        lines.append("verdict: \(verdict)")
        return lines.joined(separator: "\n") + "\n"
    }
}

extension String {
    /// Left-aligned in `width` columns, at least one space after.
    fileprivate func leftAligned(_ width: Int) -> String {
        count >= width ? self + " " : self + String(repeating: " ", count: width - count)
    }
}
