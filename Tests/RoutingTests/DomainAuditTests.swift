import DNS
import NetAddress
import Routing
import Testing

/// `dualmta check` without I/O: zones in, findings and exit status out (RFC 3974 §4, RFC 7505).
@Suite struct DomainAuditTests {
    /// Gathers through the zone exactly as `ReadinessCheck` does, then audits.
    private func audit(
        _ zone: LabZone, _ domain: String = "example.test", probes: [IPAddress: ProbeResult]? = nil,
        options: AuditOptions = AuditOptions()
    ) -> DomainAuditReport {
        let lookups = RouteResolver(resolver: zone).gather(
            .domain(domain), context: DomainAudit.gatherContext(options))
        return DomainAudit.audit(domain: domain, lookups: lookups, probes: probes, options: options)
    }

    private func codes(_ report: DomainAuditReport, _ severity: AuditSeverity? = nil) -> Set<String> {
        Set(report.findings.filter { severity == nil || $0.severity == severity }.map(\.code))
    }

    private func finding(_ report: DomainAuditReport, _ code: String) -> AuditFinding? {
        report.findings.first { $0.code == code }
    }

    private static let ok = ProbeResult(outcome: .ok, milliseconds: 1, banner: "mx ESMTP", ehlo: ["8BITMIME"])

    private func allOK(_ report: DomainAuditReport) -> [IPAddress: ProbeResult] {
        Dictionary(
            uniqueKeysWithValues: DomainAudit.probeTargets(report, options: AuditOptions()).map { ($0, Self.ok) })
    }

    // MARK: - Family classes and the clean case

    @Test("All MX dual-stack, every address answers: exit 0, no warnings, verdict ok")
    func allDualStack() {
        let zone = test1Zone
        let dnsOnly = audit(zone)
        let targets = DomainAudit.probeTargets(dnsOnly, options: AuditOptions())
        #expect(targets.count == 7)
        let report = audit(zone, probes: allOK(dnsOnly))
        #expect(report.mx.map(\.familyClass) == [.dualStack, .dualStack])
        #expect(report.mx.map(\.preference) == [10, 20])
        #expect(report.mx[0].ipv6.map(\.address) == ["2001:db8:10::1", "2001:db8:10::2", "2001:db8:10::3"])
        #expect(report.mx[0].ipv4.allSatisfy { $0.reachability?.outcome == .ok })
        #expect(codes(report, .warning).isEmpty && codes(report, .problem).isEmpty)
        #expect(report.exitStatus == 0)
        #expect(report.verdict.hasPrefix("ok: example.test takes mail over IPv4 and IPv6"))
        #expect(report.verdict.contains("7 of 7 addresses answer SMTP"))
        // The lab's documentation addresses are notes, not warnings.
        #expect(report.mx[0].ipv4[0].addressClass == "documentation")
    }

    @Test(
        "Family class of one MX host",
        arguments: [
            (["2001:db8:1::1", "192.0.2.1"], MXFamilyClass.dualStack),
            (["192.0.2.1"], .ipv4Only),
            (["2001:db8:1::1"], .ipv6Only),
            (["fe80::1", "192.0.2.1"], .ipv4Only),  // the link-local AAAA does not count
            (["::ffff:192.0.2.1"], .noAddress),
        ])
    func familyClass(addresses: [String], expected: MXFamilyClass) {
        var zone = LabZone().mx("example.test", (10, "mx.example.test"))
        for family in [AddressFamily.ipv4, .ipv6] {
            let records = addresses.compactMap(IPAddress.init).filter { $0.family == family }.map {
                AddressRecord(address: $0)
            }
            zone = zone.hostAnswer(
                "mx.example.test", family, records.isEmpty ? .noData : .records(records, canonicalName: nil))
        }
        let report = audit(zone)
        #expect(report.mx.first?.familyClass == expected)
    }

    // MARK: - Unroutable configurations (RFC 3974 §4)

    @Test("Best MX IPv4-only, backup IPv6-only: the backup cannot relay upward (exit 2)")
    func ipv4BestIPv6Backup() throws {
        let zone = LabZone().mx("example.test", (10, "mx10.example.test"), (20, "mx20.example.test"))
            .host("mx10.example.test", "192.0.2.10").host("mx20.example.test", "2001:db8:20::1")
        let report = audit(zone)
        let stuck = try #require(finding(report, "unroutable-backup"))
        #expect(stuck.severity == .problem && stuck.subject == "mx20.example.test")
        #expect(stuck.message.contains("mx10.example.test (10, IPv4-only)"))
        #expect(codes(report).contains("no-dual-stack-best-mx"))
        // Each single-family sender still finds some MX: no sender-level finding.
        #expect(
            !codes(report).contains("unroutable-ipv4-senders") && !codes(report).contains("unroutable-ipv6-senders"))
        #expect(report.exitStatus == 2)
        #expect(report.verdict.hasPrefix("problems: example.test: backup MX 20 mx20.example.test is IPv6-only"))
    }

    @Test("Mirror: best MX IPv6-only, backup IPv4-only (exit 2)")
    func ipv6BestIPv4Backup() {
        let zone = LabZone().mx("example.test", (10, "mx10.example.test"), (20, "mx20.example.test"))
            .host("mx10.example.test", "2001:db8:10::1").host("mx20.example.test", "192.0.2.20")
        let report = audit(zone)
        #expect(finding(report, "unroutable-backup")?.subject == "mx20.example.test")
        #expect(report.exitStatus == 2)
    }

    @Test("Recommended order IPv6-only < dual-stack < IPv4-only: every backup reaches a better MX (exit 1 only)")
    func recommendedOrder() {
        let zone = LabZone()
            .mx("example.test", (10, "v6.example.test"), (20, "dual.example.test"), (30, "v4.example.test"))
            .host("v6.example.test", "2001:db8:10::1").host("dual.example.test", "2001:db8:20::1", "192.0.2.20")
            .host("v4.example.test", "192.0.2.30")
        let report = audit(zone)
        #expect(!codes(report).contains("unroutable-backup"))
        #expect(codes(report, .problem).isEmpty)
        // Still no dual-stack host at the best preference: IPv4-only senders start at a backup.
        #expect(finding(report, "no-dual-stack-best-mx")?.message.contains("IPv4-only senders") == true)
        #expect(report.exitStatus == 1)
    }

    @Test(
        "Every MX of one family: the other family's senders cannot deliver",
        arguments: [
            ("2001:db8:10::1", "unroutable-ipv4-senders", "IPv4-only senders"),
            ("192.0.2.10", "unroutable-ipv6-senders", "IPv6-only senders"),
        ])
    func singleFamilyDomain(address: String, code: String, who: String) throws {
        let zone = LabZone().mx("example.test", (10, "mx10.example.test"), (20, "mx20.example.test"))
            .host("mx10.example.test", address).host("mx20.example.test", address)
        let report = audit(zone)
        let problem = try #require(finding(report, code))
        #expect(problem.severity == .problem && problem.message.hasPrefix(who))
        // The reason is the planner's own: the same words delivery would bounce with.
        #expect(problem.message.contains("no MX host for example.test has an address of a usable family"))
        #expect(report.exitStatus == 2)
    }

    @Test("No MX and no address: one problem, no sender-level duplicates")
    func noMXNoAddress() {
        let zone = LabZone().hostAnswer("example.test", .ipv4, .noData).hostAnswer("example.test", .ipv6, .noData)
        let report = audit(zone)
        #expect(report.source == "implicit mx")
        #expect(codes(report, .problem) == ["no-mx-no-address"])
        #expect(report.exitStatus == 2)
    }

    @Test("Implicit MX with both families: a note, exit 0")
    func implicitMX() {
        let zone = LabZone().host("example.test", "2001:db8::25", "192.0.2.25")
        let report = audit(zone)
        #expect(report.mx.count == 1 && report.mx[0].implicit && report.mx[0].familyClass == .dualStack)
        #expect(codes(report) == ["implicit-mx", "address-documentation"])
        #expect(report.exitStatus == 0)
    }

    @Test("NXDOMAIN and a failed MX lookup are problems; nothing else is asked")
    func dnsFailures() {
        let missing = audit(LabZone(), "nosuch.test")
        #expect(codes(missing) == ["no-such-domain"] && missing.exitStatus == 2)
        let zone = LabZone().mxAnswer("example.test", .temporaryFailure("SERVFAIL"))
        let failed = audit(zone)
        #expect(codes(failed) == ["dns-failure"] && failed.exitStatus == 2)
        #expect(zone.log.questions == ["MX example.test"])
    }

    // MARK: - Null MX (RFC 7505)

    @Test("Null MX alone is a note; mixed with other MX it is a problem; with a preference it is a warning")
    func nullMX() {
        let alone = audit(LabZone().mx("example.test", (0, ".")))
        #expect(alone.source == "null mx" && codes(alone) == ["null-mx"] && alone.exitStatus == 0)
        #expect(alone.verdict == "ok: example.test accepts no mail (null MX)")
        #expect(DomainAudit.probeTargets(alone, options: AuditOptions()).isEmpty)

        let zone = LabZone().mx("example.test", (0, "."), (10, "mx.example.test")).host("mx.example.test", "192.0.2.1")
        let mixed = audit(zone)
        #expect(codes(mixed) == ["null-mx-mixed"] && mixed.exitStatus == 2)
        #expect(mixed.mx.map(\.host) == [".", "mx.example.test"])
        // Like delivery: no address question once the null MX is seen, so nothing to connect to.
        #expect(!zone.log.questions.contains { $0.hasPrefix("A") })

        let preferred = audit(LabZone().mx("example.test", (10, ".")))
        #expect(codes(preferred) == ["null-mx-preference"] && preferred.exitStatus == 1)
    }

    // MARK: - MX targets

    @Test("An MX target that is an IP address is a problem and is never resolved or probed")
    func numericTarget() {
        let zone = LabZone().mx("example.test", (10, "192.0.2.1"), (20, "mx.example.test"))
            .host("mx.example.test", "2001:db8::1", "192.0.2.2")
        let report = audit(zone)
        #expect(finding(report, "mx-target-ip")?.subject == "192.0.2.1")
        #expect(report.mx[0].notes == ["numeric target"])
        #expect(
            DomainAudit.probeTargets(report, options: AuditOptions()).map(\.description) == [
                "2001:db8::1", "192.0.2.2",
            ])
        #expect(!zone.log.questions.contains("A 192.0.2.1"))
        #expect(report.exitStatus == 2)
    }

    @Test("An MX target that is a CNAME is a warning naming the canonical name")
    func cnameTarget() {
        let zone = LabZone().mx("example.test", (10, "mail.example.test"))
            .hostAnswer(
                "mail.example.test", .ipv6,
                .records([AddressRecord(address: ip("2001:db8::1"))], canonicalName: "real.example.test")
            )
            .hostAnswer(
                "mail.example.test", .ipv4,
                .records([AddressRecord(address: ip("192.0.2.1"))], canonicalName: "real.example.test"))
        let report = audit(zone)
        let warning = finding(report, "mx-target-cname")
        #expect(warning?.severity == .warning && warning?.message.contains("real.example.test") == true)
        #expect(report.mx[0].canonicalName == "real.example.test")
        #expect(report.exitStatus == 1)
    }

    @Test("An MX host without any address record is a warning; when it is the only MX it is a problem")
    func hostWithoutAddress() {
        let zone = LabZone().mx("example.test", (10, "bare.example.test"), (20, "mx.example.test"))
            .host("bare.example.test").host("mx.example.test", "2001:db8::1", "192.0.2.1")
        let report = audit(zone)
        #expect(finding(report, "host-no-address")?.subject == "bare.example.test")
        #expect(report.mx[0].familyClass == .noAddress)
        #expect(report.exitStatus == 1)

        let only = audit(LabZone().mx("example.test", (10, "bare.example.test")).host("bare.example.test"))
        #expect(codes(only, .problem) == ["no-usable-mx-address"])
    }

    // MARK: - Address classes

    @Test(
        "Each flagged address class with its severity and what the message must show",
        arguments: [
            ("2002:c000:204::1", "address-6to4", AuditSeverity.warning, "embedded IPv4 192.0.2.4"),
            // Teredo: server 65.54.227.120, client 192.0.2.45 (XOR-obfuscated as 3fff:fdd2), port 40000.
            (
                "2001:0:4136:e378:8000:63bf:3fff:fdd2", "address-teredo", .problem,
                "server IPv4 65.54.227.120, client IPv4 192.0.2.45 port 40000"
            ),
            ("2001:db8::200:5efe:c000:221", "address-isatap", .warning, "IPv4 192.0.2.33"),
            ("64:ff9b::c000:221", "address-nat64", .warning, "for IPv4 192.0.2.33"),
            ("64:ff9b:1:c000:2:2100::", "address-nat64", .warning, "for IPv4 192.0.2.33"),
            ("::ffff:192.0.2.1", "address-ipv4-mapped", .problem, "(192.0.2.1)"),
            ("::192.0.2.1", "address-ipv4-compatible", .problem, "deprecated"),
            ("fe80::1", "address-link-local", .problem, "zone index"),
            ("fec0::1", "address-site-local", .problem, "RFC 3879"),
            ("ff02::1", "address-multicast", .problem, "multicast"),
            ("::1", "address-loopback", .problem, "loopback"),
            ("::", "address-unspecified", .problem, "unspecified"),
            ("fd00::25", "address-unique-local", .warning, "not reachable from the Internet"),
            // 3ffe::/16 (6bone) is not listed: NetAddress classifies it as documentation (its 3fff::/20 mask is
            // 3ff0::/12); reported to the lead.
            ("2001:2::1", "address-reserved", .problem, "reserved"),
            ("100::1", "address-reserved", .problem, "reserved"),
            ("2001:db8::25", "address-documentation", .note, "fine in a lab"),
            ("10.0.0.25", "address-private", .warning, "RFC 1918"),
            ("100.64.0.25", "address-shared-address-space", .warning, "CGN"),
            ("169.254.0.25", "address-link-local", .problem, "169.254/16"),
            ("127.0.0.1", "address-loopback", .problem, "loopback"),
            ("0.0.0.0", "address-unspecified", .problem, "reserved IPv4"),
            ("240.0.0.1", "address-reserved-ipv4", .problem, "reserved IPv4"),
            ("203.0.113.25", "address-documentation", .note, "fine in a lab"),
        ])
    func addressClass(text: String, code: String, severity: AuditSeverity, shows: String) throws {
        let address = try #require(IPAddress(text))
        let found = DomainAudit.addressFindings(address, options: AuditOptions())
        let match = try #require(found.first { $0.code == code }, "\(found)")
        #expect(match.severity == severity)
        #expect(match.message.contains(shows), "\(match.message)")
        #expect(match.subject == address.description)
    }

    @Test("Plain global addresses raise nothing")
    func globalAddresses() throws {
        for text in ["2a00:1450:4001::1b", "93.184.216.34"] {
            #expect(DomainAudit.addressFindings(try #require(IPAddress(text)), options: AuditOptions()).isEmpty)
        }
    }

    @Test("Internet mode: documentation addresses become problems")
    func internetMode() throws {
        let found = DomainAudit.addressFindings(ip("2001:db8::25"), options: AuditOptions(internet: true))
        #expect(found.map(\.severity) == [.problem])
        let report = audit(test2Zone, options: AuditOptions(internet: true))
        #expect(report.exitStatus == 2)
    }

    @Test("An AAAA in 2002::/16 beside a working dual-stack backup: warning (exit 1) naming the embedded IPv4")
    func sixToFourInZone() throws {
        let zone = LabZone().mx("example.test", (10, "tunnel.example.test"), (20, "mx.example.test"))
            .host("tunnel.example.test", "2002:c000:204::25").host("mx.example.test", "2001:db8::1", "192.0.2.1")
        let report = audit(zone)
        let warning = try #require(finding(report, "address-6to4"))
        #expect(warning.subject == "2002:c000:204::25" && warning.message.contains("192.0.2.4"))
        #expect(report.mx[0].ipv6[0].warnings == [warning.message])
        #expect(report.mx[0].ipv6[0].addressClass == "6to4")
        // 6to4 is still usable (the router tries it), so it is probed.
        #expect(DomainAudit.probeTargets(report, options: AuditOptions()).contains(ip("2002:c000:204::25")))
        #expect(report.exitStatus == 1)
    }

    @Test("Unusable and loopback addresses are never probed (loopback only with allow_loopback_mx)")
    func probeTargetsSkipUnusable() {
        let zone = LabZone().mx("example.test", (10, "mx.example.test"))
            .host("mx.example.test", "fe80::1", "::ffff:192.0.2.1", "ff02::1", "::1", "127.0.0.1", "192.0.2.1")
        let report = audit(zone)
        #expect(DomainAudit.probeTargets(report, options: AuditOptions()) == [ip("192.0.2.1")])
        let lab = AuditOptions(acceptLoopback: true)
        #expect(
            DomainAudit.probeTargets(audit(zone, options: lab), options: lab) == [
                ip("::1"), ip("127.0.0.1"), ip("192.0.2.1"),
            ])
    }

    // MARK: - Reachability and EHLO

    @Test("Probe failures: one dead address is a warning; a family with no answer at all is a problem")
    func reachability() throws {
        let dnsOnly = audit(test2Zone)
        var probes = allOK(dnsOnly)
        probes[ip("192.0.2.10")] = ProbeResult(
            outcome: .refused, milliseconds: 1, detail: "connect: Connection refused")
        let oneDead = audit(test2Zone, probes: probes)
        let warning = try #require(finding(oneDead, "smtp-refused"))
        #expect(warning.subject == "192.0.2.10" && warning.message.contains("[192.0.2.10]:25"))
        #expect(oneDead.mx[0].ipv4[0].reachability?.outcome == .refused)
        #expect(oneDead.exitStatus == 1)

        for address in DomainAudit.probeTargets(dnsOnly, options: AuditOptions()) where address.family == .ipv6 {
            probes[address] = ProbeResult(outcome: .timeout, milliseconds: 5000)
        }
        let noIPv6 = audit(test2Zone, probes: probes)
        #expect(codes(noIPv6, .problem) == ["no-smtp-ipv6"])
        #expect(noIPv6.exitStatus == 2)
    }

    @Test("Skipped probes (family off in inet_protocols) raise nothing")
    func skippedProbes() {
        let dnsOnly = audit(test1Zone)
        var probes = allOK(dnsOnly)
        for address in probes.keys where address.family == .ipv6 {
            probes[address] = ProbeResult(outcome: .skipped, detail: "IPv6 not enabled in inet_protocols")
        }
        let report = audit(test1Zone, probes: probes)
        #expect(report.exitStatus == 0)
        #expect(report.verdict.contains("3 of 3 addresses answer SMTP"))
    }

    @Test("EHLO answers that differ between a host's families are a warning, listed per family")
    func ehloDifferences() throws {
        let zone = LabZone().mx("example.test", (10, "mx.example.test")).host(
            "mx.example.test", "2001:db8::1", "192.0.2.1")
        let probes: [IPAddress: ProbeResult] = [
            ip("2001:db8::1"): ProbeResult(outcome: .ok, ehlo: ["8BITMIME", "SIZE 1000"]),
            ip("192.0.2.1"): ProbeResult(outcome: .ok, ehlo: ["8BITMIME", "STARTTLS", "SIZE 1000"]),
        ]
        let report = audit(zone, probes: probes)
        let difference = try #require(report.ehloDifferences.first)
        #expect(
            difference.host == "mx.example.test" && difference.onlyIPv4 == ["STARTTLS"] && difference.onlyIPv6.isEmpty)
        #expect(finding(report, "ehlo-differs")?.message.contains("only over IPv4: STARTTLS") == true)
        #expect(report.exitStatus == 1)
        #expect(report.text.contains("EHLO differences:\n  mx.example.test: only IPv4: STARTTLS"))
    }

    // MARK: - Exit status and output

    @Test(
        "Exit status is the worst severity",
        arguments: [
            ([AuditSeverity](), Int32(0)), ([.note], Int32(0)), ([.note, .warning], Int32(1)),
            ([.warning, .problem, .note], Int32(2)),
        ])
    func exitStatus(severities: [AuditSeverity], expected: Int32) {
        #expect((severities.max() ?? .note).exitStatus == expected)
    }

    @Test("The text names each MX, its family class, each address with class and reachability, and the verdict")
    func text() {
        let zone = LabZone().mx("example.test", (10, "mx10.example.test"), (20, "mx20.example.test"))
            .host("mx10.example.test", "192.0.2.10").host("mx20.example.test", "2001:db8:20::1")
        let probes: [IPAddress: ProbeResult] = [
            ip("192.0.2.10"): ProbeResult(outcome: .ok, milliseconds: 3, banner: "mx10 ESMTP", ehlo: []),
            ip("2001:db8:20::1"): ProbeResult(
                outcome: .unreachable, milliseconds: 0, detail: "connect: No route to host"),
        ]
        let lines = audit(zone, probes: probes).text.split(separator: "\n").map(String.init)
        #expect(lines.first == "check example.test (mx)")
        #expect(lines.contains("MX 10 mx10.example.test: IPv4-only"))
        #expect(lines.contains { $0.hasPrefix("  A    192.0.2.10") && $0.hasSuffix("ok 3 ms \"mx10 ESMTP\"") })
        #expect(
            lines.contains {
                $0.hasPrefix("  AAAA 2001:db8:20::1") && $0.contains("unreachable 0 ms: connect: No route")
            })
        #expect(lines.contains { $0.hasPrefix("  problem unroutable-backup: backup MX 20 mx20.example.test") })
        #expect(lines.last?.hasPrefix("verdict: problems: example.test:") == true)
    }
}
