/// Failures on purpose, as the session sees them: the driver consults the lab's fault rules at each stage and hands
/// the session a decision; the session then behaves as if its own policy had decided (a refused RCPT is not in
/// the transaction, a 421 closes). The session never knows rule syntax, ids or clocks.

/// Where in the dialogue the session asks.
public enum SessionFaultStage: String, Sendable, Hashable {
    case connect, ehlo, mail, rcpt, data
    /// After the final dot, before the commit.
    case dataEnd = "data-end"
}

/// What the session knows at that point: the sender from MAIL on ("" for `<>`), the recipients from RCPT on (at
/// rcpt, the one being asked for; later, all accepted ones). Addresses without angle brackets.
public struct SessionFaultPoint: Sendable, Hashable {
    public var stage: SessionFaultStage
    public var sender: String?
    public var recipients: [String]

    public init(stage: SessionFaultStage, sender: String? = nil, recipients: [String] = []) {
        self.stage = stage
        self.sender = sender
        self.recipients = recipients
    }
}

/// The driver's decision for one point.
public enum SessionFault: Sendable, Hashable {
    /// Answer this instead of running the command (4xx/5xx; a 421 also closes).
    case reply(Reply)
    /// Close without a reply.
    case drop
    /// Close with a TCP RST.
    case reset
    /// Hold the output for this long, then go on normally.
    case delay(milliseconds: Int64)
    /// At data-end: answer 250 and keep nothing.
    case discard
}

/// Consulted by the session; nil (no rules) costs nothing.
public typealias SessionFaultHook = @Sendable (SessionFaultPoint) -> SessionFault?

extension ServerSession {
    /// What a consulted fault leaves the command to do.
    enum FaultOutcome {
        /// No fault, or a delay already scheduled: run the command.
        case proceed
        /// The fault answered or closed: the command is over.
        case handled
        /// Data-end only: answer 250 and keep nothing.
        case discard
    }
}
