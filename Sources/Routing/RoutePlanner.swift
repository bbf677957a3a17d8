/// Routing: the pure RFC 3974 / RFC 5321 §5.1 outbound planner.
///
/// Input: a destination, the DNS answers gathered for it (`RouteLookups`, asked by `RouteResolver`), and plain
/// values for everything else (`RoutingContext`: identity, capability, static routes, transport cache, clock,
/// shuffle seed). Output: a `RoutePlan` — the exact ordered attempts (per preference level all addresses of the
/// preferred family, hosts in shuffled order, then the other family), everything skipped with its reason, and a
/// verdict. No I/O here: the same inputs always give the same plan, so `dualmta route` shows what delivery does.
///
/// Project choices:
/// - NXDOMAIN for the destination domain → permanent 5.1.2 ("bad destination system address", RFC 3463), not
///   Postfix's 5.4.4: the domain itself is wrong, nothing about routing.
/// - No address cap: every planned address is tried (Test 1 needs 6; a cap of 5 would cut it).
/// - Loopback addresses in DNS are skipped (unless `acceptLoopbackFromDNS`) or are self when we listen there.

import DNS
import NetAddress
import SMTPProtocol

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

public enum RoutePlanner {
    public static func plan(_ destination: Destination, lookups: RouteLookups, context: RoutingContext) -> RoutePlan {
        var work = PlanWork(context: context, lookups: lookups, destination: destination)
        work.run()
        return work.plan
    }
}

/// One next-hop host name with its preference and port.
struct Candidate {
    var host: String
    var preference: UInt16
    var port: UInt16
}

/// How one candidate host's address lookups came out, for the skipped list and the verdict.
enum HostOutcome: Equatable {
    case planned
    case softFailure
    case noSuchHost
    case noRecords
    case allDropped
}

/// What the candidate list stands for, to word the verdicts.
enum CandidateKind {
    case mx(String)
    case implicitMX(String)
    case routeTarget(String)

    /// `positive` follows "has" ("an AAAA or A record"); `noun` follows "no" ("AAAA or A record").
    func sentence(_ positive: String, _ noun: String) -> String {
        switch self {
        case .mx(let domain): return "no MX host for \(domain) has \(positive)"
        case .implicitMX(let domain): return "\(domain) has no MX records and no \(noun)"
        case .routeTarget(let host): return "route target \(host) has no \(noun)"
        }
    }
}

/// The mutable state of one planning run. Kept internal: `RoutePlanner.plan` is the only entry point.
struct PlanWork {
    let context: RoutingContext
    let lookups: RouteLookups
    let destination: Destination
    var plan: RoutePlan

    init(context: RoutingContext, lookups: RouteLookups, destination: Destination) {
        self.context = context
        self.lookups = lookups
        self.destination = destination
        let capability = context.policy.capability
        let summary =
            capability.usableFamilies.count == 2
            ? "\(capability.summary), \(capability.preferredFamily) first" : capability.summary
        plan = RoutePlan(destination: destination.description, source: "mx", capability: summary, verdict: .deliver)
    }

    private var identity: LocalIdentity { context.policy.identity }

    mutating func run() {
        switch destination {
        case .address(let address):
            plan.source = "address literal"
            // Mail to one of our own addresses is ours, whatever the port (the server accepts it as local too).
            if identity.addresses.contains(address) || identity.listeners.contains(where: { $0.address == address }) {
                plan.verdict = .deliverLocally
                return
            }
            planFixedEndpoint(
                Endpoint(address: address, port: context.policy.mxPort), label: address.smtpLiteral,
                loopMeansLocal: true)
        case .domain(let domain):
            if identity.isLocalDomain(domain) {
                plan.source = "local domain"
                plan.verdict = .deliverLocally
                return
            }
            if let route = context.policy.staticRoutes.route(for: domain) {
                plan.source = "static route \(route)"
                switch route.target {
                case .address(let address, let port):
                    planFixedEndpoint(
                        Endpoint(address: address, port: port ?? context.policy.mxPort), label: "[\(address)]",
                        loopMeansLocal: false)
                case .host(let host, let port):
                    plan.mxSet = [MXSetEntry(preference: 0, host: host, implicit: true)]
                    let candidate = Candidate(host: host, preference: 0, port: port ?? context.policy.mxPort)
                    planCandidates([candidate], kind: .routeTarget(host))
                }
                return
            }
            planMX(domain)
        }
    }

    // MARK: - MX answer: temporary failure, NXDOMAIN, no MX (implicit MX), null MX, or records

    private mutating func planMX(_ domain: String) {
        guard let answer = lookups.mx else {
            plan.verdict = .temporaryFailure(status: "4.4.3", reason: "no MX answer for \(domain) was gathered")
            return
        }
        switch answer {
        case .temporaryFailure(let why):
            // Never fall back to A/AAAA here: a failed MX lookup says nothing about MX absence.
            plan.verdict = .temporaryFailure(status: "4.4.3", reason: "MX lookup for \(domain) failed: \(why)")
        case .noSuchDomain:
            plan.verdict = .permanentFailure(status: "5.1.2", reason: "domain \(domain) does not exist (NXDOMAIN)")
        case .noData, .records([], _):
            plan.source = "implicit mx"
            plan.mxSet = [MXSetEntry(preference: 0, host: domain, implicit: true)]
            planCandidates(
                [Candidate(host: domain, preference: 0, port: context.policy.mxPort)], kind: .implicitMX(domain))
        case .records(let records, let canonicalName):
            if let canonicalName, canonicalName != domain {
                plan.warnings.append("\(domain) is a CNAME for \(canonicalName): its MX records are used")
            }
            planRecords(records, domain: domain)
        }
    }

    private mutating func planRecords(_ records: [MXRecord], domain: String) {
        if records.contains(where: \.isNullMX) {
            // RFC 7505; a "." among other records is malformed but still means "no mail" (Postfix-compatible).
            plan.mxSet = records.sorted { ($0.preference, $0.exchange) < ($1.preference, $1.exchange) }.map {
                MXSetEntry(
                    preference: $0.preference, host: $0.isNullMX ? "." : $0.exchange,
                    note: $0.isNullMX ? "null MX" : nil)
            }
            if records.count > 1 || records[0].preference != 0 {
                plan.warnings.append("invalid null MX set for \(domain): \".\" must be the only MX, preference 0")
            }
            plan.verdict = .permanentFailure(
                status: "5.1.10", reason: "recipient domain \(domain) has a null MX: it accepts no mail (RFC 7505)")
            return
        }
        var candidates: [Candidate] = []
        for record in sortedAndShuffled(records) {
            if isNumericTarget(record.exchange) {
                plan.mxSet.append(
                    MXSetEntry(preference: record.preference, host: record.exchange, note: "numeric target"))
                plan.skipped.append(SkippedEntry(record.exchange, "MX target is an IP address, not a host name"))
                plan.warnings.append(
                    "MX \(record.preference) \(record.exchange) of \(domain) is an IP address (invalid)")
                continue
            }
            plan.mxSet.append(MXSetEntry(preference: record.preference, host: record.exchange))
            candidates.append(
                Candidate(host: record.exchange, preference: record.preference, port: context.policy.mxPort))
        }
        planCandidates(candidates, kind: .mx(domain))
    }

    /// Preference ascending; equal preferences shuffled by the seed (RFC 5321 §5.1 MUST). The input is first
    /// sorted by name so the result depends only on the seed, not on the server's rotation. Duplicate exchanges
    /// keep their best preference.
    private func sortedAndShuffled(_ records: [MXRecord]) -> [MXRecord] {
        var best: [String: MXRecord] = [:]
        for record in records where best[record.exchange].map({ record.preference < $0.preference }) ?? true {
            best[record.exchange] = record
        }
        let sorted = best.values.sorted { ($0.preference, $0.exchange) < ($1.preference, $1.exchange) }
        var generator = SeededGenerator(seed: context.seed)
        var result: [MXRecord] = []
        var start = 0
        while start < sorted.count {
            var end = start
            while end < sorted.count && sorted[end].preference == sorted[start].preference { end += 1 }
            result.append(contentsOf: generator.shuffled(Array(sorted[start..<end])))
            start = end
        }
        return result
    }

    private func isNumericTarget(_ name: String) -> Bool {
        IPAddress(name) != nil || IPAddress(smtpLiteral: Substring(name)) != nil
            || (name.hasPrefix("[") && name.hasSuffix("]"))
    }

    // MARK: - Self pruning and address ordering

    private mutating func planCandidates(_ all: [Candidate], kind: CandidateKind) {
        var selfPreference: UInt16?
        var selfHow: [String: String] = [:]
        for candidate in all {
            if identity.isSelf(name: candidate.host) {
                selfHow[candidate.host] = "self (matched by name)"
            } else if let mine = allAddresses(of: candidate.host).first(where: {
                identity.isSelf(address: $0, port: candidate.port)
            }) {
                selfHow[candidate.host] = "self (matched by address \(mine))"
            } else {
                continue
            }
            selfPreference = min(selfPreference ?? candidate.preference, candidate.preference)
        }
        var candidates = all
        if let selfPreference {
            for index in plan.mxSet.indices where plan.mxSet[index].preference >= selfPreference {
                let entry = plan.mxSet[index]
                plan.mxSet[index].note =
                    selfHow[entry.host] ?? entry.note
                    ?? "pruned: preference \(entry.preference) ≥ self (\(selfPreference))"
            }
            candidates = all.filter { $0.preference < selfPreference }
            if candidates.isEmpty {
                let what = plan.source == "mx" ? "this host is the best MX" : "the next hop is this host"
                plan.verdict = .permanentFailure(
                    status: "5.4.6", reason: "mail for \(destination) loops back to myself (\(what))")
                return
            }
        }

        var attempts: [PlannedAttempt] = []
        var outcomes: [HostOutcome] = []
        var seen: Set<Endpoint> = []
        var index = 0
        while index < candidates.count {
            var end = index
            while end < candidates.count && candidates[end].preference == candidates[index].preference { end += 1 }
            let level = Array(candidates[index..<end])
            var planned: [String: Int] = [:]
            for family in context.policy.capability.familyOrder {
                for candidate in level {
                    for record in lookups.addresses(of: candidate.host)[family]?.records ?? [] {
                        let address = record.address
                        if let reason = dropReason(address) {
                            plan.skipped.append(SkippedEntry(address.description, reason))
                            continue
                        }
                        let endpoint = Endpoint(address: address, port: candidate.port)
                        guard seen.insert(endpoint).inserted else {
                            plan.skipped.append(SkippedEntry(address.description, "duplicate of an earlier attempt"))
                            continue
                        }
                        planned[candidate.host, default: 0] += 1
                        attempts.append(
                            PlannedAttempt(mxHost: candidate.host, preference: candidate.preference, endpoint: endpoint)
                        )
                    }
                }
            }
            for candidate in level {
                outcomes.append(report(candidate, plannedCount: planned[candidate.host] ?? 0))
            }
            index = end
        }

        guard !attempts.isEmpty else {
            plan.verdict = emptyVerdict(outcomes, kind: kind, prunedSelf: selfPreference != nil)
            return
        }
        applyTransportCache(&attempts)
    }

    /// Every address the lookups hold for a host, any family: self detection looks at all of them (an MX whose
    /// AAAA is ours but whose A is not is still self).
    private func allAddresses(of host: String) -> [IPAddress] {
        let answers = lookups.addresses(of: host)
        return (answers.ipv6?.records ?? []).map(\.address) + (answers.ipv4?.records ?? []).map(\.address)
    }

    private func dropReason(_ address: IPAddress) -> String? {
        let addressClass = address.addressClass
        if addressClass.isUnusableForDelivery { return "\(addressClass) address" }
        if addressClass == .loopback && !context.policy.acceptLoopbackFromDNS { return "loopback address in DNS" }
        return nil
    }

    /// Adds the host's skipped entries and classifies it.
    private mutating func report(_ candidate: Candidate, plannedCount: Int) -> HostOutcome {
        let host = candidate.host
        let answers = lookups.addresses(of: host)
        let families = context.policy.capability.familyOrder
        var soft: [String] = []
        var recordCount = 0
        var noSuchHost = !families.isEmpty
        for family in families {
            switch answers[family] {
            case .none: soft.append("\(recordType(family)) not looked up")
            case .temporaryFailure(let why): soft.append("\(recordType(family)) lookup failed: \(why)")
            case .records(let records, let canonicalName):
                recordCount += records.count
                if let canonicalName, canonicalName != host {
                    plan.warnings.append("\(host) is a CNAME for \(canonicalName) (RFC 2181 §10.3): followed")
                }
            case .noSuchDomain, .noData: break
            }
            if case .noSuchDomain = answers[family] {} else { noSuchHost = false }
        }
        if plannedCount > 0 {
            // A partial soft failure still matters to the log: one family may come back later.
            if !soft.isEmpty { plan.skipped.append(SkippedEntry(host, soft.joined(separator: "; "))) }
            return .planned
        }
        if !soft.isEmpty {
            plan.skipped.append(SkippedEntry(host, soft.joined(separator: "; ")))
            return .softFailure
        }
        if noSuchHost {
            plan.skipped.append(SkippedEntry(host, "host name does not exist (NXDOMAIN)"))
            return .noSuchHost
        }
        if recordCount > 0 {
            plan.skipped.append(SkippedEntry(host, "no usable address"))
            return .allDropped
        }
        plan.skipped.append(SkippedEntry(host, noRecordsReason()))
        return .noRecords
    }

    private func noRecordsReason() -> String {
        let usable = context.policy.capability.usableFamilies
        switch (usable.contains(.ipv4), usable.contains(.ipv6)) {
        case (true, true): return "no AAAA or A record"
        case (true, false): return "no A record and IPv6 not usable"
        case (false, true): return "no AAAA record and IPv4 not usable"
        case (false, false): return "no address family usable"
        }
    }

    private func recordType(_ family: AddressFamily) -> String { family == .ipv6 ? "AAAA" : "A" }

    /// The verdict when no address at all could be planned: every better MX was pruned as ourselves, or no host
    /// resolved to an address we can use. A failure that may go away later stays temporary.
    private func emptyVerdict(_ outcomes: [HostOutcome], kind: CandidateKind, prunedSelf: Bool) -> RouteVerdict {
        if prunedSelf {
            // We are a backup MX: the better hosts may come back, so never 5.4.6 and never bounce here.
            return .temporaryFailure(status: "4.4.4", reason: "unable to find primary relay for \(destination)")
        }
        func all(_ wanted: HostOutcome) -> Bool { !outcomes.isEmpty && outcomes.allSatisfy { $0 == wanted } }
        if outcomes.contains(.softFailure) {
            // "Soft error dominates": a host that may resolve later must not turn into a bounce.
            return .temporaryFailure(
                status: "4.4.3",
                reason: kind.sentence("a resolvable name", "resolvable name")
                    + " (temporary DNS failure)")
        }
        if outcomes.isEmpty {
            return .permanentFailure(status: "5.4.4", reason: kind.sentence("a valid host name", "valid host name"))
        }
        if all(.noSuchHost) {
            return .permanentFailure(
                status: "5.4.4",
                reason: kind.sentence("an existing name", "existing name")
                    + " (NXDOMAIN)")
        }
        if outcomes.contains(.noRecords) {
            let usable = context.policy.capability.usableFamilies
            if usable.count < 2 {
                let reason =
                    kind.sentence("an address of a usable family", "address of a usable family")
                    + " (this host is \(context.policy.capability.summary))"
                switch context.policy.familyMismatch {
                case .bounce: return .permanentFailure(status: "5.4.4", reason: reason)
                case .defer: return .temporaryFailure(status: "4.4.4", reason: reason)
                }
            }
            return .permanentFailure(status: "5.4.4", reason: kind.sentence("an AAAA or A record", "AAAA or A record"))
        }
        return .permanentFailure(status: "5.4.4", reason: kind.sentence("a usable address", "usable address"))
    }

    // MARK: - Address literals and static address routes

    private mutating func planFixedEndpoint(_ endpoint: Endpoint, label: String, loopMeansLocal: Bool) {
        plan.mxSet = [MXSetEntry(preference: 0, host: label, implicit: true)]
        if identity.isSelf(address: endpoint.address, port: endpoint.port) {
            if loopMeansLocal {
                // user@[our address] is addressed to us (RFC 5321 §4.1.3): local delivery.
                plan.verdict = .deliverLocally
            } else {
                plan.verdict = .permanentFailure(
                    status: "5.4.6", reason: "mail for \(destination) loops back to myself (route to \(endpoint))")
            }
            return
        }
        let family = endpoint.address.family
        guard context.policy.capability.usableFamilies.contains(family) else {
            let reason =
                "\(label) needs \(family == .ipv6 ? "IPv6" : "IPv4") (this host is \(context.policy.capability.summary))"
            plan.skipped.append(SkippedEntry(endpoint.address.description, "\(family) not usable"))
            switch context.policy.familyMismatch {
            case .bounce: plan.verdict = .permanentFailure(status: "5.4.4", reason: reason)
            case .defer: plan.verdict = .temporaryFailure(status: "4.4.4", reason: reason)
            }
            return
        }
        let addressClass = endpoint.address.addressClass
        if addressClass.isUnusableForDelivery {
            plan.skipped.append(SkippedEntry(endpoint.address.description, "\(addressClass) address"))
            plan.verdict = .permanentFailure(status: "5.4.4", reason: "\(label) is a \(addressClass) address")
            return
        }
        var attempts = [PlannedAttempt(mxHost: label, preference: 0, endpoint: endpoint)]
        applyTransportCache(&attempts)
    }

    // MARK: - Transport cache

    private mutating func applyTransportCache(_ attempts: inout [PlannedAttempt]) {
        let cache = context.transportCache
        let now = context.now
        if let success = cache.success(for: destination.description, now: now) {
            if let found = attempts.firstIndex(where: {
                $0.endpoint == success.endpoint && $0.mxHost == success.mxHost
            }) {
                // Front of its own level only: a worse preference never jumps ahead.
                let levelStart = attempts.firstIndex(where: { $0.preference == attempts[found].preference }) ?? found
                var moved = attempts.remove(at: found)
                moved.note = found == levelStart ? "cached transport" : "cached transport moved to front"
                attempts.insert(moved, at: levelStart)
            } else {
                plan.warnings.append(
                    "cached transport \(success.mxHost) \(success.endpoint) is no longer in the plan: ignored")
            }
        }
        let deadUntil = attempts.map { cache.deadUntil($0.endpoint, now: now) }
        if deadUntil.allSatisfy({ $0 != nil }) {
            // Deferring forever on stale knowledge is worse than one real try.
            if !attempts.isEmpty, deadUntil.contains(where: { $0 != nil }) {
                plan.warnings.append("every address is cached dead: trying them anyway")
                attempts[0].note = attempts[0].note ?? "negative cache ignored (every address cached dead)"
            }
            plan.attempts = attempts
            plan.verdict = .deliver
            return
        }
        var kept: [PlannedAttempt] = []
        for (attempt, until) in zip(attempts, deadUntil) {
            if let until {
                plan.skipped.append(
                    SkippedEntry(
                        attempt.address.description,
                        "cached dead until \(MailDate.iso8601(Int64(until.timeIntervalSince1970.rounded(.down))))"))
            } else {
                kept.append(attempt)
            }
        }
        plan.attempts = kept
        plan.verdict = .deliver
    }
}
