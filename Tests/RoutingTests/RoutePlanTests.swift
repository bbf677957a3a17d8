import Foundation
import NetAddress
import Routing
import Testing

@Suite struct RoutePlanTests {
    @Test("JSON round trip of a plan with attempts, skipped entries and a verdict")
    func codable() throws {
        let plan = try route("user@example.test", test2Zone, context(.ipv4Only))
        let data = try JSONEncoder().encode(plan)
        #expect(try JSONDecoder().decode(RoutePlan.self, from: data) == plan)
        let failure = try route("alice@nosuch.test", LabZone(), context())
        #expect(try JSONDecoder().decode(RoutePlan.self, from: JSONEncoder().encode(failure)) == failure)
    }

    @Test("text of a skipped family and a failure verdict")
    func text() throws {
        let zone = LabZone().mx("v6only.test", (10, "mx.v6only.test")).host("mx.v6only.test", "2001:db8:66::25")
        let plan = try route("alice@v6only.test", zone, context(.ipv4Only))
        #expect(
            plan.text == """
                route for v6only.test via mx (this host: IPv4-only)
                MX set:
                  10 mx.v6only.test
                skipped:
                  mx.v6only.test: no A record and IPv6 not usable
                verdict: permanent failure 5.4.4: no MX host for v6only.test has an address of a usable family \
                (this host is IPv4-only)

                """)
    }
}
