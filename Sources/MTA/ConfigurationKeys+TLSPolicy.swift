import Delivery

/// `smtp_tls_policy`: outbound STARTTLS per destination, overriding `smtp_tls`.
extension ConfigurationKey {
    static let tlsPolicyKeys: [ConfigurationKey] = [
        ConfigurationKey(
            name: "smtp_tls_policy",
            apply: { config, value throws(ValueError) in
                do throws(TLSPolicyTableError) {
                    config.smtpTLSPolicy = try TLSPolicyTable(parsing: value)
                } catch {
                    throw ValueError(error.description)
                }
            },
            render: { $0.smtpTLSPolicy.entries.isEmpty ? nil : $0.smtpTLSPolicy.description })
    ]
}
