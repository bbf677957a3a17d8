internal import CCrypt
import Foundation
import SMTPProtocol

/// The submission service's users (`submission_users_file`): one `user:hash` per line, `#` comments, hashes in
/// crypt(3) yescrypt (`$y$`) or SHA-512 (`$6$`) form, checked with the system's libxcrypt — the same format as
/// /etc/shadow, so `mkpasswd`, `openssl passwd -6` or `dualmta passwd` make the lines.
///
/// The file is read again for every check, so edits take effect without a restart. Checking is deliberately slow
/// (that is what these hashes are for) and reads a file: the session driver calls it off the connection's queue.
public struct UserDatabase: Sendable {
    public let path: String

    public init(path: String) {
        self.path = path
    }

    public enum LoadError: Error, Equatable, Sendable, CustomStringConvertible {
        case unreadable(path: String)
        /// A line that is not `user:hash` with a supported hash; `line` counts from 1.
        case badLine(path: String, line: Int, reason: String)

        public var description: String {
            switch self {
            case .unreadable(let path): return "\(path): cannot read the file"
            case .badLine(let path, let line, let reason): return "\(path):\(line): \(reason)"
            }
        }
    }

    /// The entries, user → hash. Throws on the first bad line (start-up and `config check` report it); `verify`
    /// skips bad lines instead.
    public func load() throws(LoadError) -> [String: String] {
        guard let data = FileManager.default.contents(atPath: path) else { throw .unreadable(path: path) }
        var users: [String: String] = [:]
        for (number, result) in Self.parse(String(decoding: data, as: UTF8.self)) {
            switch result {
            case .success(let (user, hash)): users[user] = hash
            case .failure(let reason): throw .badLine(path: path, line: number, reason: reason.text)
            }
        }
        return users
    }

    struct LineProblem: Error {
        var text: String
    }

    /// Every non-blank, non-comment line with its number and either `(user, hash)` or what is wrong with it.
    static func parse(_ text: String) -> [(Int, Result<(String, String), LineProblem>)] {
        var result: [(Int, Result<(String, String), LineProblem>)] = []
        // "\r\n" is one Character in Swift: split on both forms.
        let lines = text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" })
        for (index, line) in lines.enumerated() {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty || trimmed.hasPrefix("#") { continue }
            // Only the first two fields count: shadow-style lines may carry more after another colon.
            let fields = trimmed.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard fields.count >= 2 else {
                result.append((index + 1, .failure(LineProblem(text: "expected user:hash"))))
                continue
            }
            let user = String(fields[0])
            let hash = String(fields[1])
            guard PasswordHash.isValidUserName(user) else {
                result.append((index + 1, .failure(LineProblem(text: "invalid user name"))))
                continue
            }
            guard PasswordHash.Scheme(hash: hash) != nil else {
                result.append((index + 1, .failure(LineProblem(text: "hash must be yescrypt ($y$) or SHA-512 ($6$)"))))
                continue
            }
            result.append((index + 1, .success((user, hash))))
        }
        return result
    }

    /// Checks one user's password. Blocking; never logs. Unknown users cost a hash computation too, so the answer
    /// time does not tell which user names exist.
    public func verify(_ credentials: Credentials) -> AuthenticationOutcome {
        guard let data = FileManager.default.contents(atPath: path) else { return .temporaryFailure }
        var hash: String? = nil
        for (_, entry) in Self.parse(String(decoding: data, as: UTF8.self)) {
            if case .success(let (user, entryHash)) = entry, user == credentials.user {
                hash = entryHash
                break
            }
        }
        guard let hash else {
            _ = PasswordHash.matches(credentials.password, hash: PasswordHash.decoyHash)
            return .invalidCredentials
        }
        return PasswordHash.matches(credentials.password, hash: hash) ? .success : .invalidCredentials
    }
}

/// crypt(3) hashing through libxcrypt's reentrant calls.
public enum PasswordHash {
    public enum Scheme: String, Sendable, CaseIterable {
        case yescrypt = "$y$"
        case sha512 = "$6$"

        init?(hash: String) {
            guard let scheme = Scheme.allCases.first(where: { hash.hasPrefix($0.rawValue) }) else { return nil }
            self = scheme
        }
    }

    public enum HashError: Error, Sendable, CustomStringConvertible {
        case saltGenerationFailed
        case hashingFailed

        public var description: String {
            switch self {
            case .saltGenerationFailed: return "crypt_gensalt failed (no random source?)"
            case .hashingFailed: return "crypt failed"
            }
        }
    }

    /// User names a users file and a Received comment can carry: printable ASCII, no space, colon or parenthesis.
    public static func isValidUserName(_ user: String) -> Bool {
        !user.isEmpty && user.utf8.count <= 64
            && user.utf8.allSatisfy { byte in
                byte > 0x20 && byte < 0x7F && byte != UInt8(ascii: ":") && byte != UInt8(ascii: "(")
                    && byte != UInt8(ascii: ")")
            }
    }

    /// A new hash with a fresh random salt (libxcrypt reads the kernel's random source) and default cost.
    public static func make(_ password: String, scheme: Scheme = .yescrypt) throws(HashError) -> String {
        var setting = [CChar](repeating: 0, count: Int(CRYPT_GENSALT_OUTPUT_SIZE))
        let made = setting.withUnsafeMutableBufferPointer { buffer in
            crypt_gensalt_rn(scheme.rawValue, 0, nil, 0, buffer.baseAddress, Int32(buffer.count))
        }
        guard made != nil else { throw .saltGenerationFailed }
        let settingText = String(decoding: setting.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        guard let hash = crypt(password, setting: settingText) else { throw .hashingFailed }
        return hash
    }

    /// Whether `password` hashes to `hash`; the comparison takes the same time wherever the strings differ.
    public static func matches(_ password: String, hash: String) -> Bool {
        guard Scheme(hash: hash) != nil, let computed = crypt(password, setting: hash) else { return false }
        let a = Array(computed.utf8)
        let b = Array(hash.utf8)
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for index in a.indices { difference |= a[index] ^ b[index] }
        return difference == 0
    }

    /// A valid yescrypt hash of no known password, checked for unknown users.
    static let decoyHash = (try? make(UUID().uuidString)) ?? "$y$j9T$decoy$"

    /// crypt_rn with a heap-allocated `struct crypt_data` (about 32 KiB: too big for a thread's stack habits).
    private static func crypt(_ password: String, setting: String) -> String? {
        let data = UnsafeMutablePointer<crypt_data>.allocate(capacity: 1)
        defer {
            // The work area holds the password and intermediate state: wipe it before it goes back to malloc.
            memset(data, 0, MemoryLayout<crypt_data>.size)
            data.deallocate()
        }
        memset(data, 0, MemoryLayout<crypt_data>.size)
        guard let result = crypt_rn(password, setting, data, Int32(MemoryLayout<crypt_data>.size)) else {
            return nil
        }
        let text = String(cString: result)
        // libxcrypt signals some failures with a string starting "*" instead of NULL.
        return text.hasPrefix("*") ? nil : text
    }
}
