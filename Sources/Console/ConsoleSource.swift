import Spool

/// What the console shows, supplied by the daemon (Sources/MTA), so that the JSON is the CLI's own rendering and
/// the pages read the same spool and journals as `dualmta queue` and `dualmta trace`.
public protocol ConsoleSource: Sendable {
    /// Prometheus exposition text for `/metrics`.
    func metricsText() -> String
    /// The listeners of the running daemon and the family each serves.
    func listeners() -> [ConsoleListener]
    /// The queued messages in arrival order.
    func queued() -> [Envelope]
    /// `dualmta queue list --json`.
    func queueJSON() -> String
    /// The same rendering for a subset (a filtered queue).
    func queueJSON(_ envelopes: [Envelope]) -> String
    func envelope(_ id: QueueID) -> Envelope?
    /// When the queue gives up on the message (from the configured lifetimes).
    func expires(_ envelope: Envelope) -> Int64
    /// `dualmta queue show --json` (when queued) plus the message's history; nil when neither exists.
    func messageJSON(_ id: QueueID) -> String?
    /// The report chain containing `id` (as `dualmta trace`), root first; nil without a journal.
    func chain(_ id: QueueID) -> [ConsoleChainNode]?
    /// `dualmta trace --json`.
    func traceJSON(_ id: QueueID) -> String?
    /// Every journal event at or after `since` (unix seconds), each with its message id, oldest first.
    func events(since: Int64) -> [ConsoleEvent]
    /// The start-up self-check (listener families, warnings, notes); nil while it is still running.
    func selfCheck() -> ConsoleSelfCheck?
    /// The current time in unix seconds (the overview's "last hour").
    func now() -> Int64
    /// `<spool>/mailboxes`: the local Maildirs.
    var mailboxDirectory: String { get }
    /// The bearer token of the write actions; nil: there are none.
    var actionToken: String? { get }
    /// Runs a queue command on one message (or, for flush without an id, the whole queue).
    func perform(_ action: ConsoleAction, id: QueueID?) -> ConsoleActionResult
    /// The fault rules in force and how often each matched and fired (`dualmta fault list`).
    func faults() -> [ConsoleFault]
    /// `dualmta fault add|delete|clear` on the running daemon's rules.
    func changeFaults(_ change: ConsoleFaultChange) -> ConsoleActionResult
    /// The outbound connections parked for reuse right now, per next hop (empty with the cache off).
    func parkedConnections() -> [ConsoleParkedConnection]
}

/// Outbound sessions parked for reuse to one next hop.
public struct ConsoleParkedConnection: Equatable, Sendable {
    /// `[address]:port`.
    public var address: String
    /// ipv4 or ipv6.
    public var family: String
    public var count: Int

    public init(address: String, family: String, count: Int) {
        self.address = address
        self.family = family
        self.count = count
    }
}

/// One fault rule as `dualmta fault list` shows it.
public struct ConsoleFault: Equatable, Sendable {
    public var id: String
    /// `config` (a `fault =` line) or `added` (at run time).
    public var origin: String
    public var matched: Int
    public var fired: Int
    public var rule: String

    public init(id: String, origin: String, matched: Int, fired: Int, rule: String) {
        self.id = id
        self.origin = origin
        self.matched = matched
        self.fired = fired
        self.rule = rule
    }
}

/// A change to the fault rules over the console (POST with the bearer token).
public enum ConsoleFaultChange: Equatable, Sendable {
    case add(String)
    case delete(String)
    case clear
}

public struct ConsoleListener: Equatable, Sendable {
    public var name: String
    public var address: String
    public var family: String

    public init(name: String, address: String, family: String) {
        self.name = name
        self.address = address
        self.family = family
    }
}

/// What the daemon's start-up self-check found (the lines it logged).
public struct ConsoleSelfCheck: Equatable, Sendable {
    public var listeners: [String]
    public var warnings: [String]
    public var notes: [String]

    public init(listeners: [String], warnings: [String], notes: [String]) {
        self.listeners = listeners
        self.warnings = warnings
        self.notes = notes
    }
}

/// One journal event and the message it belongs to.
public struct ConsoleEvent: Equatable, Sendable {
    public var id: QueueID
    public var event: HistoryEvent

    public init(id: QueueID, event: HistoryEvent) {
        self.id = id
        self.event = event
    }
}

/// One message of a report chain: a message, the reports it caused (depth + 1), their double bounces.
public struct ConsoleChainNode: Equatable, Sendable {
    public var id: QueueID
    public var reportOf: QueueID?
    public var depth: Int
    public var events: [HistoryEvent]

    public init(id: QueueID, reportOf: QueueID?, depth: Int, events: [HistoryEvent]) {
        self.id = id
        self.reportOf = reportOf
        self.depth = depth
        self.events = events
    }
}
