import DNS
import Foundation
import NetAddress
import Routing
import Sockets

/// A config error names the file and line, as a compiler would: `etc/dualmta.conf:12: unknown key "lisen"`.
public struct ConfigurationError: Error, Equatable, Sendable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public var message: String

    public var description: String { line > 0 ? "\(file):\(line): \(message)" : "\(file): \(message)" }
}

/// The Postfix-like `key = value` format: `#` comments, lists separated by commas or spaces, durations
/// (`30s 5m 1h 5d`), sizes (`10M`). Unknown keys, repeated keys and bad values are errors with file:line.
public enum ConfigurationFile {
    /// Reads and validates a config file. With `checkingFiles` (`serve`, `config check`) the files the daemon opens
    /// at start (TLS certificate and key, users file) must be readable too; other commands (`send`, `queue`, run by
    /// users who may not read the TLS key) skip that.
    public static func load(path: String, checkingFiles: Bool = false) throws(ConfigurationError) -> Configuration {
        let bytes: [UInt8]
        do throws(FileReadError) {
            bytes = try readWholeFile(path)
        } catch {
            throw ConfigurationError(file: path, line: 0, message: "cannot read the file: \(error.reason)")
        }
        return try parse(bytes: bytes, file: path, checkingFiles: checkingFiles)
    }

    /// Parses config text on top of the embedded defaults.
    public static func parse(
        _ text: String, file: String = "<config>", checkingFiles: Bool = false
    ) throws(ConfigurationError) -> Configuration {
        try parse(bytes: Array(text.utf8), file: file, checkingFiles: checkingFiles)
    }

    /// Parses the bytes of a config file (LF or CRLF line ends, an optional UTF-8 byte-order mark).
    public static func parse(
        bytes: [UInt8], file: String = "<config>", checkingFiles: Bool = false
    ) throws(ConfigurationError) -> Configuration {
        let lines: [ConfigurationLines.Line]
        switch ConfigurationLines.split(bytes) {
        case .success(let value): lines = value
        case .failure(let problem): throw ConfigurationError(file: file, line: problem.line, message: problem.message)
        }
        var configuration = Configuration.defaults
        var seen: [String: Int] = [:]
        for line in lines {
            let lineNumber = line.number
            let trimmed = line.content.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty { continue }
            guard let equals = trimmed.firstIndex(of: "=") else {
                throw ConfigurationError(file: file, line: lineNumber, message: "expected \"key = value\"")
            }
            let key = trimmed[..<equals].trimmingCharacters(in: .whitespaces).lowercased()
            let value = trimmed[trimmed.index(after: equals)...].trimmingCharacters(in: .whitespaces)
            guard let setting = ConfigurationKey.all.first(where: { $0.name == key }) else {
                throw ConfigurationError(file: file, line: lineNumber, message: "unknown key \"\(key)\"")
            }
            if let earlier = seen[key], !setting.repeatable {
                throw ConfigurationError(
                    file: file, line: lineNumber, message: "\"\(key)\" is already set on line \(earlier)")
            }
            seen[key] = lineNumber
            do throws(ValueError) {
                try setting.apply(&configuration, value)
            } catch {
                throw ConfigurationError(file: file, line: lineNumber, message: "\(key): \(error.message)")
            }
        }
        do throws(ValueError) {
            try validate(configuration)
            if checkingFiles { try ConfigurationKey.checkFiles(configuration) }
        } catch {
            // A rule across keys points at the line of the key it names (the later one, for a conflict).
            throw ConfigurationError(file: file, line: error.key.flatMap { seen[$0] } ?? 0, message: error.message)
        }
        return configuration
    }

    /// Rules that span several keys, and the files `serve` will open: whatever `serve` would refuse at start,
    /// `config check` refuses too.
    static func validate(_ configuration: Configuration) throws(ValueError) {
        if configuration.listen.isEmpty { throw ValueError("listen: at least one address is required", key: "listen") }
        if configuration.recipientLimit < 100 {
            throw ValueError("recipient_limit: RFC 5321 §4.5.3.1.8 requires at least 100", key: "recipient_limit")
        }
        if configuration.messageSizeLimit < 65536 {
            throw ValueError(
                "message_size_limit: RFC 5321 §4.5.3.1.7 requires at least 64K", key: "message_size_limit")
        }
        try ConfigurationKey.validateTLS(configuration)
        try ListenerConflicts.check(ListenerConflicts.listeners(of: configuration))
    }

    /// The effective settings in file form (what `dualmta config show` prints); parsing it gives the same settings.
    public static func render(_ configuration: Configuration) -> String {
        ConfigurationKey.all.map { key in
            key.render(configuration).map { "\(key.name) = \($0)" } ?? "#\(key.name) =   (not set)"
        }.joined(separator: "\n") + "\n"
    }
}

/// A bad value; the parser adds the file, line and key.
struct ValueError: Error {
    var message: String
    /// For a rule across keys: the key whose line the error should point at.
    var key: String?
    init(_ message: String, key: String? = nil) {
        self.message = message
        self.key = key
    }
}

/// One config key: its name, how to read a value into the settings, and how to print it back.
struct ConfigurationKey: Sendable {
    let name: String
    let apply: @Sendable (inout Configuration, String) throws(ValueError) -> Void
    /// The value in file form; nil when the key is unset (optional keys without a default value).
    let render: @Sendable (Configuration) -> String?
    /// The key may be given on several lines, each adding to a list (`fault`).
    var repeatable = false

    /// Every key, in the order `config show` prints them; each feature keeps its keys in its own file.
    static let all: [ConfigurationKey] =
        coreKeys + outboundKeys + tlsKeys + tlsPolicyKeys + bounceKeys + metricsKeys + faultKeys

    static let coreKeys: [ConfigurationKey] = [
        ConfigurationKey(
            name: "hostname",
            apply: { config, value throws(ValueError) in config.hostname = try ValueParser.domain(value) },
            render: { $0.hostname }),
        ConfigurationKey(
            name: "listen",
            apply: { config, value throws(ValueError) in config.listen = try ValueParser.socketAddresses(value) },
            render: { $0.listen.map(\.description).joined(separator: ", ") }),
        ConfigurationKey(
            name: "spool_dir",
            apply: { config, value throws(ValueError) in
                guard !value.isEmpty else { throw ValueError("a directory is required") }
                config.spoolDirectory = value
            },
            render: { $0.spoolDirectory }),
        ConfigurationKey(
            name: "local_domains",
            apply: { config, value throws(ValueError) in config.localDomains = try ValueParser.domains(value) },
            render: { $0.localDomains.joined(separator: ", ") }),
        ConfigurationKey(
            name: "local_recipients",
            apply: { config, value throws(ValueError) in config.localRecipients = try ValueParser.users(value) },
            render: { $0.localRecipients?.joined(separator: ", ") }),
        ConfigurationKey(
            name: "relay_domains",
            apply: { config, value throws(ValueError) in config.relayDomains = try ValueParser.domains(value) },
            render: { $0.relayDomains.joined(separator: ", ") }),
        ConfigurationKey(
            name: "relay_recipients",
            apply: { config, value throws(ValueError) in config.relayRecipients = try ValueParser.users(value) },
            render: { $0.relayRecipients?.joined(separator: ", ") }),
        ConfigurationKey(
            name: "relay_networks",
            apply: { config, value throws(ValueError) in config.relayNetworks = try ValueParser.networks(value) },
            render: { $0.relayNetworks.map(\.description).joined(separator: ", ") }),
        ConfigurationKey(
            name: "message_size_limit",
            apply: { config, value throws(ValueError) in config.messageSizeLimit = try ValueParser.size(value) },
            render: { String($0.messageSizeLimit) }),
        ConfigurationKey(
            name: "max_connections",
            apply: { config, value throws(ValueError) in
                config.maxConnections = try ValueParser.count(value, range: 1...19_000)
            },
            render: { String($0.maxConnections) }),
        ConfigurationKey(
            name: "max_connections_per_client",
            apply: { config, value throws(ValueError) in
                config.maxConnectionsPerClient = try ValueParser.count(value, range: 1...19_000)
            },
            render: { String($0.maxConnectionsPerClient) }),
        ConfigurationKey(
            name: "recipient_limit",
            apply: { config, value throws(ValueError) in
                config.recipientLimit = try ValueParser.count(value, range: 1...100_000)
            },
            render: { String($0.recipientLimit) }),
        ConfigurationKey(
            name: "command_timeout",
            apply: { config, value throws(ValueError) in
                // Zero would greet every client and hang up at once (221 then 421).
                config.commandTimeout = try ValueParser.positiveDuration(value)
            },
            render: { ValueParser.render($0.commandTimeout) }),
        ConfigurationKey(
            name: "log_format",
            apply: { config, value throws(ValueError) in
                guard let format = Configuration.LogFormat(rawValue: value.lowercased()) else {
                    throw ValueError("expected text or json, got \"\(value)\"")
                }
                config.logFormat = format
            },
            render: { $0.logFormat.rawValue }),
        ConfigurationKey(
            name: "run_as_user",
            apply: { config, value throws(ValueError) in
                guard !value.isEmpty else {
                    config.runAsUser = nil
                    return
                }
                // Looked up now, so `config check` fails where `serve` would.
                guard PrivilegeDrop.account(named: value) != nil else { throw ValueError("no such user \"\(value)\"") }
                config.runAsUser = value
            },
            render: { $0.runAsUser }),
        ConfigurationKey(
            name: "log_file",
            apply: { config, value throws(ValueError) in config.logFile = value.isEmpty ? nil : value },
            render: { $0.logFile }),
        ConfigurationKey(
            name: "hold_incoming",
            apply: { config, value throws(ValueError) in config.holdIncoming = try ValueParser.boolean(value) },
            render: { $0.holdIncoming ? "yes" : "no" }),
    ]
}

/// Parsers for the value types of the config file. Each throws a message without file or line.
enum ValueParser {
    static func list(_ value: String) -> [String] {
        value.split(whereSeparator: { $0 == "," || $0 == " " || $0 == "\t" }).map(String.init)
    }

    /// A host or domain name: letters, digits, hyphens, dots; no empty label; labels ≤ 63, total ≤ 253.
    static func domain(_ value: String) throws(ValueError) -> String {
        var name = value.lowercased()
        if name.hasSuffix(".") { name.removeLast() }
        let labels = name.split(separator: ".", omittingEmptySubsequences: false)
        guard !name.isEmpty, name.utf8.count <= 253,
            labels.allSatisfy({ label in
                !label.isEmpty && label.utf8.count <= 63 && !label.hasPrefix("-") && !label.hasSuffix("-")
                    && label.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }
            })
        else { throw ValueError("\"\(value)\" is not a valid domain name") }
        return name
    }

    static func domains(_ value: String) throws(ValueError) -> [String] {
        var result: [String] = []
        for item in list(value) { result.append(try domain(item)) }
        return result
    }

    /// `user` or `user@domain` entries for recipient lists; compared case-insensitively.
    static func users(_ value: String) throws(ValueError) -> [String] {
        let items = list(value)
        guard !items.isEmpty else { throw ValueError("an empty list; leave the key out to accept any recipient") }
        for item in items where item.hasPrefix("@") || item.hasSuffix("@") || item.contains("/") {
            throw ValueError("\"\(item)\" is not a user or user@domain")
        }
        return items.map { $0.lowercased() }
    }

    static func socketAddresses(_ value: String) throws(ValueError) -> [SocketAddress] {
        var result: [SocketAddress] = []
        for item in list(value) {
            guard let address = SocketAddress(parsing: item) else {
                throw ValueError("\"\(item)\" is not an address with a port, e.g. [::]:2525 or 0.0.0.0:2525")
            }
            // Port 0 would bind a random port nobody knows about.
            guard address.port != 0 else { throw ValueError("\"\(item)\": port 0 is not a port to listen on") }
            result.append(address)
        }
        return result
    }

    static func networks(_ value: String) throws(ValueError) -> [CIDR] {
        var result: [CIDR] = []
        for item in list(value) {
            guard let network = CIDR(item) else {
                throw ValueError("\"\(item)\" is not a network, e.g. 127.0.0.0/8 or [::1]/128")
            }
            result.append(network)
        }
        return result
    }

    static func count(_ value: String, range: ClosedRange<Int>) throws(ValueError) -> Int {
        guard let number = Int(value), range.contains(number) else {
            throw ValueError("expected a number in \(range.lowerBound)...\(range.upperBound), got \"\(value)\"")
        }
        return number
    }

    /// `10M`, `512K`, `1G` or plain bytes.
    static func size(_ value: String) throws(ValueError) -> Int {
        let units: [Character: Int] = ["K": 1024, "M": 1024 * 1024, "G": 1024 * 1024 * 1024]
        var digits = value.uppercased()
        var multiplier = 1
        if let last = digits.last, let unit = units[last] {
            multiplier = unit
            digits.removeLast()
        }
        guard let number = Int(digits), number > 0, number <= Int(Int32.max) / multiplier else {
            throw ValueError("expected a size such as 10M, got \"\(value)\"")
        }
        return number * multiplier
    }

    /// `30s`, `5m`, `1h`, `5d`, `250ms`; a plain number means seconds.
    static func duration(_ value: String) throws(ValueError) -> Duration {
        let lower = value.lowercased()
        let units: [(String, Int64)] = [("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000)]
        for (suffix, milliseconds) in units where lower.hasSuffix(suffix) {
            let digits = lower.dropLast(suffix.count)
            if let number = Int64(digits), number >= 0, !digits.isEmpty {
                return .milliseconds(number * milliseconds)
            }
        }
        if let seconds = Int64(lower), seconds >= 0 { return .seconds(seconds) }
        throw ValueError("expected a duration such as 30s, 5m, 1h or 5d, got \"\(value)\"")
    }

    static func positiveDuration(_ value: String) throws(ValueError) -> Duration {
        let parsed = try duration(value)
        guard parsed > .zero else { throw ValueError("must be more than zero") }
        return parsed
    }

    static func boolean(_ value: String) throws(ValueError) -> Bool {
        switch value.lowercased() {
        case "yes", "true", "on", "1": return true
        case "no", "false", "off", "0": return false
        default: throw ValueError("expected yes or no, got \"\(value)\"")
        }
    }

    static func address(_ value: String, family: AddressFamily) throws(ValueError) -> IPAddress {
        var text = value
        if text.hasPrefix("[") && text.hasSuffix("]") { text = String(text.dropFirst().dropLast()) }
        guard let address = IPAddress(text), address.family == family else {
            throw ValueError("\"\(value)\" is not an \(family == .ipv4 ? "IPv4" : "IPv6") address")
        }
        return address
    }

    static func render(_ duration: Duration) -> String {
        let milliseconds = duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000
        for (suffix, unit) in [("d", Int64(86_400_000)), ("h", 3_600_000), ("m", 60_000), ("s", 1000)]
        where milliseconds >= unit && milliseconds % unit == 0 {
            return "\(milliseconds / unit)\(suffix)"
        }
        return "\(milliseconds)ms"
    }
}
