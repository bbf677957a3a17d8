import DNS
import Foundation
import Logging
import NetAddress
import Testing

@testable import Routing

/// The live router with a lab resolver and fixed clock values: plans, the transport cache it learns from delivery,
/// and the cache file that survives a restart.
@Suite struct RouterTests {
    static let zone = LabZone()
        .mx("example.test", (10, "mx10.example.test"), (20, "mx20.example.test"))
        .host("mx10.example.test", "2001:db8:10::1", "192.0.2.10")
        .host("mx20.example.test", "2001:db8:20::1")
    static let policy = RoutingPolicy(identity: LocalIdentity(hostname: "mta.lab.test"))
    static let start = Date(timeIntervalSince1970: 1_800_000_000)

    static func router(cacheFile: String? = nil) -> Router {
        Router(
            policy: policy, resolver: zone, transportCacheTTL: .seconds(3600), negativeCacheTTL: .seconds(60),
            cacheFile: cacheFile, logger: Logger(label: "test"))
    }

    static func order(_ router: Router, at date: Date) -> [String] {
        router.plan(.domain("example.test"), now: date, seed: 1).attempts.map { "\($0.address)" }
    }

    @Test func plansAllAAAAThenAllAPerPreference() {
        #expect(Self.order(Self.router(), at: Self.start) == ["2001:db8:10::1", "192.0.2.10", "2001:db8:20::1"])
    }

    @Test func anAddressThatWorkedGoesFirstInItsLevelUntilTheTTLEnds() {
        let router = Self.router()
        router.recordSuccess(
            destination: "example.test", mxHost: "mx10.example.test",
            endpoint: Endpoint(address: IPAddress("192.0.2.10")!, port: 25), now: Self.start)
        #expect(Self.order(router, at: Self.start + 10) == ["192.0.2.10", "2001:db8:10::1", "2001:db8:20::1"])
        #expect(Self.order(router, at: Self.start + 3601) == ["2001:db8:10::1", "192.0.2.10", "2001:db8:20::1"])
    }

    @Test func anAddressThatRefusedIsSkippedForTheNegativeTTL() {
        let router = Self.router()
        router.recordFailure(
            endpoint: Endpoint(address: IPAddress("2001:db8:10::1")!, port: 25), reason: "Connection refused",
            now: Self.start)
        let plan = router.plan(.domain("example.test"), now: Self.start + 30, seed: 1)
        #expect(plan.attempts.map { "\($0.address)" } == ["192.0.2.10", "2001:db8:20::1"])
        #expect(plan.skipped.contains { $0.subject == "2001:db8:10::1" && $0.reason.hasPrefix("cached dead until") })
        #expect(Self.order(router, at: Self.start + 61).first == "2001:db8:10::1")
    }

    @Test func theCacheFileSurvivesARestart() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("router-\(UUID())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("transport-cache.json").path
        Self.router(cacheFile: file).recordSuccess(
            destination: "example.test", mxHost: "mx10.example.test",
            endpoint: Endpoint(address: IPAddress("192.0.2.10")!, port: 25), now: Date())
        #expect(Self.order(Self.router(cacheFile: file), at: Date()).first == "192.0.2.10")
    }

    @Test func theResolverIsAskedForTheMXThenEachHostsAddresses() {
        let zone = LabZone().mx("example.test", (10, "mx10.example.test")).host("mx10.example.test", "192.0.2.10")
        let router = Router(
            policy: Self.policy, resolver: zone, transportCacheTTL: .seconds(1), negativeCacheTTL: .seconds(1),
            cacheFile: nil, logger: Logger(label: "test"))
        _ = router.plan(.domain("example.test"), now: Self.start)
        #expect(zone.log.questions.first == "MX example.test")
        #expect(Set(zone.log.questions.dropFirst()) == ["AAAA mx10.example.test", "A mx10.example.test"])
    }
}
