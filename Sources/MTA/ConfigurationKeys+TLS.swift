import Foundation
import SMTPProtocol
import Sockets
import TLS

/// Keys of STARTTLS and the submission service (RFC 3207, RFC 6409, RFC 8314).
extension ConfigurationKey {
    static let tlsKeys: [ConfigurationKey] = [
        ConfigurationKey(
            name: "tls_cert_file",
            apply: { config, value throws(ValueError) in config.tlsCertFile = value.isEmpty ? nil : value },
            render: { $0.tlsCertFile }),
        ConfigurationKey(
            name: "tls_key_file",
            apply: { config, value throws(ValueError) in config.tlsKeyFile = value.isEmpty ? nil : value },
            render: { $0.tlsKeyFile }),
        ConfigurationKey(
            name: "tls_ciphers",
            apply: { config, value throws(ValueError) in
                guard TLSContext.isUsableCipherList(value) else {
                    throw ValueError("\"\(value)\" names no TLS 1.2 cipher OpenSSL knows")
                }
                config.tlsCiphers = value
            },
            render: { $0.tlsCiphers }),
        ConfigurationKey(
            name: "smtp_tls",
            apply: { config, value throws(ValueError) in
                guard let policy = ClientTLSPolicy(rawValue: value.lowercased()) else {
                    throw ValueError("expected none, may or encrypt, got \"\(value)\"")
                }
                config.smtpTLS = policy
            },
            render: { $0.smtpTLS.rawValue }),
        ConfigurationKey(
            name: "submission_listen",
            apply: { config, value throws(ValueError) in
                config.submissionListen = try ValueParser.socketAddresses(value)
            },
            render: {
                $0.submissionListen.isEmpty ? nil : $0.submissionListen.map(\.description).joined(separator: ", ")
            }),
        ConfigurationKey(
            name: "submissions_listen",
            apply: { config, value throws(ValueError) in
                config.submissionsListen = try ValueParser.socketAddresses(value)
            },
            render: {
                $0.submissionsListen.isEmpty ? nil : $0.submissionsListen.map(\.description).joined(separator: ", ")
            }),
        ConfigurationKey(
            name: "submission_users_file",
            apply: { config, value throws(ValueError) in config.submissionUsersFile = value.isEmpty ? nil : value },
            render: { $0.submissionUsersFile }),
    ]

    /// Rules across the TLS and submission keys (called from `ConfigurationFile.validate`).
    static func validateTLS(_ configuration: Configuration) throws(ValueError) {
        if (configuration.tlsCertFile == nil) != (configuration.tlsKeyFile == nil) {
            throw ValueError(
                "tls_cert_file and tls_key_file: set both or neither",
                key: configuration.tlsCertFile == nil ? "tls_key_file" : "tls_cert_file")
        }
        if !(configuration.submissionListen + configuration.submissionsListen).isEmpty
            && configuration.submissionUsersFile == nil
        {
            throw ValueError(
                "submission_listen/submissions_listen need submission_users_file",
                key: configuration.submissionListen.isEmpty ? "submissions_listen" : "submission_listen")
        }
    }

    /// The files `serve` opens at start must be readable (by whoever runs `serve` or `config check`).
    static func checkFiles(_ configuration: Configuration) throws(ValueError) {
        if let cert = configuration.tlsCertFile { try requireReadable(cert, key: "tls_cert_file") }
        if let key = configuration.tlsKeyFile { try requireReadable(key, key: "tls_key_file") }
        if let cert = configuration.tlsCertFile, let key = configuration.tlsKeyFile {
            // Not PEM, or a key that does not match the certificate: serve would refuse to start.
            do throws(TLSError) {
                _ = try TLSContext.server(certificateFile: cert, keyFile: key, ciphers: configuration.tlsCiphers)
            } catch {
                throw ValueError("tls_cert_file and tls_key_file: \(error)", key: "tls_cert_file")
            }
        }
        if !(configuration.submissionListen + configuration.submissionsListen).isEmpty,
            let users = configuration.submissionUsersFile
        {
            try requireReadable(users, key: "submission_users_file")
        }
    }

    /// Opens and reads `path` once; the error names the key, the file and the system's reason.
    static func requireReadable(_ path: String, key: String) throws(ValueError) {
        do throws(FileReadError) {
            _ = try readWholeFile(path)
        } catch {
            throw ValueError("\(key): cannot read \(path): \(error.reason)", key: key)
        }
    }
}
