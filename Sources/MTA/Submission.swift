import Foundation
import Glibc
import SMTPProtocol
import SMTPServer
import Spool

// `dualmta send` and the binary invoked as `sendmail`: local submission of a message on stdin. The spool's owner
// writes straight into the spool with the server's commit protocol (Spool.begin/append/commit), so it needs no
// SMTP and no running daemon; it exits 0 only after the commit, then tells a running daemon (`wake <ID>`). Any
// other user's message goes to the daemon over SMTP on loopback (DaemonSubmission), which writes its own spool.
//
// Exit codes (sysexits): 64 usage (bad flags, no recipients), 65 bad data (bare CR, bad address, too large),
// 75 any spool error, 78 config error. The pure parts (argument parsing, LF → CRLF, header parsing, address lists,
// composing the stored message) are separate from `main` so they are tested without a spool.

/// What the command line asked for. sendmail's flags cannot be expressed with argument-parser (`-fSENDER`, `-oi`,
/// `-bp`), so they are parsed by hand.
public struct SendOptions: Equatable, Sendable {
    public enum Mode: Equatable, Sendable {
        case send
        /// `-bp` (and `mailq`): list the queue.
        case listQueue
        /// `-q`: flush the queue.
        case flushQueue
        /// `--help`
        case help
    }

    public var mode = Mode.send
    public var configPath: String?
    /// The `-f` value as given; "" or "<>" is the null sender.
    public var sender: String?
    /// `-t`: recipients from To, Cc and Bcc (added to those on the command line, as Postfix does).
    public var recipientsFromHeaders = false
    /// `-i` / `-oi`: a line with a single dot does not end the input.
    public var ignoreDots = false
    /// `-v`: print the queue id on stderr.
    public var verbose = false
    public var recipients: [String] = []
    /// `-F NAME`: the display name of the From header this command adds when the message has none.
    public var fullName: String?
    /// `-B 8BITMIME` / `-B 7BIT`: the body type, as SMTP's BODY= parameter.
    public var bodyType: String?
    /// `-N`, `-R`, `-V`: RFC 3461 NOTIFY, RET and ENVID, kept for the DSN support of the queue.
    public var dsnNotify: String?
    public var dsnReturn: String?
    public var envelopeID: String?
    /// Accepted but ignored options, for a warning each.
    public var warnings: [String] = []

    public init() {}
}

/// Everything `send` can fail with, each with its exit status.
public enum SubmissionError: Error, Equatable, Sendable, CustomStringConvertible {
    case usage(String)
    case noRecipients
    /// A CR not followed by LF (refused: a bare CR must never be passed on, SMTP smuggling); `line` counts from 1.
    case bareCR(line: Int)
    case badAddress(String)
    case badSender(String)
    case addressSyntax(String)
    case tooLarge(limit: Int)
    case input(Int32)
    case config(String)
    case spool(SpoolError)
    /// The daemon could not be reached (a user who does not own the spool submits through it).
    case daemon(String)
    /// The daemon answered the SMTP submission with an error reply.
    case rejected(code: Int, text: String)

    public var description: String {
        switch self {
        case .usage(let text): return text
        case .noRecipients: return "no recipients (give them as arguments, or use -t)"
        case .bareCR(let line): return "bare CR (a CR not followed by LF) in line \(line) of the input"
        case .badAddress(let text): return "bad recipient address \(text.debugDescription)"
        case .badSender(let text): return "bad sender address \(text.debugDescription)"
        case .addressSyntax(let text): return "cannot parse address list \(text.debugDescription)"
        case .tooLarge(let limit): return "message larger than message_size_limit (\(limit) bytes)"
        case .input(let code): return "reading stdin: \(String(cString: strerror(code)))"
        case .config(let text): return text
        case .spool(let error): return "spool: \(error)"
        case .daemon(let text): return text
        case .rejected(_, let text): return "the MTA refused the message: \(text)"
        }
    }

    public var exitStatus: Int32 {
        switch self {
        case .usage, .noRecipients: return SysExit.usage
        case .bareCR, .badAddress, .badSender, .addressSyntax, .tooLarge: return SysExit.dataError
        case .input, .spool, .daemon: return SysExit.temporaryFailure
        case .rejected(let code, _): return code >= 500 ? SysExit.unavailable : SysExit.temporaryFailure
        case .config: return SysExit.config
        }
    }
}

// MARK: - Arguments

public enum SendArguments {
    public static let usage = """
        usage: dualmta send [-c FILE] [-f SENDER] [-F NAME] [-t] [-i] [-v] [RCPT...]    (message on stdin)
               sendmail [-C FILE] [-f SENDER] [-F NAME] [-t] [-i|-oi] [-oem] [-B 8BITMIME] [-N DSN] [-R RET]
                        [-V ENVID] [-bp] [-q] [RCPT...]
        """

    /// Parses sendmail-style arguments (without the program name). Options may come after recipients;
    /// `--` ends the options.
    public static func parse(_ arguments: [String]) throws(SubmissionError) -> SendOptions {
        var options = SendOptions()
        var index = 0
        func value(_ flag: String, attached: Substring) throws(SubmissionError) -> String {
            if !attached.isEmpty { return String(attached) }
            index += 1
            guard index < arguments.count else { throw .usage("option \(flag) needs a value") }
            return arguments[index]
        }
        while index < arguments.count {
            let argument = arguments[index]
            defer { index += 1 }
            if argument == "--" {
                options.recipients += arguments[(index + 1)...]
                index = arguments.count
                continue
            }
            guard argument.hasPrefix("-"), argument.count > 1 else {
                options.recipients.append(argument)
                continue
            }
            if argument == "--help" {
                options.mode = .help
                continue
            }
            if argument.hasPrefix("--config") {
                let rest = argument.dropFirst("--config".count)
                if rest.isEmpty {
                    options.configPath = try value("--config", attached: "")
                } else if rest.hasPrefix("=") {
                    options.configPath = String(rest.dropFirst())
                } else {
                    throw .usage("unknown option \(argument)")
                }
                continue
            }
            let flag = argument.dropFirst().first ?? "-"
            let attached = argument.dropFirst(2)
            switch flag {
            case "c", "C":
                options.configPath = try value("-\(flag)", attached: attached)
            case "f", "r":
                options.sender = try value("-\(flag)", attached: attached)
            case "F":
                options.fullName = try value("-F", attached: attached)
            case "o":
                if attached == "i" {
                    options.ignoreDots = true
                } else if attached.hasPrefix("e") || attached == "m" || attached.hasPrefix("d") {
                    // -oem and friends (how errors are reported: our exit status does that), -om (me too),
                    // -odb/-odi (delivery mode): what mutt and cron pass, nothing to change here.
                } else {
                    options.warnings.append("option \(argument) ignored")
                }
            case "B":
                let type = try value("-B", attached: attached).uppercased()
                guard type == "8BITMIME" || type == "7BIT" else { throw .usage("-B takes 8BITMIME or 7BIT") }
                options.bodyType = type
            case "N":
                options.dsnNotify = try value("-N", attached: attached)
            case "R":
                options.dsnReturn = try value("-R", attached: attached)
            case "V":
                options.envelopeID = try value("-V", attached: attached)
            case "O", "L", "h":
                let given = try value("-\(flag)", attached: attached)
                options.warnings.append("option -\(flag) \(given) ignored")
            case "U", "m", "n":
                break  // initial submission / me-too / no aliasing: meaningless here
            case "e":
                break  // -em, -ep, ...: error reporting mode; the exit status reports errors
            case "b":
                switch attached {
                case "m": options.mode = .send
                case "p": options.mode = .listQueue
                default: throw .usage("unsupported mode \(argument) (only -bm and -bp)")
                }
            case "q":
                options.mode = .flushQueue
                if !attached.isEmpty { options.warnings.append("\(argument): interval and selectors ignored") }
            default:
                // Combined boolean flags, e.g. -ti.
                let letters = argument.dropFirst()
                guard letters.allSatisfy({ "tiv".contains($0) }) else { throw .usage("unknown option \(argument)") }
                for letter in letters {
                    switch letter {
                    case "t": options.recipientsFromHeaders = true
                    case "i": options.ignoreDots = true
                    default: options.verbose = true
                    }
                }
            }
        }
        return options
    }
}

// MARK: - Message text

public enum MessageText {
    /// LF → CRLF (an existing CRLF is kept); a CR not followed by LF is refused. Without `ignoreDots`, a line that
    /// is a single "." ends the input (the rest is discarded), as in sendmail. The result ends with CRLF unless empty.
    public static func normalize(_ input: [UInt8], ignoreDots: Bool) throws(SubmissionError) -> [UInt8] {
        var output: [UInt8] = []
        output.reserveCapacity(input.count + input.count / 32 + 2)
        var start = 0
        var line = 1
        while start < input.count {
            let newline = input[start...].firstIndex(of: UInt8(ascii: "\n"))
            var end = newline ?? input.count
            // Only a CR right before a LF is a line end; any other CR is bare.
            if newline != nil, end > start, input[end - 1] == UInt8(ascii: "\r") { end -= 1 }
            let content = input[start..<end]
            if content.contains(UInt8(ascii: "\r")) { throw .bareCR(line: line) }
            if !ignoreDots && content.count == 1 && content.first == UInt8(ascii: ".") { break }
            output.append(contentsOf: content)
            output.append(contentsOf: [UInt8(ascii: "\r"), UInt8(ascii: "\n")])
            start = (newline ?? input.count) + 1
            line += 1
        }
        return output
    }
}

// MARK: - Composing

/// The stored message and its envelope addresses, computed without I/O.
public struct Submission: Equatable, Sendable {
    /// Reverse path as wire text ("" for `<>`).
    public var sender: String
    public var recipients: [String]
    public var message: [UInt8]
    public var smtpUTF8: Bool
    public var eightBit: Bool
    /// `-N`, `-R`, `-V` (RFC 3461): NOTIFY for every recipient, RET and ENVID.
    public var notify: DSNNotify? = nil
    public var dsnReturn: DSNReturn? = nil
    public var envelopeID: String? = nil

    /// The addresses of one command-line argument or To/Cc/Bcc value (RFC 5322 address list).
    static func addresses(_ text: String) throws(SubmissionError) -> [String] {
        do throws(AddressListError) {
            return try AddressList.parse(text)
        } catch {
            throw .addressSyntax(error.text)
        }
    }

    /// - Parameters:
    ///   - input: the message as read from stdin.
    ///   - login: the submitting user's login name (Received header, default sender).
    ///   - date: RFC 5322 date-time for Received and, when missing, Date.
    ///   - messageIDStamp: unique text for a generated Message-ID (the queue id).
    public static func compose(
        input: [UInt8], options: SendOptions, hostname: String, login: String, queueID: String, date: String,
        maxSize: Int
    ) throws(SubmissionError) -> Submission {
        let text = try MessageText.normalize(input, ignoreDots: options.ignoreDots)
        let header = HeaderSection(parsing: text)

        let sender = try senderAddress(options.sender, login: login, hostname: hostname)
        var recipientTexts: [String] = []
        for argument in options.recipients { recipientTexts += try addresses(argument) }
        if options.recipientsFromHeaders {
            for field in header.fields where ["to", "cc", "bcc"].contains(field.name.lowercased()) {
                recipientTexts += try addresses(field.unfoldedValue)
            }
        }
        var recipients: [String] = []
        var seen = Set<String>()
        var international = false
        for text in recipientTexts {
            guard let mailbox = mailbox(text, hostname: hostname) else { throw .badAddress(text) }
            international = international || mailbox.isInternationalized
            if seen.insert(mailbox.description.lowercased()).inserted { recipients.append(mailbox.description) }
        }
        guard !recipients.isEmpty else { throw .noRecipients }

        var message = Array(
            "Received: from local user \(login)\r\n\tby \(hostname) (dualmta) with local id \(queueID);\r\n\t\(date)\r\n"
                .utf8)
        // Bcc never leaves this host (RFC 5322 §3.6.3, the first of its options; Postfix does the same).
        for field in header.fields where field.name.lowercased() != "bcc" { message += field.raw }
        if !header.contains("From") {
            let address = "<\(sender.isEmpty ? "MAILER-DAEMON@\(hostname)" : sender)>"
            let name = options.fullName.map(DisplayName.encode) ?? ""
            message += Array("From: \(name.isEmpty ? "" : name + " ")\(address)\r\n".utf8)
        }
        if !header.contains("Date") { message += Array("Date: \(date)\r\n".utf8) }
        if !header.contains("Message-ID") { message += Array("Message-ID: <\(queueID)@\(hostname)>\r\n".utf8) }
        let body = text[header.bodyStart...]
        if header.hasSeparator || !body.isEmpty { message += [13, 10] }
        message += body
        guard message.count <= maxSize else { throw .tooLarge(limit: maxSize) }
        var submission = Submission(
            sender: sender, recipients: recipients, message: message,
            smtpUTF8: international || (sender.utf8.contains { $0 >= 0x80 }),
            eightBit: options.bodyType == "8BITMIME" || message.contains { $0 >= 0x80 })
        try submission.applyDSN(options)
        return submission
    }

    /// sendmail's `-N never|success,failure,delay`, `-R full|hdrs` and `-V envid` (the ENVID as plain text,
    /// printable ASCII, at most 100 characters).
    mutating func applyDSN(_ options: SendOptions) throws(SubmissionError) {
        if let text = options.dsnNotify {
            guard let parsed = DSNNotify(parameter: Substring(text)) else {
                throw .usage("-N takes never or a list of success, failure, delay")
            }
            notify = parsed
        }
        if let text = options.dsnReturn {
            guard let parsed = DSNReturn(rawValue: text.uppercased()) else { throw .usage("-R takes full or hdrs") }
            dsnReturn = parsed
        }
        if let text = options.envelopeID {
            guard !text.isEmpty, text.utf8.count <= 100, text.utf8.allSatisfy({ $0 >= 0x20 && $0 < 0x7F }) else {
                throw .usage("-V takes printable ASCII text of at most 100 characters")
            }
            envelopeID = text
        }
    }

    /// `-f` value → reverse path; default `login@hostname`.
    static func senderAddress(_ given: String?, login: String, hostname: String) throws(SubmissionError) -> String {
        guard var text = given else {
            guard let mailbox = mailbox(login, hostname: hostname) else { throw .badSender(login) }
            return mailbox.description
        }
        text = text.trimmingCharacters(in: .whitespaces)
        if text.hasPrefix("<") && text.hasSuffix(">") && text.count >= 2 { text = String(text.dropFirst().dropLast()) }
        if text.isEmpty { return "" }
        guard let mailbox = mailbox(text, hostname: hostname) else { throw .badSender(text) }
        return mailbox.description
    }

    /// An address, qualified with `hostname` when it has no domain (a local user, as in sendmail).
    static func mailbox(_ text: String, hostname: String) -> Mailbox? {
        let afterQuotes = text.lastIndex(of: "\"").map { text[$0...] } ?? text[...]
        let qualified = afterQuotes.contains("@") ? text : text + "@" + hostname
        return Mailbox(parsing: Substring(qualified), allowUTF8: true)
    }
}

// MARK: - The command

public enum SendCommand {
    /// Runs `dualmta send ARGS` / `sendmail ARGS` and returns the exit status.
    public static func main(arguments: [String]) -> Int32 {
        let options: SendOptions
        do throws(SubmissionError) {
            options = try SendArguments.parse(arguments)
        } catch {
            printError("dualmta: \(error)\n\(SendArguments.usage)\n")
            return error.exitStatus
        }
        for warning in options.warnings { printError("dualmta: warning: \(warning)\n") }
        if options.mode == .help {
            print(SendArguments.usage)
            return SysExit.ok
        }
        let configuration: Configuration
        do throws(ConfigLoadError) {
            configuration = try ConfigDiscovery.load(option: options.configPath, client: true).0
        } catch {
            printError("dualmta: \(error)\n")
            return SysExit.config
        }
        do throws(PrivilegeDrop.Failure) {
            // Root writing a run_as_user daemon's spool writes as its owner (the daemon refuses foreign files).
            try PrivilegeDrop.becomeSpoolOwner(configuration.spoolDirectory)
        } catch {
            printError("dualmta: \(error)\n")
            return SysExit.temporaryFailure
        }
        switch options.mode {
        case .listQueue, .flushQueue:
            return QueueControl.execute(
                options.mode == .listQueue ? .list(json: false) : .flush(nil),
                spoolDirectory: configuration.spoolDirectory, lifetimes: configuration.bounceSettings,
                out: { print($0, terminator: "") },
                err: printError)
        case .help, .send:
            break
        }
        do throws(SubmissionError) {
            let id: String
            if SpoolOwnership.mayWriteDirectly(configuration.spoolDirectory) {
                let queued = try submit(options: options, configuration: configuration, input: readInput)
                id = queued.rawValue
            } else {
                id = try submitThroughDaemon(options: options, configuration: configuration, input: readInput)
            }
            if options.verbose { printError("dualmta: queued as \(id)\n") }
            return SysExit.ok
        } catch {
            printError("dualmta: \(error)\n")
            return error.exitStatus
        }
    }

    /// Reads the message, composes it and commits it to the spool; then wakes a running daemon. Returns the id.
    public static func submit(
        options: SendOptions, configuration: Configuration,
        input: (Int) throws(SubmissionError) -> [UInt8]
    ) throws(SubmissionError) -> QueueID {
        // LF → CRLF may double the size, so read up to twice the limit and check the composed size.
        let raw = try input(configuration.messageSizeLimit * 2 + 1)
        guard raw.count <= configuration.messageSizeLimit * 2 else {
            throw .tooLarge(limit: configuration.messageSizeLimit)
        }
        // Refuse bad input (usage 64, data 65) before touching the spool, so those never turn into 75.
        _ = try Submission.compose(
            input: raw, options: options, hostname: configuration.hostname, login: loginName(),
            queueID: "00000000000000", date: MailDate.rfc5322(Int64(Date().timeIntervalSince1970)),
            maxSize: configuration.messageSizeLimit)
        let spool: Spool
        let incoming: IncomingMessage
        do throws(SpoolError) {
            spool = try Spool(directory: configuration.spoolDirectory)
            incoming = try spool.begin()
        } catch {
            throw .spool(error)
        }
        let now = Date()
        let submission: Submission
        do throws(SubmissionError) {
            submission = try Submission.compose(
                input: raw, options: options, hostname: configuration.hostname, login: loginName(),
                queueID: incoming.id.rawValue, date: MailDate.rfc5322(Int64(now.timeIntervalSince1970)),
                maxSize: configuration.messageSizeLimit)
        } catch {
            spool.abort(incoming)
            throw error
        }
        let seconds = Int64(now.timeIntervalSince1970)
        let envelope: Envelope
        do throws(SpoolError) {
            try incoming.append(submission.message)
            envelope = Envelope(
                arriving: incoming.id, sender: submission.sender,
                recipients: submission.recipients.map { RecipientRecord(address: $0, notify: submission.notify) },
                client: "local", heloName: "localhost", protocolName: "LOCAL",
                bodyType: submission.eightBit ? "8BITMIME" : nil, smtpUTF8: submission.smtpUTF8,
                messageSize: incoming.size, now: seconds, dsnReturn: submission.dsnReturn,
                envelopeID: submission.envelopeID)
            try spool.commit(incoming, envelope: envelope)
        } catch {
            spool.abort(incoming)
            throw .spool(error)
        }
        AcceptedLine.write(
            envelope: envelope, size: submission.message.count, user: loginName(), configuration: configuration,
            verbose: options.verbose)
        // Durable now; a daemon that is not running finds the message at its next start.
        try? ControlClient.send(.wake(incoming.id), path: ControlChannel.path(stateDirectory: spool.stateDirectory))
        return incoming.id
    }

    /// A user who does not own the spool: the composed message goes to the daemon over SMTP on loopback (the
    /// daemon logs its own `accepted` line). Returns the daemon's queue id.
    static func submitThroughDaemon(
        options: SendOptions, configuration: Configuration, input: (Int) throws(SubmissionError) -> [UInt8]
    ) throws(SubmissionError) -> String {
        let raw = try input(configuration.messageSizeLimit * 2 + 1)
        guard raw.count <= configuration.messageSizeLimit * 2 else {
            throw .tooLarge(limit: configuration.messageSizeLimit)
        }
        // The daemon's id is not known yet; the Message-ID gets a random unique part instead.
        let stamp = String(UInt64.random(in: 0...UInt64.max), radix: 36)
        let submission = try Submission.compose(
            input: raw, options: options, hostname: configuration.hostname, login: loginName(), queueID: stamp,
            date: MailDate.rfc5322(Int64(Date().timeIntervalSince1970)), maxSize: configuration.messageSizeLimit)
        return try DaemonSubmission.submit(submission, listen: configuration.listen, heloName: configuration.hostname)
    }

    /// Reads stdin to EOF, at most `limit` bytes (the caller treats reaching it as too large).
    static func readInput(limit: Int) throws(SubmissionError) -> [UInt8] {
        var data: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while data.count < limit {
            let count = buffer.withUnsafeMutableBytes { read(STDIN_FILENO, $0.baseAddress, $0.count) }
            if count == 0 { break }
            if count < 0 {
                if errno == EINTR { continue }
                throw .input(errno)
            }
            data += buffer[0..<count]
        }
        return data
    }

    /// The real user's login name, reduced to characters that are safe in a header and a local part.
    static func loginName() -> String {
        var name = ""
        if let entry = getpwuid(getuid()), let pointer = entry.pointee.pw_name { name = String(cString: pointer) }
        let safe = name.unicodeScalars.filter {
            $0.isASCII && (CharacterSet.alphanumerics.contains($0) || "._-".unicodeScalars.contains($0))
        }
        return safe.isEmpty ? "uid\(getuid())" : String(String.UnicodeScalarView(safe))
    }

    static func printError(_ text: String) {
        FileHandle.standardError.write(Data(text.utf8))
    }
}

/// `-F NAME` as a From display name (RFC 5322 §3.4): a quoted string when it is printable ASCII, else an RFC 2047
/// encoded word, so no header gets raw 8-bit text or a broken quote.
public enum DisplayName {
    public static func encode(_ name: String) -> String {
        let trimmed = name.trimmingCharacters(in: .whitespaces).filter { $0 != "\r" && $0 != "\n" }
        if trimmed.isEmpty { return "" }
        if trimmed.unicodeScalars.allSatisfy({ $0.isASCII && $0.value >= 32 && $0.value < 127 }) {
            let escaped = trimmed.flatMap { $0 == "\"" || $0 == "\\" ? ["\\", $0] : [$0] }
            return "\"" + String(escaped) + "\""
        }
        return "=?UTF-8?B?" + Data(trimmed.utf8).base64EncodedString() + "?="
    }
}
