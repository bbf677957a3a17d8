import Synchronization

/// The daemon's one fault table behind a lock, shared by the server sessions, the delivery attempts and the control
/// socket. With no rules, a consultation is one atomic load (the hot paths pay nothing else).
public final class FaultBook: Sendable {
    private let table: Mutex<FaultTable>
    private let count = Atomic<Int>(0)
    private let origin = ContinuousClock.now

    public init(randomSeed: UInt64 = UInt64.random(in: 0...UInt64.max)) {
        table = Mutex(FaultTable(randomSeed: randomSeed))
    }

    /// Milliseconds since the book was made (a monotonic clock: `until=` and greylisting ignore clock steps).
    public var now: Int64 {
        let (seconds, attoseconds) = (ContinuousClock.now - origin).components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }

    public var isEmpty: Bool { count.load(ordering: .relaxed) == 0 }

    public func evaluate(side: FaultSide, stage: FaultStage, _ context: @autoclosure () -> FaultContext) -> FaultHit? {
        guard !isEmpty else { return nil }
        let context = context()
        let now = self.now
        return table.withLock { $0.evaluate(side: side, stage: stage, context, now: now) }
    }

    /// Parses and adds one rule; nothing changes when it does not parse.
    public func add(_ text: String) throws(FaultRuleError) -> String {
        let rule = try FaultRule(parsing: text)
        let now = self.now
        return update { $0.add(rule, now: now) }
    }

    public func remove(_ id: String) -> Bool { update { $0.remove(id) } }

    public func removeAll() { update { $0.removeAll() } }

    /// The config's rules (already parsed, so a bad line never leaves half a set in force).
    public func replaceConfigured(_ rules: [FaultRule]) {
        let now = self.now
        update { $0.replaceConfigured(rules, now: now) }
    }

    public var entries: [FaultEntry] { table.withLock { $0.entries } }

    private func update<Result>(_ body: (inout FaultTable) -> Result) -> Result {
        table.withLock { table in
            let result = body(&table)
            count.store(table.entries.count, ordering: .relaxed)
            return result
        }
    }
}
