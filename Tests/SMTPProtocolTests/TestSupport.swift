import NetAddress
import SMTPProtocol
import Testing

/// Fixtures shared by the SMTPProtocol tests: the lab identity (mx.lab.example) and a small driver that plays
/// the I/O side (feeds bytes in chosen chunk sizes and answers commits).
enum Lab {
    static let host = "mx.lab.example"
    static let outsider = IPAddress("192.0.2.1")!
    static let ownV4 = IPAddress("192.0.2.2")!
    static let ownV6 = IPAddress("2001:db8:99::2")!

    static func policy(localRecipients: Set<String>? = nil, relayRecipients: Set<String>? = nil) -> RecipientPolicy {
        RecipientPolicy(
            hostname: host, localDomains: ["lab.example"], ownAddresses: [ownV4, ownV6],
            localRecipients: localRecipients, relayDomains: ["relay.example"], relayRecipients: relayRecipients)
    }

    static func configuration(
        maxMessageSize: Int = 10_485_760, policy: RecipientPolicy = Lab.policy(),
        _ adjust: (inout ServerSession.Configuration) -> Void = { _ in }
    ) -> ServerSession.Configuration {
        var configuration = ServerSession.Configuration(hostname: host, maxMessageSize: maxMessageSize, policy: policy)
        adjust(&configuration)
        return configuration
    }
}

/// How a test splits the client's bytes into receive() calls.
enum Chunking: CustomStringConvertible, Sendable {
    case whole
    case bytes
    case random(seed: UInt64)

    var description: String {
        switch self {
        case .whole: return "whole"
        case .bytes: return "byte by byte"
        case .random(let seed): return "random chunks (seed \(seed))"
        }
    }

    static let all: [Chunking] = [.whole, .bytes, .random(seed: 1), .random(seed: 42), .random(seed: 2024)]
}

/// SplitMix64: deterministic chunk sizes, so a failure is reproducible.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Plays the driver: feeds client writes, commits every message at once, records all actions.
struct Harness {
    var session: ServerSession
    var actions: [ServerAction] = []
    var committed: [Transaction] = []
    var nextQueueID = 1
    /// When set, commits fail with this reply instead of succeeding.
    var commitFailure: Reply? = nil
    /// Credentials the session asked the harness to check; "alice" with `Harness.password` is valid.
    var checked: [Credentials] = []
    /// When set, every AUTH check has this outcome.
    var authOutcome: AuthenticationOutcome? = nil
    static let password = "wonder land"

    init(
        configuration: ServerSession.Configuration = Lab.configuration(), client: IPAddress = Lab.outsider,
        mayRelay: Bool = false, greet: Bool = true, implicitTLS: Bool = false
    ) {
        session = ServerSession(
            configuration: configuration, clientAddress: client, clientMayRelay: mayRelay, implicitTLS: implicitTLS)
        if greet { actions += session.start(earlyInput: false) }
    }

    /// One client write, delivered to the session in the given chunking.
    mutating func write(_ bytes: [UInt8], _ chunking: Chunking = .whole) {
        var random = SeededGenerator(state: 0)
        if case .random(let seed) = chunking { random = SeededGenerator(state: seed) }
        var offset = 0
        while offset < bytes.count {
            let size: Int
            switch chunking {
            case .whole: size = bytes.count
            case .bytes: size = 1
            case .random:
                size = Int.random(in: 1...97, using: &random)
            }
            let end = min(bytes.count, offset + size)
            actions += session.receive(bytes[offset..<end])
            settleCommits()
            offset = end
        }
    }

    mutating func write(_ text: String, _ chunking: Chunking = .whole) {
        write(Array(text.utf8), chunking)
    }

    /// Several client writes (RFC 2920 groups), each chunked the same way.
    mutating func writes(_ groups: [String], _ chunking: Chunking = .whole) {
        for group in groups { write(group, chunking) }
    }

    mutating func settleCommits() {
        while session.awaitingCommit || session.awaitingAuthentication {
            if session.awaitingAuthentication {
                guard case .authenticate(let credentials)? = actions.last(where: { $0.isAuthenticate }) else { break }
                checked.append(credentials)
                let valid = credentials.user == "alice" && credentials.password == Harness.password
                actions += session.authenticationFinished(authOutcome ?? (valid ? .success : .invalidCredentials))
                continue
            }
            guard
                case .commitMessage(let transaction)? = actions.last(where: {
                    if case .commitMessage = $0 { true } else { false }
                })
            else { break }
            committed.append(transaction)
            if let commitFailure {
                actions += session.commitFailed(commitFailure)
            } else {
                actions += session.commitSucceeded(queueID: "Q\(nextQueueID)")
                nextQueueID += 1
            }
        }
    }

    /// Every reply sent so far, one string per reply (continuation lines joined with "\n").
    var replies: [String] { Harness.replies(in: actions) }

    /// Every reply's code and enhanced status: "250 2.1.0", "354", "250" (EHLO).
    var codes: [String] { replies.map(Harness.codeAndStatus) }

    var commits: Int { actions.filter { if case .commitMessage = $0 { true } else { false } }.count }
    var aborts: Int { actions.filter { $0 == .abortMessage }.count }
    var closed: Bool { session.isClosed && actions.last == .close }
    var logs: [String] { actions.compactMap { if case .log(let text) = $0 { text } else { nil } } }

    /// The body bytes of every message (begin … commit/abort), in order.
    var bodies: [[UInt8]] {
        var result: [[UInt8]] = []
        var current: [UInt8]? = nil
        for action in actions {
            switch action {
            case .beginMessage: current = []
            case .messageData(let bytes): current?.append(contentsOf: bytes)
            case .commitMessage, .abortMessage:
                if let finished = current { result.append(finished) }
                current = nil
            default: break
            }
        }
        return result
    }

    static func replies(in actions: [ServerAction]) -> [String] {
        var bytes: [UInt8] = []
        for case .send(let chunk) in actions { bytes += chunk }
        let text = String(decoding: bytes, as: UTF8.self)
        var result: [String] = []
        var current: [String] = []
        for line in text.split(separator: "\r\n", omittingEmptySubsequences: true) {
            current.append(String(line))
            let marker = line.dropFirst(3).first
            if marker != "-" {
                result.append(current.joined(separator: "\n"))
                current = []
            }
        }
        return result
    }

    static func codeAndStatus(_ reply: String) -> String {
        let last = reply.split(separator: "\n").last.map(String.init) ?? reply
        let code = String(last.prefix(3))
        let words = last.dropFirst(4).split(separator: " ", maxSplits: 1)
        if let first = words.first, EnhancedStatus(String(first)) != nil { return "\(code) \(first)" }
        return code
    }

    /// Actions with sends and body chunks merged and logs dropped: what must not depend on chunking.
    static func normalized(_ actions: [ServerAction]) -> [ServerAction] {
        var result: [ServerAction] = []
        for action in actions {
            switch (result.last, action) {
            case (_, .log): continue
            case (.send(let a)?, .send(let b)): result[result.count - 1] = .send(a + b)
            case (.messageData(let a)?, .messageData(let b)): result[result.count - 1] = .messageData(a + b)
            default: result.append(action)
            }
        }
        return result
    }
}

extension ServerAction {
    var isAuthenticate: Bool {
        if case .authenticate = self { true } else { false }
    }
}
