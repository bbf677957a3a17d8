import Foundation
import Logging
import SMTPServer
import TLS

/// Server and client TLS contexts from the configuration, and the self-signed certificate dualmta makes for itself
/// when none is configured (issue 5: "generates a self-signed certificate for `hostname` into `<spool>/state/` at
/// first start and reuses it").
enum TLSSetup {
    static let certificateName = "tls-cert.pem"
    static let keyName = "tls-key.pem"

    /// Adds the TLS context, the submission listeners and the users file to the server's settings.
    static func configureServer(
        _ server: inout ServerConfiguration, _ configuration: Configuration, stateDirectory: String, logger: Logger
    ) throws(StartupError) {
        server.tlsContext = try serverContext(configuration, stateDirectory: stateDirectory, logger: logger)
        server.submissionListen = configuration.submissionListen
        server.submissionsListen = configuration.submissionsListen
        server.users = configuration.submissionUsersFile.map(UserDatabase.init(path:))
        if let users = server.users, !(server.submissionListen + server.submissionsListen).isEmpty {
            do throws(UserDatabase.LoadError) {
                let entries = try users.load()
                logger.info("submission-users", metadata: ["file": "\(users.path)", "users": "\(entries.count)"])
            } catch {
                throw .tls("submission_users_file: \(error)")
            }
        }
    }

    /// The server context: the configured files (an error if unusable), else the generated pair. A generated pair
    /// that cannot be made leaves the MX without STARTTLS (logged) — unless a submission listener needs TLS.
    static func serverContext(_ configuration: Configuration, stateDirectory: String, logger: Logger)
        throws(StartupError) -> TLSContext?
    {
        if let certificate = configuration.tlsCertFile, let key = configuration.tlsKeyFile {
            do throws(TLSError) {
                return try TLSContext.server(
                    certificateFile: certificate, keyFile: key, ciphers: configuration.tlsCiphers)
            } catch {
                throw .tls("\(error)")
            }
        }
        let certificate = stateDirectory + "/" + certificateName
        let key = stateDirectory + "/" + keyName
        do throws(TLSError) {
            if !reusable(certificate: certificate, key: key, hostname: configuration.hostname) {
                try TLSContext.generateSelfSigned(
                    hostname: configuration.hostname, certificateFile: certificate, keyFile: key)
                logger.info("tls-certificate-generated", metadata: ["file": "\(certificate)"])
            }
            return try TLSContext.server(certificateFile: certificate, keyFile: key, ciphers: configuration.tlsCiphers)
        } catch {
            if !(configuration.submissionListen + configuration.submissionsListen).isEmpty {
                throw .tls("self-signed certificate: \(error)")
            }
            logger.warning("tls-unavailable", metadata: ["reason": "\(error)"])
            return nil
        }
    }

    /// A generated pair is kept while both files exist, the certificate names `hostname` and has a month to run.
    private static func reusable(certificate: String, key: String, hostname: String) -> Bool {
        guard FileManager.default.fileExists(atPath: key),
            let info = try? TLSCertificateInfo(certificateFile: certificate)
        else { return false }
        let name = hostname.lowercased()
        let names = info.dnsNames.map { $0.lowercased() } + info.ipAddresses
        return names.contains(name) && info.notAfter > Int64(Date().timeIntervalSince1970) + 30 * 86400
    }

    /// The outbound context: opportunistic (RFC 7435), no certificate verification; nil with `smtp_tls = none`.
    static func clientContext(_ configuration: Configuration, logger: Logger) -> TLSContext? {
        guard configuration.smtpTLS != .none else { return nil }
        do throws(TLSError) {
            return try TLSContext.client(verifyPeer: false)
        } catch {
            logger.warning("tls-client-unavailable", metadata: ["reason": "\(error)"])
            return nil
        }
    }
}

/// `dualmta passwd USER`: a line for `submission_users_file`.
public enum PasswordTool {
    public enum Failure: Error, CustomStringConvertible {
        case badUser(String)
        case emptyPassword
        case hashing(String)

        public var description: String {
            switch self {
            case .badUser(let user):
                return "\"\(user)\" is not a usable user name (printable ASCII, no space, ':' or parentheses)"
            case .emptyPassword: return "the password is empty"
            case .hashing(let reason): return reason
            }
        }
    }

    /// `user:$y$...` (yescrypt, the default) or `user:$6$...` (SHA-512).
    public static func line(user: String, password: String, sha512: Bool) throws(Failure) -> String {
        guard PasswordHash.isValidUserName(user) else { throw .badUser(user) }
        guard !password.isEmpty else { throw .emptyPassword }
        do throws(PasswordHash.HashError) {
            return "\(user):\(try PasswordHash.make(password, scheme: sha512 ? .sha512 : .yescrypt))"
        } catch {
            throw .hashing(error.description)
        }
    }
}
