import ArgumentParser
import Foundation
import MTA

/// `dualmta passwd USER`: prints a `user:hash` line for `submission_users_file`. The password is read from stdin:
/// with echo off and asked twice on a terminal, else the first line (for scripts: `echo pw | dualmta passwd bob`).
struct Passwd: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print a submission_users_file line (user:hash) for USER; the password is read from stdin.")

    @Argument(help: "The user name clients send in AUTH.") var user: String
    @Flag(help: "SHA-512 crypt ($6$) instead of yescrypt ($y$), for systems whose crypt lacks yescrypt.")
    var sha512 = false

    func run() throws {
        let password: String
        if isatty(STDIN_FILENO) == 1 {
            guard let first = Self.readHidden(prompt: "Password: "),
                let second = Self.readHidden(prompt: "Retype password: ")
            else { throw Self.fail("no password read") }
            guard first == second else { throw Self.fail("the passwords differ") }
            password = first
        } else {
            guard var line = readLine(strippingNewline: true) else { throw Self.fail("no password on stdin") }
            if line.hasSuffix("\r") { line.removeLast() }
            password = line
        }
        do {
            print(try PasswordTool.line(user: user, password: password, sha512: sha512))
        } catch {
            throw Self.fail("\(error)")
        }
    }

    private static func fail(_ message: String) -> ExitCode {
        FileHandle.standardError.write(Data("dualmta: \(message)\n".utf8))
        return ExitCode(SysExit.usage)
    }

    /// One line from the terminal with echo off; the terminal settings are restored even on EOF.
    private static func readHidden(prompt: String) -> String? {
        FileHandle.standardError.write(Data(prompt.utf8))
        var saved = termios()
        let haveSettings = tcgetattr(STDIN_FILENO, &saved) == 0
        if haveSettings {
            var silent = saved
            silent.c_lflag &= ~tcflag_t(ECHO)
            _ = tcsetattr(STDIN_FILENO, TCSAFLUSH, &silent)
        }
        defer {
            if haveSettings { _ = tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved) }
            FileHandle.standardError.write(Data("\n".utf8))
        }
        return readLine(strippingNewline: true)
    }
}
