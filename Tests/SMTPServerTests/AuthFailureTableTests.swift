import NetAddress
import Testing

@testable import SMTPServer

@Suite struct AuthFailureTableTests {
    static let client = IPAddress("192.0.2.1")!
    static let other = IPAddress("192.0.2.2")!

    @Test func limitPerAddressAcrossUsers() {
        var table = AuthFailureTable(limit: 3, window: 60)
        for (index, user) in ["a", "b", "c"].enumerated() {
            #expect(table.blocked(AuthFailureTable.keys(address: Self.client, user: user), now: Double(index)) == nil)
            table.recordFailure(AuthFailureTable.keys(address: Self.client, user: user), now: Double(index))
        }
        #expect(table.blocked(AuthFailureTable.keys(address: Self.client, user: "d"), now: 3) == .address(Self.client))
        #expect(table.blocked(AuthFailureTable.keys(address: Self.other, user: "d"), now: 3) == nil)
    }

    @Test func limitPerUserAcrossAddresses() {
        var table = AuthFailureTable(limit: 2, window: 60)
        table.recordFailure(AuthFailureTable.keys(address: Self.client, user: "alice"), now: 0)
        table.recordFailure(AuthFailureTable.keys(address: Self.other, user: "alice"), now: 1)
        let third = IPAddress("2001:db8::3")!
        #expect(table.blocked(AuthFailureTable.keys(address: third, user: "alice"), now: 2) == .user("alice"))
        #expect(table.blocked(AuthFailureTable.keys(address: third, user: "bob"), now: 2) == nil)
    }

    /// An entry lapses `window` after its last failure; every failure while blocked pushes that further out.
    @Test func expiry() {
        var table = AuthFailureTable(limit: 1, window: 60)
        let keys = AuthFailureTable.keys(address: Self.client, user: "alice")
        table.recordFailure(keys, now: 0)
        #expect(table.blocked(keys, now: 59.9) != nil)
        #expect(table.blocked(keys, now: 60) == nil)
        table.recordFailure(keys, now: 100)
        table.recordFailure(keys, now: 150)
        #expect(table.blocked(keys, now: 209) != nil)
        #expect(table.blocked(keys, now: 210) == nil)
        table.recordFailure(keys, now: 300)  // lapsed: counting starts again
        #expect(table.entries[.user("alice")]?.failures == 1)
    }

    @Test func successClearsTheUserButNotTheAddress() {
        var table = AuthFailureTable(limit: 1, window: 60)
        table.recordFailure(AuthFailureTable.keys(address: Self.client, user: "alice"), now: 0)
        table.recordSuccess(user: "alice")
        #expect(table.blocked(AuthFailureTable.keys(address: Self.other, user: "alice"), now: 1) == nil)
        #expect(table.blocked(AuthFailureTable.keys(address: Self.client, user: "bob"), now: 1) != nil)
    }

    /// Bounded: a full table drops lapsed entries first, then the oldest failure.
    @Test func capacity() {
        var table = AuthFailureTable(limit: 5, window: 100, capacity: 4)
        for index in 0..<10 {
            table.recordFailure([.address(IPAddress("198.51.100.\(index)")!)], now: Double(index))
        }
        #expect(table.entries.count == 4)
        #expect(
            Set(table.entries.keys)
                == Set((6..<10).map { AuthFailureTable.Key.address(IPAddress("198.51.100.\($0)")!) }))
    }

    /// Names that cannot be users (too long, controls) are not kept; IPv4-mapped addresses count as IPv4.
    @Test func keys() {
        let long = String(repeating: "x", count: 5000)
        #expect(AuthFailureTable.keys(address: Self.client, user: long) == [.address(Self.client)])
        // Every address of one IPv6 /64 is one client.
        let first = AuthFailureTable.keys(address: IPAddress("2001:db8:1:2::1")!, user: "a")
        let second = AuthFailureTable.keys(address: IPAddress("2001:db8:1:2:ffff::9")!, user: "a")
        #expect(first == second && first.first == .address(IPAddress("2001:db8:1:2::")!))
        #expect(AuthFailureTable.keys(address: IPAddress("2001:db8:1:3::1")!, user: "a") != first)
        let mapped = IPAddress("::ffff:192.0.2.1")!
        #expect(AuthFailureTable.keys(address: mapped, user: "a") == [.address(Self.client), .user("a")])
    }
}
