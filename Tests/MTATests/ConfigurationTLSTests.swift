import Foundation
import Testing

@testable import MTA

/// The TLS and submission keys (issue 5) and their cross-key rules.
@Suite struct ConfigurationTLSTests {
    private func parse(_ text: String) -> Result<Configuration, ConfigurationError> {
        do throws(ConfigurationError) {
            return .success(try ConfigurationFile.parse(text, checkingFiles: true))
        } catch {
            return .failure(error)
        }
    }

    private func error(_ text: String) -> String? {
        if case .failure(let error) = parse(text) { return error.description }
        return nil
    }

    @Test func defaults() throws {
        let configuration = try ConfigurationFile.parse("")
        #expect(configuration.smtpTLS == .may)
        #expect(configuration.tlsCertFile == nil && configuration.tlsKeyFile == nil)
        #expect(configuration.submissionListen.isEmpty && configuration.submissionsListen.isEmpty)
        #expect(configuration.outbound.tlsPolicy == .may)
    }

    @Test func everyKey() throws {
        let users = NSTemporaryDirectory() + "dualmta-users-\(UUID().uuidString)"
        try "alice:$y$j9T$abc$def\n".write(toFile: users, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: users) }
        let text = """
            tls_cert_file = /etc/dualmta/cert.pem
            tls_key_file = /etc/dualmta/key.pem
            smtp_tls = Encrypt
            submission_listen = [::1]:2587, 127.0.0.1:2587
            submissions_listen = 127.0.0.1:2465
            submission_users_file = \(users)
            """
        let configuration = try ConfigurationFile.parse(text)
        #expect(configuration.tlsCertFile == "/etc/dualmta/cert.pem")
        #expect(configuration.tlsKeyFile == "/etc/dualmta/key.pem")
        #expect(configuration.smtpTLS == .encrypt)
        #expect(configuration.submissionListen.map(\.description) == ["[::1]:2587", "127.0.0.1:2587"])
        #expect(configuration.submissionsListen.map(\.description) == ["127.0.0.1:2465"])
        #expect(configuration.submissionUsersFile == users)
        #expect(configuration.outbound.tlsPolicy == .encrypt)
        // `config show` prints what parses back to the same settings.
        #expect(try ConfigurationFile.parse(ConfigurationFile.render(configuration)) == configuration)
    }

    @Test(arguments: [
        ("smtp_tls = maybe", "smtp_tls: expected none, may or encrypt"),
        ("tls_cert_file = /x.pem", "set both or neither"),
        ("tls_key_file = /x.pem", "set both or neither"),
        ("submission_listen = 127.0.0.1:2587", "need submission_users_file"),
        ("submission_listen = 127.0.0.1:2587\nsubmission_users_file = /nonexistent/users", "cannot read"),
        ("submissions_listen = 127.0.0.1:2465\nsubmission_users_file = /nonexistent/users", "cannot read"),
        ("submission_listen = 2587", "is not an address with a port"),
    ])
    func badValues(text: String, expected: String) {
        let message = error(text)
        #expect(message?.contains(expected) == true, "\(message ?? "accepted")")
    }

    @Test func listenersMayNotOverlap() throws {
        let users = NSTemporaryDirectory() + "dualmta-users-\(UUID().uuidString)"
        try "".write(toFile: users, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: users) }
        let message = error(
            "listen = 127.0.0.1:2525\nsubmission_listen = 127.0.0.1:2525\nsubmission_users_file = \(users)")
        #expect(message?.contains("listed twice") == true)
    }

    @Test func passwordLines() throws {
        let line = try PasswordTool.line(user: "alice", password: "pw", sha512: false)
        #expect(line.hasPrefix("alice:$y$"))
        #expect(try PasswordTool.line(user: "bob", password: "pw", sha512: true).hasPrefix("bob:$6$"))
        #expect(throws: PasswordTool.Failure.self) { try PasswordTool.line(user: "a:b", password: "pw", sha512: false) }
        #expect(throws: PasswordTool.Failure.self) { try PasswordTool.line(user: "alice", password: "", sha512: false) }
    }
}
