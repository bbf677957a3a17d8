import NetAddress

/// Faults holds failure-injection rules for lab use: their syntax, what they match and when they fire. Pure: the
/// clock and the random seed are parameters, so the same rules and seed give the same outcomes on every run.
///
/// One rule, one line: `SIDE STAGE [MATCH ...] ACTION [ARGS] [LIMIT ...]`, for example
/// `outbound connect family=ipv6 mx=mx10.example.test unreachable` or
/// `inbound rcpt rcpt=tempfail*@* reply 451 4.7.1 try later first=2`.

/// Which end of a transfer a rule acts on: our SMTP server (`inbound`) or our SMTP client (`outbound`).
public enum FaultSide: String, Sendable, Hashable, CaseIterable {
    case inbound
    case outbound
}

/// The point in a session where a rule is consulted.
public enum FaultStage: String, Sendable, Hashable, CaseIterable {
    case connect
    /// Outbound only: the peer's greeting.
    case banner
    case ehlo
    /// Outbound only: the STARTTLS command and its handshake.
    case starttls
    case mail
    case rcpt
    case data
    /// After the final dot.
    case dataEnd = "data-end"

    static let inbound: [FaultStage] = [.connect, .ehlo, .mail, .rcpt, .data, .dataEnd]
    static let outbound: [FaultStage] = [.connect, .banner, .ehlo, .starttls, .mail, .rcpt, .data, .dataEnd]

    /// Inbound: the sender is known from MAIL on, recipients from RCPT on.
    var knowsSender: Bool { [.mail, .rcpt, .data, .dataEnd].contains(self) }
    var knowsRecipients: Bool { [.rcpt, .data, .dataEnd].contains(self) }
}

/// An SMTP reply a rule gives (inbound) or pretends the peer gave (outbound).
public struct FaultReply: Sendable, Hashable {
    public var code: Int
    /// The enhanced status code `class.subject.detail`, when the rule names one.
    public var status: (Int, Int, Int)?
    public var text: String

    public init(code: Int, status: (Int, Int, Int)?, text: String) {
        self.code = code
        self.status = status
        self.text = text
    }

    public static func == (lhs: FaultReply, rhs: FaultReply) -> Bool {
        lhs.code == rhs.code && lhs.text == rhs.text
            && lhs.status.map { [$0.0, $0.1, $0.2] }
                == rhs.status.map { [$0.0, $0.1, $0.2] }
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(code)
        hasher.combine(text)
    }
}

/// What a rule does when it fires.
public enum FaultAction: Sendable, Hashable {
    case reply(FaultReply)
    /// Close the connection (inbound: without a reply; outbound: as if the peer closed).
    case drop
    /// Inbound: close with a TCP RST (SO_LINGER 0).
    case reset
    /// Wait, then go on normally.
    case delay(milliseconds: Int64)
    /// Inbound rcpt: 450 4.7.1 until the (client, sender, recipient) triplet was first seen this long ago.
    case greylist(milliseconds: Int64)
    /// Inbound data-end: answer 250, keep nothing.
    case discard
    /// Outbound connect: as if the peer refused (ECONNREFUSED), had no route (EHOSTUNREACH), or never answered.
    case refuse
    case unreachable
    case blackhole
    /// Outbound starttls: as if the TLS handshake failed.
    case tlsFail

    public var name: String {
        switch self {
        case .reply: return "reply"
        case .drop: return "drop"
        case .reset: return "reset"
        case .delay: return "delay"
        case .greylist: return "greylist"
        case .discard: return "discard"
        case .refuse: return "refuse"
        case .unreachable: return "unreachable"
        case .blackhole: return "blackhole"
        case .tlsFail: return "tls-fail"
        }
    }

    /// The sides and stages an action makes sense at; anything else is refused when the rule is parsed.
    func allowed(side: FaultSide, stage: FaultStage) -> String? {
        switch (self, side) {
        case (.reply(let reply), .inbound):
            return reply.code >= 400 ? nil : "an inbound reply needs a 4xx or 5xx code (got \(reply.code))"
        case (.drop, .inbound), (.reset, .inbound), (.delay, .inbound):
            return nil
        case (.greylist, .inbound):
            return stage == .rcpt ? nil : "greylist works at the inbound rcpt stage only"
        case (.discard, .inbound):
            return stage == .dataEnd ? nil : "discard works at the inbound data-end stage only"
        case (.refuse, .outbound), (.unreachable, .outbound), (.blackhole, .outbound), (.delay, .outbound):
            return stage == .connect ? nil : "\(name) works at the outbound connect stage only"
        case (.tlsFail, .outbound):
            return stage == .starttls ? nil : "tls-fail works at the outbound starttls stage only"
        case (.reply, .outbound), (.drop, .outbound):
            return stage == .connect
                ? "\(name) needs a connection: use stage banner (or refuse/unreachable/blackhole at connect)" : nil
        case (.reset, .outbound):
            return "reset is inbound only (outbound, use drop)"
        case (.greylist, .outbound), (.discard, .outbound):
            return "\(name) is inbound only"
        case (.refuse, .inbound), (.unreachable, .inbound), (.blackhole, .inbound), (.tlsFail, .inbound):
            return "\(name) is outbound only"
        }
    }
}

/// The conditions under which a rule applies; every one that is set must hold.
public struct FaultMatch: Sendable, Hashable {
    public var family: AddressFamily?
    /// Inbound: the client's address.
    public var client: CIDR?
    /// Inbound: the listener the client connected to (`*` for any address).
    public var listener: ListenerPattern?
    /// Outbound: the MX host name (a pattern), the peer's address and port.
    public var mx: String?
    public var addr: CIDR?
    public var port: Int?
    /// Both: the envelope sender, a recipient, a recipient's domain (patterns; `*` is any run of characters).
    public var from: String?
    public var rcpt: String?
    public var domain: String?

    public init() {}

    public struct ListenerPattern: Sendable, Hashable, CustomStringConvertible {
        /// Nil for `*`.
        public var address: IPAddress?
        public var port: Int

        public var description: String {
            guard let address else { return "*:\(port)" }
            return address.family == .ipv6 ? "[\(address)]:\(port)" : "\(address):\(port)"
        }
    }
}

/// When a matching rule fires. Matches are numbered 1, 2, 3... per rule: the first `after` pass untouched; of
/// the rest (k = 1, 2, ...) a rule fires when k ≤ `first`, k is a multiple of `every` and the seeded draw is
/// below `probability` — each condition only when given. `until` ends the rule that long after it was added.
public struct FaultLimit: Sendable, Hashable {
    public var first: Int?
    public var after: Int?
    public var every: Int?
    public var probability: Double?
    public var seed: UInt64?
    public var untilMilliseconds: Int64?

    public init() {}
}

/// One parsed rule; `text` is the rule as written (for `fault list` and logs).
public struct FaultRule: Sendable, Hashable {
    public var side: FaultSide
    public var stage: FaultStage
    public var match: FaultMatch
    public var action: FaultAction
    public var limit: FaultLimit
    public var text: String
}

/// Why a rule was refused: one sentence naming the word at fault. The config parser adds file:line.
public struct FaultRuleError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String

    public init(_ message: String) { self.message = message }

    public var description: String { message }
}
