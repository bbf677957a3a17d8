import Foundation
import SMTPProtocol
import Testing

@testable import SMTPServer

@Suite struct UserDatabaseTests {
    @discardableResult
    private func withFile<T>(_ text: String, _ body: (String) throws -> T) throws -> T {
        let path = NSTemporaryDirectory() + "dualmta-users-\(UUID().uuidString)"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        return try body(path)
    }

    @Test(arguments: PasswordHash.Scheme.allCases)
    func hashesVerifyWithTheSystemCrypt(scheme: PasswordHash.Scheme) throws {
        let hash = try PasswordHash.make("s3cret pass", scheme: scheme)
        #expect(hash.hasPrefix(scheme.rawValue))
        #expect(PasswordHash.matches("s3cret pass", hash: hash))
        #expect(!PasswordHash.matches("s3cret pasS", hash: hash))
        #expect(!PasswordHash.matches("", hash: hash))
        #expect(try PasswordHash.make("s3cret pass", scheme: scheme) != hash)  // fresh salt each time
    }

    @Test func knownHashFromMkpasswd() {
        // `openssl passwd -6 -salt abcdefgh secret`, made by another implementation
        let hash = "$6$abcdefgh$ltjgWl6579NluT/Vi1nwEvcil.G5Nbc4NiXZaNGStk8PSwGfQv72N2CKPPrVACtLtip/cZ/1GM/O6IND4WQhG."
        #expect(PasswordHash.matches("secret", hash: hash))
        #expect(!PasswordHash.matches("Secret", hash: hash))
    }

    @Test func unsupportedSchemesNeverMatch() {
        #expect(!PasswordHash.matches("secret", hash: "$1$abc$8Wq8m2Nw0tEaqYpQn0y7x/"))  // MD5
        #expect(!PasswordHash.matches("secret", hash: "abJnggxhB/yWI"))  // DES
        #expect(!PasswordHash.matches("secret", hash: ""))
    }

    @Test func verifyReadsTheFileEachTime() throws {
        let alice = try PasswordHash.make("wonderland")
        let bob = try PasswordHash.make("builder", scheme: .sha512)
        try withFile("# users\n\nalice:\(alice)\r\nbob:\(bob):extra\nbroken line\n") { path in
            let database = UserDatabase(path: path)
            #expect(database.verify(Credentials(user: "alice", password: "wonderland")) == .success)
            #expect(database.verify(Credentials(user: "bob", password: "builder")) == .success)
            #expect(database.verify(Credentials(user: "alice", password: "builder")) == .invalidCredentials)
            #expect(database.verify(Credentials(user: "Alice", password: "wonderland")) == .invalidCredentials)
            #expect(database.verify(Credentials(user: "carol", password: "x")) == .invalidCredentials)
            #expect(throws: UserDatabase.LoadError.badLine(path: path, line: 5, reason: "expected user:hash")) {
                try database.load()
            }
        }
        #expect(
            UserDatabase(path: "/nonexistent/users").verify(Credentials(user: "a", password: "b")) == .temporaryFailure)
    }

    @Test func loadRefusesWeakHashesAndBadNames() throws {
        try withFile("alice:$1$abc$def\n") { path in
            #expect(throws: UserDatabase.LoadError.self) { try UserDatabase(path: path).load() }
        }
        try withFile("al ice:$6$abc$def\n") { path in
            #expect(throws: UserDatabase.LoadError.self) { try UserDatabase(path: path).load() }
        }
        let hash = try PasswordHash.make("pw")
        let loaded = try withFile("alice:\(hash)\n") { path in try UserDatabase(path: path).load() }
        #expect(loaded == ["alice": hash])
    }
}
