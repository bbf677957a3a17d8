import Glibc

// Metrics: a small thread-safe registry of counters, gauges and histograms, rendered in the Prometheus text
// exposition format 0.0.4. No I/O (the C library only for its mutex); the HTTP server that serves it is in Console.

/// One metric family: a name, its help text and its type. Samples of a family differ by their labels.
public struct MetricFamily: Sendable, Hashable {
    public enum Kind: Sendable, Hashable {
        case counter
        case gauge
        /// Upper bounds of the buckets, ascending; `+Inf` is added when rendering.
        case histogram(buckets: [Double])
    }

    public let name: String
    public let help: String
    public let kind: Kind

    public init(name: String, help: String, kind: Kind) {
        self.name = name
        self.help = help
        self.kind = kind
    }

    var typeName: String {
        switch kind {
        case .counter: return "counter"
        case .gauge: return "gauge"
        case .histogram: return "histogram"
        }
    }
}

/// Counters, gauges and histograms by family and label set. Every method may be called from any thread.
public final class MetricsRegistry: @unchecked Sendable {
    // @unchecked Sendable: every mutable property is read and written only inside `lock.withLock`.

    /// A label set in canonical form (sorted by label name), so `[a: 1, b: 2]` and `[b: 2, a: 1]` are one sample.
    struct LabelSet: Hashable, Comparable {
        var pairs: [Pair]

        struct Pair: Hashable {
            var name: String
            var value: String
        }

        init(_ labels: [String: String]) {
            pairs = labels.map { Pair(name: $0.key, value: $0.value) }.sorted { $0.name < $1.name }
        }

        /// `{family="ipv6",mx_rank="1"}`, or "" without labels; `extra` (a histogram's `le`) goes last.
        func rendered(extra: Pair? = nil) -> String {
            let all = pairs + (extra.map { [$0] } ?? [])
            guard !all.isEmpty else { return "" }
            return "{" + all.map { "\($0.name)=\"\(escapeLabelValue($0.value))\"" }.joined(separator: ",") + "}"
        }

        static func < (lhs: LabelSet, rhs: LabelSet) -> Bool { lhs.rendered() < rhs.rendered() }
    }

    struct HistogramValue {
        /// Per bucket, not cumulative (made cumulative when rendering).
        var bucketCounts: [UInt64]
        var sum: Double = 0
        var count: UInt64 = 0
    }

    private let lock = RegistryLock()
    private var families: [MetricFamily] = []
    private var scalars: [String: [LabelSet: Double]] = [:]
    private var histograms: [String: [LabelSet: HistogramValue]] = [:]

    public init(_ families: [MetricFamily] = []) {
        for family in families { register(family) }
    }

    /// Declares a family so it is listed (HELP and TYPE) even before its first sample. Idempotent by name.
    public func register(_ family: MetricFamily) {
        lock.withLock {
            guard !families.contains(where: { $0.name == family.name }) else { return }
            families.append(family)
        }
    }

    /// Adds `amount` (≥ 0; negative amounts are ignored: counters only go up) to a counter. `by: 0` creates the
    /// sample at 0, so a scrape shows it before the first event.
    public func increment(_ family: MetricFamily, _ labels: [String: String] = [:], by amount: Double = 1) {
        guard amount >= 0 else { return }
        let key = LabelSet(labels)
        lock.withLock {
            registerLocked(family)
            scalars[family.name, default: [:]][key, default: 0] += amount
        }
    }

    /// Sets a gauge.
    public func set(_ family: MetricFamily, _ labels: [String: String] = [:], to value: Double) {
        let key = LabelSet(labels)
        lock.withLock {
            registerLocked(family)
            scalars[family.name, default: [:]][key] = value
        }
    }

    /// Records one observation in a histogram (a family of another kind is ignored).
    public func observe(_ family: MetricFamily, _ labels: [String: String] = [:], _ value: Double) {
        guard case .histogram(let buckets) = family.kind, !value.isNaN else { return }
        let key = LabelSet(labels)
        lock.withLock {
            registerLocked(family)
            var histogram =
                histograms[family.name]?[key]
                ?? HistogramValue(bucketCounts: [UInt64](repeating: 0, count: buckets.count))
            if let index = buckets.firstIndex(where: { value <= $0 }) { histogram.bucketCounts[index] += 1 }
            histogram.sum += value
            histogram.count += 1
            histograms[family.name, default: [:]][key] = histogram
        }
    }

    /// The current value of a counter or gauge sample, nil if it never got one.
    public func value(_ family: MetricFamily, _ labels: [String: String] = [:]) -> Double? {
        let key = LabelSet(labels)
        return lock.withLock { scalars[family.name]?[key] }
    }

    /// How many observations a histogram sample has, nil if none.
    public func observationCount(_ family: MetricFamily, _ labels: [String: String] = [:]) -> UInt64? {
        let key = LabelSet(labels)
        return lock.withLock { histograms[family.name]?[key]?.count }
    }

    /// Everything in the Prometheus text format (version 0.0.4): per family `# HELP`, `# TYPE`, then its samples
    /// sorted by label set; families in registration order. Ends with a newline.
    public func exposition() -> String {
        lock.withLock {
            var lines: [String] = []
            for family in families {
                lines.append("# HELP \(family.name) \(escapeHelp(family.help))")
                lines.append("# TYPE \(family.name) \(family.typeName)")
                switch family.kind {
                case .counter, .gauge:
                    for (labels, value) in (scalars[family.name] ?? [:]).sorted(by: { $0.key < $1.key }) {
                        lines.append("\(family.name)\(labels.rendered()) \(formatSampleValue(value))")
                    }
                case .histogram(let buckets):
                    for (labels, histogram) in (histograms[family.name] ?? [:]).sorted(by: { $0.key < $1.key }) {
                        var cumulative: UInt64 = 0
                        for (index, bound) in buckets.enumerated() {
                            cumulative += histogram.bucketCounts[index]
                            let le = LabelSet.Pair(name: "le", value: formatSampleValue(bound))
                            lines.append("\(family.name)_bucket\(labels.rendered(extra: le)) \(cumulative)")
                        }
                        let infinity = LabelSet.Pair(name: "le", value: "+Inf")
                        lines.append("\(family.name)_bucket\(labels.rendered(extra: infinity)) \(histogram.count)")
                        lines.append("\(family.name)_sum\(labels.rendered()) \(formatSampleValue(histogram.sum))")
                        lines.append("\(family.name)_count\(labels.rendered()) \(histogram.count)")
                    }
                }
            }
            return lines.joined(separator: "\n") + "\n"
        }
    }

    /// Called with the lock held.
    private func registerLocked(_ family: MetricFamily) {
        if !families.contains(where: { $0.name == family.name }) { families.append(family) }
    }
}

/// Label values escape backslash, double quote and line feed (text format 0.0.4).
func escapeLabelValue(_ value: String) -> String {
    var out = ""
    for character in value {
        switch character {
        case "\\": out += "\\\\"
        case "\"": out += "\\\""
        case "\n": out += "\\n"
        default: out.append(character)
        }
    }
    return out
}

/// HELP text escapes backslash and line feed only.
func escapeHelp(_ value: String) -> String {
    value.replacingAll("\\", with: "\\\\").replacingAll("\n", with: "\\n")
}

/// Integers without a fraction ("3", not "3.0"), `+Inf`/`-Inf`/`NaN` as Prometheus spells them.
func formatSampleValue(_ value: Double) -> String {
    if value.isNaN { return "NaN" }
    if value.isInfinite { return value > 0 ? "+Inf" : "-Inf" }
    if value == value.rounded(), abs(value) < 1e15 { return String(Int64(value)) }
    return "\(value)"
}

extension String {
    /// Replaces every occurrence of `target` (no Foundation in this module).
    fileprivate func replacingAll(_ target: Character, with replacement: String) -> String {
        var out = ""
        for character in self {
            if character == target { out += replacement } else { out.append(character) }
        }
        return out
    }
}

/// A pthread mutex. Not `Synchronization.Mutex`: on Linux that one is built on raw futexes, which
/// ThreadSanitizer does not see, so every locked access was reported as a race; pthread's it intercepts.
private final class RegistryLock: @unchecked Sendable {
    // @unchecked Sendable: the pthread mutex is the synchronisation; the pointer never changes.
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>

    init() {
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    func withLock<R>(_ body: () throws -> R) rethrows -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }
}
