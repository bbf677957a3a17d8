import Dispatch
import Testing

@testable import Metrics

@Suite struct MetricsRegistryTests {
    static let attempts = MetricFamily(name: "t_attempts_total", help: "Attempts.", kind: .counter)
    static let queue = MetricFamily(name: "t_queue", help: "Queue size.", kind: .gauge)
    static let latency = MetricFamily(
        name: "t_latency_seconds", help: "Latency.", kind: .histogram(buckets: [0.1, 1]))

    @Test("text format: HELP, TYPE, samples sorted by labels, counters as integers")
    func counterText() {
        let registry = MetricsRegistry([Self.attempts, Self.queue])
        registry.increment(Self.attempts, ["family": "ipv6", "mx_rank": "1"])
        registry.increment(Self.attempts, ["mx_rank": "1", "family": "ipv6"])
        registry.increment(Self.attempts, ["family": "ipv4", "mx_rank": "2"], by: 3)
        registry.set(Self.queue, to: 7)
        #expect(
            registry.exposition() == """
                # HELP t_attempts_total Attempts.
                # TYPE t_attempts_total counter
                t_attempts_total{family="ipv4",mx_rank="2"} 3
                t_attempts_total{family="ipv6",mx_rank="1"} 2
                # HELP t_queue Queue size.
                # TYPE t_queue gauge
                t_queue 7

                """)
        #expect(registry.value(Self.attempts, ["family": "ipv6", "mx_rank": "1"]) == 2)
        #expect(registry.value(Self.attempts, ["family": "ipv6"]) == nil)
    }

    @Test("histogram buckets are cumulative, with +Inf, _sum and _count")
    func histogramText() {
        let registry = MetricsRegistry()
        registry.observe(Self.latency, ["family": "ipv4"], 0.05)
        registry.observe(Self.latency, ["family": "ipv4"], 0.5)
        registry.observe(Self.latency, ["family": "ipv4"], 30)
        #expect(
            registry.exposition() == """
                # HELP t_latency_seconds Latency.
                # TYPE t_latency_seconds histogram
                t_latency_seconds_bucket{family="ipv4",le="0.1"} 1
                t_latency_seconds_bucket{family="ipv4",le="1"} 2
                t_latency_seconds_bucket{family="ipv4",le="+Inf"} 3
                t_latency_seconds_sum{family="ipv4"} 30.55
                t_latency_seconds_count{family="ipv4"} 3

                """)
        #expect(registry.observationCount(Self.latency, ["family": "ipv4"]) == 3)
    }

    @Test("label values and help text are escaped")
    func escaping() {
        let family = MetricFamily(name: "t_x", help: "line\\one\ntwo", kind: .gauge)
        let registry = MetricsRegistry()
        registry.set(family, ["why": "a \"quoted\"\\path\nnext"], to: 1.5)
        #expect(
            registry.exposition() == """
                # HELP t_x line\\\\one\\ntwo
                # TYPE t_x gauge
                t_x{why="a \\"quoted\\"\\\\path\\nnext"} 1.5

                """)
    }

    @Test("negative increments are ignored; a declared family without samples is still listed")
    func edges() {
        let registry = MetricsRegistry([Self.attempts])
        registry.increment(Self.attempts, by: -1)
        #expect(registry.exposition() == "# HELP t_attempts_total Attempts.\n# TYPE t_attempts_total counter\n")
        #expect(formatSampleValue(.infinity) == "+Inf")
        #expect(formatSampleValue(.nan) == "NaN")
    }

    @Test("concurrent increments from many threads are all counted")
    func concurrency() {
        let registry = MetricsRegistry()
        DispatchQueue.concurrentPerform(iterations: 8) { worker in
            for _ in 0..<1000 { registry.increment(Self.attempts, ["family": worker % 2 == 0 ? "ipv4" : "ipv6"]) }
        }
        #expect(registry.value(Self.attempts, ["family": "ipv4"]) == 4000)
        #expect(registry.value(Self.attempts, ["family": "ipv6"]) == 4000)
    }
}
