import NetAddress

/// What is known about a session when a rule is consulted. Addresses are without angle brackets; the null sender
/// is "". Fields a side does not know stay nil (an inbound session has no MX, an outbound one no listener).
public struct FaultContext: Sendable {
    public var family: AddressFamily
    public var client: IPAddress?
    public var listener: (address: IPAddress, port: Int)?
    public var mx: String?
    public var addr: IPAddress?
    public var port: Int?
    public var from: String?
    public var recipients: [String]

    public init(
        family: AddressFamily, client: IPAddress? = nil, listener: (address: IPAddress, port: Int)? = nil,
        mx: String? = nil, addr: IPAddress? = nil, port: Int? = nil, from: String? = nil, recipients: [String] = []
    ) {
        self.family = family
        self.client = client
        self.listener = listener
        self.mx = mx
        self.addr = addr
        self.port = port
        self.from = from
        self.recipients = recipients
    }
}

/// A rule that fired: its id (`F3`) and what to do. A greylist that holds comes back as its 450 reply.
public struct FaultHit: Sendable, Hashable {
    public var id: String
    public var action: FaultAction
    public var stage: FaultStage
    public var side: FaultSide
}

/// One rule in the table with its counters.
public struct FaultEntry: Sendable {
    public var id: String
    public var rule: FaultRule
    /// From a `fault =` line of the config (replaced on reload) rather than `dualmta fault add`.
    public var configured: Bool
    /// Times the rule's conditions held, and times it fired.
    public private(set) var matches = 0
    public private(set) var fired = 0
    let addedAt: Int64
    private var generator: SplitMix64

    init(id: String, rule: FaultRule, configured: Bool, now: Int64, randomSeed: UInt64) {
        self.id = id
        self.rule = rule
        self.configured = configured
        addedAt = now
        generator = SplitMix64(seed: rule.limit.seed ?? randomSeed)
    }

    /// Counts one match and decides whether the rule fires for it (see `FaultLimit`).
    mutating func count(now: Int64) -> Bool {
        let limit = rule.limit
        if let until = limit.untilMilliseconds, now - addedAt >= until { return false }
        matches += 1
        let k = matches - (limit.after ?? 0)
        guard k >= 1 else { return false }
        if let first = limit.first, k > first { return false }
        if let every = limit.every, k % every != 0 { return false }
        if let probability = limit.probability {
            // 53 random bits as a fraction in [0, 1).
            let draw = Double(generator.next() >> 11) / Double(UInt64(1) << 53)
            guard draw < probability else { return false }
        }
        fired += 1
        return true
    }
}

/// The rules in force and their state (counters, greylist triplets). A value: the caller owns the lock and the
/// clock (`now` in milliseconds of a monotonic clock).
public struct FaultTable: Sendable {
    public private(set) var entries: [FaultEntry] = []
    private var nextNumber = 1
    private var randomSeed: UInt64
    /// Greylist: when each (rule, client, sender, recipient) was first seen.
    private var triplets: [Triplet: Int64] = [:]
    /// Bounded: the oldest triplets go first when the table is full.
    public static let maxTriplets = 10_000
    /// A triplet that passed stays known this long after it was first seen, so retries keep passing.
    public static let tripletLifetime: Int64 = 36 * 3_600_000

    struct Triplet: Hashable, Sendable {
        var rule: String
        var client: String
        var sender: String
        var recipient: String
    }

    /// - Parameter randomSeed: seeds the rules with `probability=` but no `seed=`.
    public init(randomSeed: UInt64 = 0) {
        self.randomSeed = randomSeed
    }

    public var isEmpty: Bool { entries.isEmpty }
    public var greylistSize: Int { triplets.count }

    /// Adds a rule; returns its id (`F1`, `F2`, ... in order of creation, never reused within a run).
    @discardableResult
    public mutating func add(_ rule: FaultRule, configured: Bool = false, now: Int64) -> String {
        let id = "F\(nextNumber)"
        nextNumber += 1
        randomSeed = randomSeed &+ 0x9E37_79B9_7F4A_7C15
        entries.append(FaultEntry(id: id, rule: rule, configured: configured, now: now, randomSeed: randomSeed))
        return id
    }

    /// Removes the rule with `id` (any case); false when there is none.
    public mutating func remove(_ id: String) -> Bool {
        guard let index = entries.firstIndex(where: { $0.id.lowercased() == id.lowercased() }) else { return false }
        let removed = entries.remove(at: index)
        triplets = triplets.filter { $0.key.rule != removed.id }
        return true
    }

    public mutating func removeAll() {
        entries.removeAll()
        triplets.removeAll()
    }

    /// The config's rules after a reload: an unchanged rule keeps its id and counters, a new one gets a new id,
    /// a rule no longer in the config goes. Rules added at run time stay.
    public mutating func replaceConfigured(_ rules: [FaultRule], now: Int64) {
        var remaining = entries.filter(\.configured)
        entries.removeAll(where: \.configured)
        var kept: [FaultEntry] = []
        var added: [FaultRule] = []
        for rule in rules {
            if let index = remaining.firstIndex(where: { $0.rule.text == rule.text }) {
                kept.append(remaining.remove(at: index))
            } else {
                added.append(rule)
            }
        }
        let gone = Set(remaining.map(\.id))
        triplets = triplets.filter { !gone.contains($0.key.rule) }
        entries = (kept + entries).sorted { $0.number < $1.number }
        for rule in added { add(rule, configured: true, now: now) }
    }

    /// The first rule (in id order) that matches and fires at this point, if any.
    public mutating func evaluate(
        side: FaultSide, stage: FaultStage, _ context: FaultContext, now: Int64
    ) -> FaultHit? {
        for index in entries.indices {
            let rule = entries[index].rule
            guard rule.side == side, rule.stage == stage, rule.match.matches(context) else { continue }
            guard entries[index].count(now: now) else { continue }
            let id = entries[index].id
            if case .greylist(let hold) = rule.action {
                guard greylisted(rule: id, hold: hold, context, now: now) else { continue }
                let reply = FaultReply(code: 450, status: (4, 7, 1), text: "Greylisted, please try again later")
                return FaultHit(id: id, action: .reply(reply), stage: stage, side: side)
            }
            return FaultHit(id: id, action: rule.action, stage: stage, side: side)
        }
        return nil
    }

    /// True while the triplet is younger than `hold` (first sight included); records new triplets.
    private mutating func greylisted(rule: String, hold: Int64, _ context: FaultContext, now: Int64) -> Bool {
        let triplet = Triplet(
            rule: rule, client: context.client.map { "\($0.unmapped)" } ?? "",
            sender: (context.from ?? "").lowercased(), recipient: (context.recipients.last ?? "").lowercased())
        if let firstSeen = triplets[triplet], now - firstSeen < Self.tripletLifetime {
            return now - firstSeen < hold
        }
        triplets = triplets.filter { now - $0.value < Self.tripletLifetime }
        if triplets.count >= Self.maxTriplets, let oldest = triplets.min(by: { $0.value < $1.value }) {
            triplets.removeValue(forKey: oldest.key)
        }
        triplets[triplet] = now
        return hold > 0
    }
}

extension FaultEntry {
    var number: Int { Int(id.dropFirst()) ?? 0 }
}

extension FaultMatch {
    /// Every condition that is set holds. Sender and recipient patterns compare case-insensitively; a recipient
    /// condition holds when any recipient of the context satisfies it.
    public func matches(_ context: FaultContext) -> Bool {
        if let family, family != context.family { return false }
        if let client {
            guard let address = context.client, client.contains(address) else { return false }
        }
        if let listener {
            guard let actual = context.listener, actual.port == listener.port else { return false }
            if let address = listener.address, address.unmapped != actual.address.unmapped { return false }
        }
        if let mx {
            guard let name = context.mx, FaultPattern.matches(mx, FaultPattern.name(name)) else { return false }
        }
        if let addr {
            guard let address = context.addr, addr.contains(address) else { return false }
        }
        if let port, port != context.port { return false }
        if let from {
            guard let sender = context.from, FaultPattern.matches(from, sender.lowercased()) else { return false }
        }
        if let rcpt, !context.recipients.contains(where: { FaultPattern.matches(rcpt, $0.lowercased()) }) {
            return false
        }
        if let domain {
            let domains = context.recipients.map { FaultPattern.name(FaultPattern.domain(of: $0)) }
            if !domains.contains(where: { FaultPattern.matches(domain, $0) }) { return false }
        }
        return true
    }
}

/// `*` matches any run of characters (also none); everything else matches itself. Both sides are lower case.
enum FaultPattern {
    static func matches(_ pattern: String, _ text: String) -> Bool {
        let p = Array(pattern.utf8)
        let t = Array(text.utf8)
        var pi = 0
        var ti = 0
        var star: Int?
        var resume = 0
        while ti < t.count {
            if pi < p.count && p[pi] == UInt8(ascii: "*") {
                star = pi
                resume = ti
                pi += 1
            } else if pi < p.count && p[pi] == t[ti] {
                pi += 1
                ti += 1
            } else if let star {
                pi = star + 1
                resume += 1
                ti = resume
            } else {
                return false
            }
        }
        while pi < p.count && p[pi] == UInt8(ascii: "*") { pi += 1 }
        return pi == p.count
    }

    static func name(_ text: String) -> String {
        var name = text.lowercased()
        if name.hasSuffix(".") && name.count > 1 { name.removeLast() }
        return name
    }

    static func domain(of address: String) -> String {
        guard let at = address.lastIndex(of: "@") else { return "" }
        return String(address[address.index(after: at)...])
    }
}

/// SplitMix64: the same seed gives the same draws on every platform and Swift version.
struct SplitMix64: Sendable {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
