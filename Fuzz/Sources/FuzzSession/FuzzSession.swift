// Fuzz target: `ServerSession`, the SMTP command parser and DATA decoder.
//
// Input layout: byte 0 = flags (below), byte 1 = chunking (0 whole, 1 byte by byte, n > 1 pseudo-random chunks of
// 1...n octets seeded by n), the rest = what the client sends. Commits are answered at once (or one chunk later
// with the `deferCommit` flag, so input piles up while the session waits); so are AUTH credential checks (only
// good/secret succeeds, user "temp" gets a temporary failure) and sender checks (verdict by the domain's first
// letter: r reject, t temporary, w warning, else accept).
//
// Checked on every input: no trap; one transaction gives at most one message, so never more `.commitMessage`
// actions than non-overlapping CRLF "." CRLF sequences in the bytes delivered so far (an empty message "DATA" CRLF
// "." CRLF contains one too); every `.send` is well-formed replies ("NNN-text" CRLF ... "NNN text" CRLF, ≤ 512
// octets a line, enhanced status class = code class); begin/data/commit/abort nest properly and nothing follows
// `.close`; a committed body is CRLF text without NUL, within the size and line limits; logs hold no CR/LF.

import Glibc
import NetAddress
import SMTPProtocol

private struct Flags {
    let raw: UInt8
    var tlsAvailable: Bool { raw & 0x01 != 0 }
    var noStorage: Bool { raw & 0x02 != 0 }
    var deferCommit: Bool { raw & 0x04 != 0 }
    /// A strict driver: commits fail (451 4.3.0) and MAIL senders are checked (`checkSenderReturnPath`).
    var strictDriver: Bool { raw & 0x08 != 0 }
    /// Client 192.0.2.1, not allowed to relay (the default is 127.0.0.1, allowed to relay).
    var outsider: Bool { raw & 0x10 != 0 }
    /// Tiny limits, so short inputs reach every limit check.
    var smallLimits: Bool { raw & 0x20 != 0 }
    /// The first chunk arrives before the greeting.
    var preGreet: Bool { raw & 0x40 != 0 }
    /// Submission service (AUTH); without `tlsAvailable` the connection counts as implicit TLS (port 465 style).
    var submission: Bool { raw & 0x80 != 0 }
}

private let endOfData: [UInt8] = [13, 10, 46, 13, 10]

/// Stream offsets just past each non-overlapping CRLF "." CRLF. Two real ends of data cannot share octets: after
/// one, a new DATA command line (with its own CRLF) must come before the next.
private func endOfDataOffsets(_ bytes: UnsafeBufferPointer<UInt8>) -> [Int] {
    var result: [Int] = []
    var index = 0
    while index + endOfData.count <= bytes.count {
        if bytes[index] == 13 && bytes[index + 1] == 10 && bytes[index + 2] == 46 && bytes[index + 3] == 13
            && bytes[index + 4] == 10
        {
            index += endOfData.count
            result.append(index)
        } else {
            index += 1
        }
    }
    return result
}

private struct SplitMix {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

private func failure(_ what: String) -> Never {
    writeToStandardError("FuzzSession: \(what)\n")
    preconditionFailure(what)
}

/// Plays the I/O driver and checks every action the session returns.
private struct Checker {
    let configuration: ServerSession.Configuration
    let flags: Flags
    var session: ServerSession
    var fed = 0
    var endOffsets: [Int]
    var commits = 0
    var openMessage: Transaction?
    var body: [UInt8] = []
    var closed = false
    var queueNumber = 0
    var pendingCredentials: Credentials?
    var pendingSenderDomain: String?

    init(flags: Flags, endOffsets: [Int]) {
        self.flags = flags
        self.endOffsets = endOffsets
        let policy = RecipientPolicy(
            hostname: "mx.lab.example", localDomains: ["lab.example"], ownAddresses: [],
            localRecipients: nil, relayDomains: [], relayRecipients: nil)
        var configuration = ServerSession.Configuration(
            hostname: "mx.lab.example", maxMessageSize: flags.smallLimits ? 600 : 10_485_760, policy: policy)
        configuration.tlsAvailable = flags.tlsAvailable
        configuration.submission = flags.submission
        configuration.checkSenderReturnPath = flags.strictDriver
        if flags.smallLimits {
            configuration.maxRecipients = 3
            configuration.maxErrors = 4
            configuration.maxJunkCommands = 4
            configuration.commandLineLimit = 64
            configuration.textLineLimit = 40
            configuration.maxReceivedHeaders = 2
            configuration.authLineLimit = 64
            configuration.maxAuthFailures = 2
        }
        self.configuration = configuration
        let client = flags.outsider ? IPAddress("192.0.2.1") : IPAddress("127.0.0.1")
        guard let client else { failure("bad fixed client address") }
        session = ServerSession(
            configuration: configuration, clientAddress: client, clientMayRelay: !flags.outsider,
            implicitTLS: flags.submission && !flags.tlsAvailable)
        session.storageAvailable = !flags.noStorage
    }

    /// Ends of data the session has seen so far.
    var allowedCommits: Int {
        var count = 0
        for offset in endOffsets where offset <= fed { count += 1 }
        return count
    }

    mutating func feed(_ chunk: UnsafeBufferPointer<UInt8>) {
        fed += chunk.count
        let actions = session.receive(chunk)
        check(actions, receivedInput: true)
    }

    /// True while the session waits for the driver (a commit or a credentials check).
    var waiting: Bool { session.awaitingCommit || session.awaitingAuthentication || session.awaitingSenderCheck }

    /// Answers commits and credential checks until the session runs on its own again.
    mutating func settle() {
        while waiting {
            if session.awaitingCommit {
                queueNumber += 1
                let actions =
                    flags.strictDriver
                    ? session.commitFailed(Reply(451, EnhancedStatus(4, 3, 0), "Error: queue file write error"))
                    : session.commitSucceeded(queueID: "Q\(queueNumber)")
                check(actions, receivedInput: false)
            } else if session.awaitingSenderCheck {
                guard let domain = pendingSenderDomain else { failure("awaiting a sender check, nothing asked") }
                pendingSenderDomain = nil
                // The verdict follows the domain's first letter, so the fuzzer can reach each answer.
                let result: SenderCheckResult =
                    switch domain.first {
                    case "r": .reject(Reply(550, EnhancedStatus(5, 1, 8), "Sender address rejected: bad domain"))
                    case "t": .reject(Reply(450, EnhancedStatus(4, 1, 8), "Sender address rejected: try later"))
                    case "w": .acceptWithWarning("no MX for \(domain)")
                    default: .accept
                    }
                check(session.senderChecked(result), receivedInput: false)
            } else {
                guard let credentials = pendingCredentials else { failure("awaiting authentication, nothing asked") }
                pendingCredentials = nil
                let outcome: AuthenticationOutcome =
                    credentials == Credentials(user: "good", password: "secret")
                    ? .success : credentials.user == "temp" ? .temporaryFailure : .invalidCredentials
                check(session.authenticationFinished(outcome), receivedInput: false)
            }
        }
    }

    mutating func check(_ actions: [ServerAction], receivedInput: Bool) {
        if closed && !actions.isEmpty { failure("actions after .close: \(actions)") }
        for (position, action) in actions.enumerated() {
            if closed { failure("action after .close: \(action)") }
            switch action {
            case .send(let bytes):
                checkReplies(bytes)
            case .beginMessage(let transaction):
                if openMessage != nil { failure("beginMessage while a message is open") }
                if transaction.recipients.isEmpty { failure("beginMessage without recipients") }
                if transaction.recipients.count > configuration.maxRecipients { failure("too many recipients") }
                openMessage = transaction
                body = []
            case .messageData(let bytes):
                if openMessage == nil { failure("messageData outside a message") }
                if bytes.isEmpty { failure("empty messageData") }
                body.append(contentsOf: bytes)
            case .commitMessage(let transaction):
                guard let open = openMessage else { failure("commitMessage without beginMessage") }
                if open != transaction { failure("commitMessage for another transaction") }
                commits += 1
                if commits > allowedCommits {
                    failure("I4: commit #\(commits) with only \(allowedCommits) CRLF.CRLF in \(fed) octets")
                }
                checkBody()
                openMessage = nil
                if position != actions.count - 1 { failure("actions after commitMessage: \(actions[position...])") }
                if !session.awaitingCommit { failure("commitMessage but the session does not wait for it") }
            case .abortMessage:
                if openMessage == nil { failure("abortMessage without an open message") }
                openMessage = nil
            case .close:
                if openMessage != nil { failure("close with the message still open (no abort)") }
                if !session.isClosed { failure(".close but the session is not closed") }
                closed = true
            case .pause, .reset:
                break  // fault rules only; the fuzzer configures none
            case .log(let text), .warning(let text):
                if text.utf8.contains(where: { $0 == 13 || $0 == 10 }) { failure("CR/LF in a log line") }
            case .authenticate(let credentials):
                if pendingCredentials != nil { failure("second .authenticate before the first was answered") }
                if !session.awaitingAuthentication { failure(".authenticate but the session does not wait for it") }
                if position != actions.count - 1 { failure("actions after .authenticate: \(actions[position...])") }
                pendingCredentials = credentials
            case .checkSender(let domain):
                if pendingSenderDomain != nil { failure("second .checkSender before the first was answered") }
                if !session.awaitingSenderCheck { failure(".checkSender but the session does not wait for it") }
                if position != actions.count - 1 { failure("actions after .checkSender: \(actions[position...])") }
                pendingSenderDomain = domain
            }
        }
    }

    func checkBody() {
        if body.count > configuration.maxMessageSize { failure("committed body over maxMessageSize") }
        if body.contains(0) { failure("NUL in a committed body") }
        if !body.isEmpty && !(body.count >= 2 && body[body.count - 2] == 13 && body[body.count - 1] == 10) {
            failure("committed body does not end with CRLF")
        }
        var lineLength = 0
        for index in body.indices {
            let byte = body[index]
            if byte == 13 {
                if index + 1 >= body.count || body[index + 1] != 10 { failure("bare CR in a committed body") }
            } else if byte == 10 {
                if index == 0 || body[index - 1] != 13 { failure("bare LF in a committed body") }
                lineLength = 0
            } else {
                lineLength += 1
                // The un-stuffed line may be one octet shorter than on the wire, never longer.
                if lineLength + 2 > configuration.textLineLimit { failure("committed line over the limit") }
            }
        }
    }

    func checkReplies(_ bytes: [UInt8]) {
        if bytes.isEmpty { failure("empty .send") }
        var index = 0
        var continuedCode: ArraySlice<UInt8>? = nil
        while index < bytes.count {
            guard let lf = bytes[index...].firstIndex(of: 10), lf > index, bytes[lf - 1] == 13 else {
                failure("reply line without CRLF: \(String(decoding: bytes[index...], as: UTF8.self).debugDescription)")
            }
            let line = bytes[index..<(lf - 1)]
            let text = String(decoding: line, as: UTF8.self).debugDescription
            if line.count + 2 > 512 { failure("reply line over 512 octets: \(text)") }
            guard line.count >= 4,
                let first = line.first, (UInt8(ascii: "2")...UInt8(ascii: "5")).contains(first),
                line.prefix(3).allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
                line[line.startIndex + 3] == UInt8(ascii: " ") || line[line.startIndex + 3] == UInt8(ascii: "-")
            else { failure("malformed reply line \(text)") }
            if line.contains(where: { $0 < 0x20 || $0 == 0x7F }) { failure("control octet in reply line \(text)") }
            let code = line.prefix(3)
            if let expected = continuedCode, expected != code { failure("code changes inside a reply: \(text)") }
            continuedCode = line[line.startIndex + 3] == UInt8(ascii: "-") ? code : nil
            // An enhanced status "c.s.d " right after the code must have the code's class.
            let rest = line.dropFirst(4)
            if rest.count >= 6, rest.dropFirst(1).first == UInt8(ascii: "."),
                rest.first.map({ $0 >= 0x30 && $0 <= 0x39 }) == true, rest.first != first
            {
                failure("enhanced status class differs from the reply code: \(text)")
            }
            index = lf + 1
        }
        if continuedCode != nil { failure("multi-line reply not finished inside one .send") }
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSession(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size >= 2 else { return 0 }
    let flags = Flags(raw: data[0])
    let chunking = Int(data[1])
    let payload = UnsafeBufferPointer(start: data + 2, count: size - 2)
    var checker = Checker(flags: flags, endOffsets: endOfDataOffsets(payload))
    var random = SplitMix(state: UInt64(chunking))

    var offset = 0
    var greeted = false
    var deferredOnce = false
    while offset < payload.count {
        let length: Int
        switch chunking {
        case 0: length = payload.count
        case 1: length = 1
        default: length = 1 + Int(random.next() % UInt64(chunking))
        }
        let end = min(payload.count, offset + length)
        if !greeted && !flags.preGreet {
            checker.check(checker.session.start(earlyInput: false), receivedInput: false)
            greeted = true
        }
        checker.feed(UnsafeBufferPointer(rebasing: payload[offset..<end]))
        if !greeted {
            checker.check(checker.session.start(earlyInput: false), receivedInput: false)
            greeted = true
        }
        offset = end
        if checker.waiting {
            // Deferred: let one more chunk pile up before the commit (or credentials check) is answered.
            if flags.deferCommit && !deferredOnce {
                deferredOnce = true
            } else {
                checker.settle()
                deferredOnce = false
            }
        }
    }
    checker.settle()
    checker.check(checker.session.shuttingDown(), receivedInput: false)
    if checker.openMessage != nil { failure("message left open after shutdown") }
    if !checker.session.isClosed { failure("session not closed after shuttingDown()") }
    return 0
}

/// Straight to fd 2: print() is buffered and its text would be lost in the trap that follows.
func writeToStandardError(_ text: String) {
    var text = text
    text.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}
