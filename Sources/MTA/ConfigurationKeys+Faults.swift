import Faults

/// `fault = RULE`, the one key that may repeat: each line adds a rule (Faults/FaultRule.swift has the language).
/// A rule that does not parse is an error with file:line, and then no rule of the file is in force.
extension ConfigurationKey {
    static let faultKeys: [ConfigurationKey] = [
        ConfigurationKey(
            name: "fault",
            apply: { config, value throws(ValueError) in
                do throws(FaultRuleError) {
                    config.faultRules.append(try FaultRule(parsing: value))
                } catch {
                    throw ValueError(error.message)
                }
            },
            // One `fault = ` line per rule.
            render: { config in
                config.faultRules.isEmpty ? nil : config.faultRules.map(\.text).joined(separator: "\nfault = ")
            },
            repeatable: true)
    ]
}
