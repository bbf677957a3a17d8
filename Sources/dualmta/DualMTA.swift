import ArgumentParser
import Foundation
import Logging
import MTA

/// The command line: argument parsing only; the work is in the MTA module.
@main
struct DualMTA: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dualmta",
        abstract: "A small dual-stack SMTP mail transfer agent.",
        version: "dualmta \(DualMTAVersion.text)",
        subcommands: [
            Serve.self, Send.self, Queue.self, Route.self, CheckCommand.self, ConfigCommand.self, Passwd.self,
            StatsCommand.self, Trace.self, FaultCommand.self,
        ],
        defaultSubcommand: Serve.self)

    /// Invoked as `sendmail` or as `dualmta send`, the sendmail flags are parsed by hand (argument-parser cannot
    /// express `-fSENDER`, `-oi` or `-bp`); invoked as `mailq`, it is `queue list`.
    static func main() {
        let arguments = CommandLine.arguments
        let name = arguments.first.map { String($0.split(separator: "/").last ?? "") } ?? ""
        if name == "sendmail" { Foundation.exit(SendCommand.main(arguments: Array(arguments.dropFirst()))) }
        if name == "mailq" {
            Self.main(["queue", "list"] + mailqArguments(Array(arguments.dropFirst())))
            return
        }
        if arguments.count > 1 && arguments[1] == "send" {
            Foundation.exit(SendCommand.main(arguments: Array(arguments.dropFirst(2))))
        }
        Self.main(nil)
    }

    /// `mailq -C FILE` (sendmail's spelling) is `-c FILE`; `-v` is accepted and means nothing more here.
    static func mailqArguments(_ arguments: [String]) -> [String] {
        arguments.flatMap { argument -> [String] in
            if argument == "-C" { return ["-c"] }
            if argument.hasPrefix("-C") { return ["-c", String(argument.dropFirst(2))] }
            return argument == "-v" ? [] : [argument]
        }
    }
}

/// `-c FILE`, shared by the subcommands. Without it: `$DUALMTA_CONFIG`, then /etc/dualmta/dualmta.conf, then the
/// embedded defaults (ConfigDiscovery).
struct ConfigOption: ParsableArguments {
    @Option(
        name: [.customShort("c"), .long],
        help: "Config file (default: $DUALMTA_CONFIG, else /etc/dualmta/dualmta.conf, else the embedded defaults).")
    var config: String?

    /// The config of the daemon and of tools that do not touch the spool. `checkingFiles`: also require the files
    /// the daemon opens at start to be readable (`serve`, `config check`).
    func load(checkingFiles: Bool = false) throws -> Configuration {
        try load(client: false, checkingFiles: checkingFiles)
    }

    /// A client of a running MTA (queue commands): without a config it needs an existing spool (exit 78 otherwise).
    func load(client: Bool, checkingFiles: Bool = false) throws -> Configuration {
        do throws(ConfigLoadError) {
            return try ConfigDiscovery.load(option: config, client: client, checkingFiles: checkingFiles).0
        } catch {
            FileHandle.standardError.write(Data("dualmta: \(error)\n".utf8))
            throw ExitCode(SysExit.config)
        }
    }

    /// The config file in use; nil on the embedded defaults.
    var sourcePath: String? {
        ConfigDiscovery.source(
            option: config, environment: ProcessInfo.processInfo.environment,
            fileExists: { FileManager.default.fileExists(atPath: $0) }
        ).path
    }

    /// What `config check` names: the file, or "embedded defaults".
    var sourceName: String { sourcePath ?? "embedded defaults" }
}

struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the SMTP listeners and the queue runner (the default command).")

    @OptionGroup var options: ConfigOption

    func run() throws {
        let configuration = try options.load(checkingFiles: true)
        let configPath = options.sourcePath
        do {
            try MailLog.bootstrap(format: configuration.logFormat, file: configuration.logFile)
        } catch {
            FileHandle.standardError.write(Data("dualmta: \(error)\n".utf8))
            throw ExitCode(SysExit.config)
        }
        let logger = Logger(label: "dualmta")
        do {
            let service = try MTAService(configuration: configuration, logger: logger)
            try service.start()
            service.runUntilSignalled(configPath: configPath)
        } catch {
            logger.critical("startup-failed", metadata: ["reason": "\(error)"])
            throw ExitCode(SysExit.unavailable)
        }
    }
}

/// Listed for `--help` only: `main()` hands `dualmta send ...` to SendCommand before argument-parser sees it.
struct Send: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Submit a message on stdin into the spool (sendmail-compatible: -f SENDER, -t, -i, -bp, -q).")

    @Argument(parsing: .captureForPassthrough, help: "sendmail flags and recipients") var arguments: [String] = []

    func run() throws {
        let status = SendCommand.main(arguments: arguments)
        if status != 0 { throw ExitCode(status) }
    }
}

struct Trace: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print a message's story: its attempts, the reports it caused and their fate, across queue ids.")
    @OptionGroup var options: ConfigOption
    @Argument(help: "Queue id (of the original or of any report in the chain).") var id: String
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        let configuration = try options.load(client: true)
        let status = MessageTrace.execute(
            id, json: json, spoolDirectory: configuration.spoolDirectory, out: { print($0, terminator: "") },
            err: { FileHandle.standardError.write(Data($0.utf8)) })
        if status != 0 { throw ExitCode(status) }
    }
}

struct Queue: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Inspect and control the queue.",
        subcommands: [List.self, Show.self, Delete.self, Hold.self, Release.self, Bounce.self, Flush.self],
        defaultSubcommand: List.self)

    /// Runs one queue command against the configured spool, exiting with its sysexits status.
    static func run(_ command: QueueCommand, options: ConfigOption) throws {
        let configuration = try options.load(client: true)
        do throws(PrivilegeDrop.Failure) {
            try PrivilegeDrop.becomeSpoolOwner(configuration.spoolDirectory)
        } catch {
            FileHandle.standardError.write(Data("dualmta: \(error)\n".utf8))
            throw ExitCode(SysExit.unavailable)
        }
        let status = QueueControl.execute(
            command, spoolDirectory: configuration.spoolDirectory, lifetimes: configuration.bounceSettings,
            out: { print($0, terminator: "") },
            err: { FileHandle.standardError.write(Data($0.utf8)) })
        if status != 0 { throw ExitCode(status) }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print a message's envelope, each recipient's state and every delivery attempt.")
        @OptionGroup var options: ConfigOption
        @Argument(help: "Queue id.") var id: String
        @Flag(help: "Print JSON.") var json = false
        func run() throws { try Queue.run(.show(id, json: json), options: options) }
    }

    struct Delete: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove a message without a bounce.")
        @OptionGroup var options: ConfigOption
        @Argument(help: "Queue id.") var id: String
        func run() throws { try Queue.run(.delete(id), options: options) }
    }

    struct Hold: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Keep a message queued without delivery attempts.")
        @OptionGroup var options: ConfigOption
        @Argument(help: "Queue id.") var id: String
        func run() throws { try Queue.run(.hold(id), options: options) }
    }

    struct Release: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Undo hold.")
        @OptionGroup var options: ConfigOption
        @Argument(help: "Queue id.") var id: String
        func run() throws { try Queue.run(.release(id), options: options) }
    }

    struct Bounce: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Fail every pending recipient now (5.0.0); the daemon sends the report.")
        @OptionGroup var options: ConfigOption
        @Argument(help: "Queue id.") var id: String
        func run() throws { try Queue.run(.bounce(id), options: options) }
    }

    struct Flush: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Retry one message, or every message, now (tells the running daemon).")
        @OptionGroup var options: ConfigOption
        @Argument(help: "Queue id (default: every message).") var id: String?
        func run() throws { try Queue.run(.flush(id), options: options) }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List queued messages (like mailq).")
        @OptionGroup var options: ConfigOption
        @Flag(help: "Print JSON.") var json = false

        func run() throws { try Queue.run(.list(json: json), options: options) }
    }
}

struct ConfigCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config", abstract: "Validate or print the configuration.", subcommands: [Check.self, Show.self])

    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Validate the config file (line-numbered errors).")
        @OptionGroup var options: ConfigOption

        func run() throws {
            let configuration = try options.load(checkingFiles: true)
            print("\(options.sourceName): ok")
            // The same self-check `serve` logs at start: listener families, then warnings (not errors).
            let report = SelfCheck.run(configuration)
            for line in report.listeners { print("listener \(line)") }
            for note in report.notes { print("info: \(note)") }
            for warning in report.warnings { print("warning: \(warning)") }
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the effective settings.")
        @OptionGroup var options: ConfigOption

        func run() throws {
            print(ConfigurationFile.render(try options.load()), terminator: "")
        }
    }
}

struct Route: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Explain the outbound plan for an address or domain: MX set, addresses in try order, skips.")

    @OptionGroup var options: ConfigOption
    @Argument(help: "user@domain, a domain, or an address literal such as [IPv6:2001:db8::1].") var target: String
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        let configuration = try options.load(checkingFiles: true)
        do {
            try MailLog.bootstrap(format: configuration.logFormat, file: nil)
            let text = try RouteExplainer.explain(
                target, configuration: configuration, json: json, logger: Logger(label: "dualmta"))
            print(text, terminator: text.hasSuffix("\n") ? "" : "\n")
        } catch {
            FileHandle.standardError.write(Data("dualmta: \(error)\n".utf8))
            throw ExitCode(SysExit.usage)
        }
    }
}

struct CheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Audit a domain's MX setup for dual-stack delivery: families, unroutable MX combinations, "
            + "transition-mechanism addresses, SMTP reachability of every MX address. Exit 0 ok, 1 warnings, "
            + "2 problems.")

    @OptionGroup var options: ConfigOption
    @Argument(help: "The domain (or user@domain) to check.") var domain: String
    @Flag(help: "Print JSON.") var json = false
    @Flag(help: "Documentation addresses are problems (a real domain), not notes (the lab).") var internet = false
    @Flag(help: "DNS only: do not connect to the MX addresses.") var noConnect = false

    func run() throws {
        let configuration = try options.load()
        let audit: (text: String, status: Int32)
        do {
            audit = try ReadinessCheck.check(
                domain, configuration: configuration, internet: internet, probe: !noConnect, json: json)
        } catch {
            FileHandle.standardError.write(Data("dualmta: \(error)\n".utf8))
            throw ExitCode(SysExit.usage)
        }
        print(audit.text, terminator: "")
        if audit.status != 0 { throw ExitCode(audit.status) }
    }
}

struct StatsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stats", abstract: "Print the running daemon's metrics (fetched from http_listen).")

    @OptionGroup var options: ConfigOption
    @Flag(help: "Print the full Prometheus text, with HELP, TYPE and histogram buckets.") var raw = false

    func run() throws {
        let configuration = try options.load()
        do {
            print(Stats.summary(try Stats.fetch(configuration), raw: raw), terminator: "")
        } catch {
            FileHandle.standardError.write(Data("dualmta: \(error)\n".utf8))
            throw ExitCode(SysExit.unavailable)
        }
    }
}
