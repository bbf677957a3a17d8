/// Keys of bounces, delay notices and queue lifetime.
extension ConfigurationKey {
    static let bounceKeys: [ConfigurationKey] = [
        ConfigurationKey(
            name: "max_queue_lifetime",
            apply: { config, value throws(ValueError) in
                config.maxQueueLifetime = try ValueParser.positiveDuration(value)
            },
            render: { ValueParser.render($0.maxQueueLifetime) }),
        ConfigurationKey(
            name: "bounce_queue_lifetime",
            apply: { config, value throws(ValueError) in
                config.bounceQueueLifetime = try ValueParser.positiveDuration(value)
            },
            render: { ValueParser.render($0.bounceQueueLifetime) }),
        ConfigurationKey(
            name: "history_retention",
            apply: { config, value throws(ValueError) in
                config.historyRetention = try ValueParser.positiveDuration(value)
            },
            render: { ValueParser.render($0.historyRetention) }),
        ConfigurationKey(
            name: "delay_warning_after",
            apply: { config, value throws(ValueError) in config.delayWarningAfter = try ValueParser.duration(value) },
            render: { $0.delayWarningAfter == .zero ? "0" : ValueParser.render($0.delayWarningAfter) }),
        ConfigurationKey(
            name: "double_bounce_recipient",
            apply: { config, value throws(ValueError) in
                guard !value.isEmpty, !value.contains(" "), !value.hasPrefix("@"), !value.hasSuffix("@") else {
                    throw ValueError("expected a user (local) or user@domain, got \"\(value)\"")
                }
                config.doubleBounceRecipient = value
            },
            render: { $0.doubleBounceRecipient }),
        ConfigurationKey(
            name: "sender_return_check",
            apply: { config, value throws(ValueError) in
                guard let mode = Configuration.SenderReturnCheck(rawValue: value.lowercased()) else {
                    throw ValueError("expected off, warn or reject, got \"\(value)\"")
                }
                config.senderReturnCheck = mode
            },
            render: { $0.senderReturnCheck.rawValue }),
    ]
}
