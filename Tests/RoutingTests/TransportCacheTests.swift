import DNS
import Foundation
import NetAddress
import Routing
import Testing

/// The transport cache as a value, and how the planner uses it (RFC 5321 §4.5.4.1; the paper's
/// Test 1 with a cache).
@Suite struct TransportCacheTests {
    let now = Date(timeIntervalSince1970: 1_800_000_000)  // 2027-01-15T08:00:00Z

    static var sameLevelZone: LabZone {
        LabZone()
            .mx("example.test", (10, "a.example.test"), (10, "b.example.test"), (20, "c.example.test"))
            .host("a.example.test", "2001:db8:a::1", "192.0.2.1")
            .host("b.example.test", "2001:db8:b::1", "192.0.2.2")
            .host("c.example.test", "2001:db8:c::1", "192.0.2.3")
    }

    func endpoint(_ text: String, _ port: UInt16 = 25) -> Endpoint { Endpoint(address: ip(text), port: port) }

    @Test("renewing the same transport keeps its expiry: the preferred family returns after the TTL")
    func renewalDoesNotExtendTheTTL() {
        var cache = TransportCache()
        let start = Date(timeIntervalSince1970: 1_000)
        let v4 = endpoint("192.0.2.50")
        cache.recordSuccess(destination: "example.test", mxHost: "mx", endpoint: v4, now: start, ttl: 6)
        cache.recordSuccess(destination: "example.test", mxHost: "mx", endpoint: v4, now: start + 4, ttl: 6)
        #expect(cache.success(for: "example.test", now: start + 5)?.endpoint == v4)
        #expect(cache.success(for: "example.test", now: start + 6.5) == nil)
        // A different transport starts its own TTL.
        let v6 = endpoint("2001:db8::25")
        cache.recordSuccess(destination: "example.test", mxHost: "mx", endpoint: v6, now: start + 7, ttl: 6)
        #expect(cache.success(for: "example.test", now: start + 12)?.endpoint == v6)
    }

    @Test("T1.14 a cached success on b (same level as a) puts b's address first", arguments: UInt64(0)..<4)
    func t1_14SameLevel(seed: UInt64) throws {
        var cache = TransportCache()
        cache.recordSuccess(
            destination: "example.test", mxHost: "b.example.test", endpoint: endpoint("192.0.2.2"), now: now,
            ttl: 3600)
        let plan = try route("example.test", Self.sameLevelZone, context(seed: seed, cache: cache, now: now))
        #expect(plan.attempts.first?.address == ip("192.0.2.2"))
        #expect(plan.attempts.first?.note == "cached transport moved to front")
        #expect(plan.attempts.count == 6)
        #expect(plan.attempts.suffix(2).allSatisfy { $0.mxHost == "c.example.test" })
    }

    @Test("T1.14 a cached success on c (preference 20) never jumps ahead of a and b")
    func t1_14WorseLevel() throws {
        var cache = TransportCache()
        cache.recordSuccess(
            destination: "example.test", mxHost: "c.example.test", endpoint: endpoint("192.0.2.3"), now: now,
            ttl: 3600)
        let plan = try route("example.test", Self.sameLevelZone, context(cache: cache, now: now))
        #expect(plan.attempts.prefix(4).allSatisfy { $0.preference == 10 })
        #expect(plan.order.suffix(2) == ["192.0.2.3", "2001:db8:c::1"])
        #expect(plan.attempts[4].note == "cached transport moved to front")
    }

    @Test("T10.1.3 after Test 1: mx10 skipped as cached dead, mx20 first; after the TTL mx10 is first again")
    func t10_1_3() throws {
        var cache = TransportCache()
        for dead in ["2001:db8:10::1", "2001:db8:10::2", "2001:db8:10::3", "192.0.2.11", "192.0.2.12"] {
            cache.recordFailure(endpoint: endpoint(dead), now: now, ttl: 300, reason: "No route to host")
        }
        cache.recordSuccess(
            destination: "example.test", mxHost: "mx20.example.test", endpoint: endpoint("2001:db8:20::1"), now: now,
            ttl: 3600)
        #expect(cache.success(for: "example.test", now: now)?.family == .ipv6)

        let soon = try route("example.test", test1Zone, context(cache: cache, now: now.addingTimeInterval(60)))
        #expect(soon.order == ["2001:db8:20::1", "192.0.2.21"])
        #expect(soon.skipped.count == 5)
        #expect(soon.skipped.first == SkippedEntry("2001:db8:10::1", "cached dead until 2027-01-15T08:05:00Z"))

        let later = try route("example.test", test1Zone, context(cache: cache, now: now.addingTimeInterval(301)))
        #expect(Array(later.order.prefix(3)) == ["2001:db8:10::1", "2001:db8:10::2", "2001:db8:10::3"])
        #expect(later.skipped.isEmpty)
    }

    @Test("every address cached dead: one real try of the whole plan instead of deferring forever")
    func allDead() throws {
        var cache = TransportCache()
        for dead in [
            "2001:db8:20::1", "192.0.2.21", "2001:db8:10::1", "2001:db8:10::2", "2001:db8:10::3",
            "192.0.2.11", "192.0.2.12",
        ] {
            cache.recordFailure(endpoint: endpoint(dead), now: now, ttl: 300)
        }
        let plan = try route("example.test", test1Zone, context(cache: cache, now: now))
        #expect(plan.verdict == .deliver)
        #expect(plan.attempts.count == 7)
        #expect(plan.warnings == ["every address is cached dead: trying them anyway"])
    }

    @Test("a cached transport that DNS no longer lists is ignored")
    func staleSuccess() throws {
        var cache = TransportCache()
        cache.recordSuccess(
            destination: "example.test", mxHost: "old.example.test", endpoint: endpoint("192.0.2.200"), now: now,
            ttl: 3600)
        let plan = try route("example.test", test1Zone, context(cache: cache, now: now))
        #expect(plan.order.first == "2001:db8:10::1")
        #expect(plan.warnings == ["cached transport old.example.test 192.0.2.200:25 is no longer in the plan: ignored"])
    }

    @Test("the cache never overrides a null MX or self pruning")
    func neverOverrides() throws {
        var cache = TransportCache()
        cache.recordSuccess(
            destination: "example.test", mxHost: "mx30.example.test", endpoint: endpoint("192.0.2.30"), now: now,
            ttl: 3600)
        let mx30 = LocalIdentity(
            hostname: "mx30.example.test", addresses: [ip("192.0.2.30")],
            listeners: [Endpoint(address: ip("0.0.0.0"), port: 25)])
        let pruned = try route("example.test", test2Zone, context(identity: mx30, cache: cache, now: now))
        #expect(!pruned.order.contains("192.0.2.30"))
        let nullMX = LabZone().mx("example.test", (0, "."))
        #expect(try route("example.test", nullMX, context(cache: cache, now: now)).verdict.status == "5.1.10")
    }

    @Test("expired entries are not used and prune drops them; success clears the endpoint's failure")
    func expiry() {
        var cache = TransportCache()
        cache.recordFailure(endpoint: endpoint("192.0.2.1"), now: now, ttl: 60)
        cache.recordSuccess(
            destination: "Example.Test.", mxHost: "a.example.test", endpoint: endpoint("192.0.2.2"), now: now, ttl: 60)
        #expect(cache.deadUntil(endpoint("192.0.2.1"), now: now) == now.addingTimeInterval(60))
        #expect(cache.deadUntil(endpoint("192.0.2.1", 2525), now: now) == nil)
        #expect(cache.success(for: "example.test", now: now)?.mxHost == "a.example.test")
        #expect(cache.success(for: "example.test", now: now.addingTimeInterval(61)) == nil)
        cache.recordSuccess(
            destination: "other.test", mxHost: "a.example.test", endpoint: endpoint("192.0.2.1"), now: now, ttl: 60)
        #expect(cache.deadUntil(endpoint("192.0.2.1"), now: now) == nil)
        cache.recordFailure(endpoint: endpoint("192.0.2.1"), now: now, ttl: 60)
        #expect(cache.success(for: "other.test", now: now) == nil)
        cache.prune(now: now.addingTimeInterval(61))
        #expect(cache.successes.isEmpty && cache.failures.isEmpty)
    }

    @Test("JSON round trip keeps every entry")
    func codable() throws {
        var cache = TransportCache()
        cache.recordFailure(endpoint: endpoint("2001:db8::1", 2525), now: now, ttl: 60, reason: "refused")
        cache.recordSuccess(
            destination: "example.test", mxHost: "mx.example.test", endpoint: endpoint("192.0.2.2"), now: now,
            ttl: 3600)
        let data = try JSONEncoder().encode(cache)
        #expect(try JSONDecoder().decode(TransportCache.self, from: data) == cache)
        let text = String(decoding: data, as: UTF8.self)
        #expect(text.contains("\"2001:db8::1\""))
    }

    @Test("a corrupt address in the JSON is a decoding error, not a crash")
    func corrupt() {
        let json = #"{"successes":[],"failures":[{"endpoint":{"address":"nope","port":25},"until":0,"reason":""}]}"#
        #expect(throws: DecodingError.self) { try JSONDecoder().decode(TransportCache.self, from: Data(json.utf8)) }
    }
}
