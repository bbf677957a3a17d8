import DNS
import Foundation
import NetAddress
import Routing
import Testing

/// Records the questions a resolver was asked, in order.
/// Confinement: `entries` is only touched while `lock` is held, so sharing across threads is safe.
final class QuestionLog: @unchecked Sendable {
    private let lock = NSLock()
    private var entries: [String] = []

    func append(_ question: String) {
        lock.lock()
        entries.append(question)
        lock.unlock()
    }

    var questions: [String] {
        lock.lock()
        defer { lock.unlock() }
        return entries
    }
}

/// A lab zone as a `DNSResolver`: answers from tables, records every question. A name with no entry at all is
/// NXDOMAIN; a known name without records of the asked type is NODATA.
struct LabZone: DNSResolver {
    var mxAnswers: [String: DNSAnswer<MXRecord>] = [:]
    var addressAnswers: [String: [AddressFamily: DNSAnswer<AddressRecord>]] = [:]
    let log = QuestionLog()

    func mx(_ name: String) -> DNSAnswer<MXRecord> {
        log.append("MX \(name)")
        if let answer = mxAnswers[name] { return answer }
        return addressAnswers[name] == nil ? .noSuchDomain : .noData
    }

    func addresses(_ name: String, family: AddressFamily) -> DNSAnswer<AddressRecord> {
        log.append("\(family == .ipv6 ? "AAAA" : "A") \(name)")
        if let answer = addressAnswers[name]?[family] { return answer }
        return addressAnswers[name] == nil && mxAnswers[name] == nil ? .noSuchDomain : .noData
    }

    /// `mx("example.test", (10, "mx10.example.test"), ...)`.
    func mx(_ name: String, _ records: (UInt16, String)...) -> LabZone {
        var copy = self
        copy.mxAnswers[name] = .records(
            records.map { MXRecord(preference: $0.0, exchange: $0.1) }, canonicalName: nil)
        return copy
    }

    func mxAnswer(_ name: String, _ answer: DNSAnswer<MXRecord>) -> LabZone {
        var copy = self
        copy.mxAnswers[name] = answer
        return copy
    }

    /// `host("mx10.example.test", "2001:db8:10::1", "192.0.2.11")`, answer order kept per family.
    func host(_ name: String, _ addresses: String...) -> LabZone {
        var copy = self
        var v4: [AddressRecord] = []
        var v6: [AddressRecord] = []
        for text in addresses {
            guard let address = IPAddress(text) else { continue }
            if address.family == .ipv4 {
                v4.append(AddressRecord(address: address))
            } else {
                v6.append(AddressRecord(address: address))
            }
        }
        var table: [AddressFamily: DNSAnswer<AddressRecord>] = [:]
        table[.ipv4] = v4.isEmpty ? .noData : .records(v4, canonicalName: nil)
        table[.ipv6] = v6.isEmpty ? .noData : .records(v6, canonicalName: nil)
        copy.addressAnswers[name] = table
        return copy
    }

    func hostAnswer(_ name: String, _ family: AddressFamily, _ answer: DNSAnswer<AddressRecord>) -> LabZone {
        var copy = self
        copy.addressAnswers[name, default: [:]][family] = answer
        return copy
    }
}

/// The paper's Test 1 zone. Computed: every use gets its own question log.
var test1Zone: LabZone {
    LabZone()
        .mx("example.test", (10, "mx10.example.test"), (20, "mx20.example.test"))
        .host("mx10.example.test", "2001:db8:10::1", "2001:db8:10::2", "2001:db8:10::3", "192.0.2.11", "192.0.2.12")
        .host("mx20.example.test", "2001:db8:20::1", "192.0.2.21")
}

/// The paper's Test 2 zone.
var test2Zone: LabZone {
    LabZone()
        .mx("example.test", (10, "mx10.example.test"), (20, "mx20.example.test"), (30, "mx30.example.test"))
        .host("mx10.example.test", "2001:db8:10::1", "192.0.2.10")
        .host("mx20.example.test", "2001:db8:20::1")
        .host("mx30.example.test", "2001:db8:30::1", "192.0.2.30")
}

/// A relay that is none of the MX hosts above, listening on port 25 on its own addresses.
let relayIdentity = LocalIdentity(
    hostname: "relay.lab.test", addresses: [ip("192.0.2.99"), ip("2001:db8:99::1")],
    listeners: [Endpoint(address: ip("0.0.0.0"), port: 25), Endpoint(address: ip("::"), port: 25)])

func ip(_ text: String) -> IPAddress {
    IPAddress(text) ?? .v4(IPv4Address(0, 0, 0, 0))
}

func context(
    _ capability: Capability = .dualStack, identity: LocalIdentity = relayIdentity, seed: UInt64 = 1,
    cache: TransportCache = TransportCache(), now: Date = Date(timeIntervalSince1970: 1_800_000_000)
) -> RoutingContext {
    RoutingContext(identity: identity, capability: capability, transportCache: cache, now: now, seed: seed)
}

/// Gathers through the zone and plans: the path delivery takes.
func route(_ destination: String, _ zone: LabZone, _ context: RoutingContext) throws -> RoutePlan {
    let parsed = try #require(Destination(parsing: destination))
    return RouteResolver(resolver: zone).plan(parsed, context: context)
}

extension RoutePlan {
    /// Attempt addresses as text, in order.
    var order: [String] { attempts.map(\.address.description) }
}
