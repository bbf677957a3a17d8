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
        subcommands: [Serve.self, Queue.self, Route.self, ConfigCommand.self],
        defaultSubcommand: Serve.self)
}

/// `-c FILE`, shared by the subcommands. Without it, the embedded defaults apply.
struct ConfigOption: ParsableArguments {
    @Option(name: [.customShort("c"), .long], help: "Config file (default: the embedded defaults).")
    var config: String?

    func load() throws -> Configuration {
        guard let config else { return Configuration.defaults }
        do {
            return try ConfigurationFile.load(path: config)
        } catch {
            FileHandle.standardError.write(Data("dualmta: \(error)\n".utf8))
            throw ExitCode(ExitStatus.config)
        }
    }
}

/// sysexits(3) values used by every command (DESIGN.md §1).
enum ExitStatus {
    static let usage: Int32 = 64
    static let dataError: Int32 = 65
    static let unavailable: Int32 = 69
    static let temporaryFailure: Int32 = 75
    static let config: Int32 = 78
}

struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the SMTP listeners and the queue runner (the default command).")

    @OptionGroup var options: ConfigOption

    func run() throws {
        let configuration = try options.load()
        do {
            try MailLog.bootstrap(format: configuration.logFormat, file: configuration.logFile)
        } catch {
            FileHandle.standardError.write(Data("dualmta: \(error)\n".utf8))
            throw ExitCode(ExitStatus.config)
        }
        let logger = Logger(label: "dualmta")
        do {
            let service = try MTAService(configuration: configuration, logger: logger)
            try service.start()
            service.runUntilSignalled()
        } catch {
            logger.critical("startup-failed", metadata: ["reason": "\(error)"])
            throw ExitCode(ExitStatus.unavailable)
        }
    }
}

struct Queue: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Inspect the queue.", subcommands: [List.self], defaultSubcommand: List.self)

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List queued messages (like mailq).")
        @OptionGroup var options: ConfigOption
        @Flag(help: "Print JSON.") var json = false

        func run() throws {
            let configuration = try options.load()
            do {
                let inspector = try QueueInspector(spoolDirectory: configuration.spoolDirectory)
                let (envelopes, problems) = try inspector.envelopes()
                print(
                    json ? QueueInspector.renderJSON(envelopes) : QueueInspector.renderText(envelopes), terminator: "")
                for problem in problems { FileHandle.standardError.write(Data("dualmta: \(problem)\n".utf8)) }
            } catch {
                FileHandle.standardError.write(Data("dualmta: \(error)\n".utf8))
                throw ExitCode(ExitStatus.temporaryFailure)
            }
        }
    }
}

struct ConfigCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config", abstract: "Validate or print the configuration.", subcommands: [Check.self, Show.self])

    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Validate the config file (line-numbered errors).")
        @OptionGroup var options: ConfigOption

        func run() throws {
            _ = try options.load()
            print("\(options.config ?? "embedded defaults"): ok")
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
        let configuration = try options.load()
        do {
            try MailLog.bootstrap(format: configuration.logFormat, file: nil)
            let text = try RouteExplainer.explain(
                target, configuration: configuration, json: json, logger: Logger(label: "dualmta"))
            print(text, terminator: text.hasSuffix("\n") ? "" : "\n")
        } catch {
            FileHandle.standardError.write(Data("dualmta: \(error)\n".utf8))
            throw ExitCode(ExitStatus.usage)
        }
    }
}
