import ArgumentParser
import Faults
import Foundation
import MTA

/// `dualmta fault list | add RULE | delete ID | clear`: the running daemon's fault rules (see README, "Fault rules").
struct FaultCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fault", abstract: "List, add, delete or clear the running daemon's fault rules.",
        subcommands: [List.self, Add.self, Delete.self, Clear.self])

    /// Sends the command to the daemon of the configured spool and prints its reply; exit 65 when the daemon
    /// refused it, 69 when no daemon runs.
    static func send(_ command: FaultControlCommand, options: ConfigOption) throws -> String {
        let configuration = try options.load(client: true)
        let path = ControlChannel.path(stateDirectory: configuration.spoolDirectory + "/state")
        let reply: String
        do throws(ControlChannelError) {
            reply = try ControlClient.request(.fault(command), path: path)
        } catch {
            FileHandle.standardError.write(Data("dualmta: fault: \(error)\n".utf8))
            throw ExitCode(SysExit.unavailable)
        }
        var lines = reply.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let status = lines.isEmpty ? "" : lines.removeFirst()
        guard status == "ok" else {
            FileHandle.standardError.write(Data("dualmta: fault: \(status.replacing("error: ", with: ""))\n".utf8))
            throw ExitCode(SysExit.dataError)
        }
        return lines.joined(separator: "\n")
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the rules with their ids and counters.")
        @OptionGroup var options: ConfigOption
        func run() throws { print(try FaultCommand.send(.list, options: options), terminator: "") }
    }

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Add a rule; prints its id.")
        @OptionGroup var options: ConfigOption
        @Argument(help: "SIDE STAGE [MATCH ...] ACTION [ARGS] [LIMIT ...] (one quoted argument or several words)")
        var rule: [String] = []

        func run() throws {
            let text = rule.joined(separator: " ")
            // The same parser and message as a `fault =` line; nothing is sent for a rule that does not parse.
            do throws(FaultRuleError) {
                _ = try FaultRule(parsing: text)
            } catch {
                FileHandle.standardError.write(Data("dualmta: fault: \(error.message)\n".utf8))
                throw ExitCode(SysExit.dataError)
            }
            print(try FaultCommand.send(.add(text), options: options), terminator: "")
        }
    }

    struct Delete: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete the rule with this id (F3).")
        @OptionGroup var options: ConfigOption
        @Argument(help: "The rule's id.") var id: String
        func run() throws { print(try FaultCommand.send(.delete(id), options: options), terminator: "") }
    }

    struct Clear: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete every rule.")
        @OptionGroup var options: ConfigOption
        func run() throws { print(try FaultCommand.send(.clear, options: options), terminator: "") }
    }
}
