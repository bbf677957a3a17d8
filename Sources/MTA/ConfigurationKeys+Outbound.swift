import DNS
import Delivery
import NetAddress
import Routing

/// Keys of the outbound engine (RFC 3974 routing, DNS, transport cache, retries).
extension ConfigurationKey {
    static let outboundKeys: [ConfigurationKey] = [
        ConfigurationKey(
            name: "inet_protocols",
            apply: { config, value throws(ValueError) in
                var families = Set<AddressFamily>()
                for item in ValueParser.list(value.lowercased()) {
                    switch item {
                    case "ipv4": families.insert(.ipv4)
                    case "ipv6": families.insert(.ipv6)
                    case "all": families.formUnion([.ipv4, .ipv6])
                    default: throw ValueError("expected ipv4, ipv6 or both, got \"\(item)\"")
                    }
                }
                guard !families.isEmpty else { throw ValueError("at least one of ipv4, ipv6 is required") }
                config.inetProtocols = families
            },
            render: { config in
                AddressFamily.allCases.filter { config.inetProtocols.contains($0) }.map(\.rawValue).joined(
                    separator: ", ")
            }),
        ConfigurationKey(
            name: "address_preference",
            apply: { config, value throws(ValueError) in
                guard let family = AddressFamily(rawValue: value.lowercased()) else {
                    throw ValueError("expected ipv6 or ipv4, got \"\(value)\"")
                }
                config.addressPreference = family
            },
            render: { $0.addressPreference.rawValue }),
        ConfigurationKey(
            name: "connect_strategy",
            apply: { config, value throws(ValueError) in
                guard let strategy = ConnectStrategy(rawValue: value.lowercased()) else {
                    throw ValueError(
                        "expected sequential (RFC 3974 order) or happy-eyeballs (RFC 8305), got \"\(value)\"")
                }
                config.connectStrategy = strategy
            },
            render: { $0.connectStrategy.rawValue }),
        ConfigurationKey(
            name: "connection_attempt_delay",
            apply: { config, value throws(ValueError) in
                // RFC 8305 §5: never below 10 ms; 2 s is its recommended maximum.
                let delay = try ValueParser.duration(value)
                guard delay >= .milliseconds(10), delay <= .seconds(2) else {
                    throw ValueError("must be between 10ms and 2s (RFC 8305 §5), got \"\(value)\"")
                }
                config.connectionAttemptDelay = delay
            },
            render: { ValueParser.render($0.connectionAttemptDelay) }),
        ConfigurationKey(
            name: "smtp_connection_cache",
            apply: { config, value throws(ValueError) in config.smtpConnectionCache = try ValueParser.boolean(value) },
            render: { $0.smtpConnectionCache ? "yes" : "no" }),
        ConfigurationKey(
            name: "smtp_connection_cache_time",
            apply: { config, value throws(ValueError) in
                // A parked session costs the peer a slot: seconds, not minutes (servers drop idle clients anyway).
                let time = try ValueParser.positiveDuration(value)
                guard time <= .seconds(300) else { throw ValueError("must be at most 300s, got \"\(value)\"") }
                config.smtpConnectionCacheSettings.idleTime = time
            },
            render: { ValueParser.render($0.smtpConnectionCacheSettings.idleTime) }),
        ConfigurationKey(
            name: "smtp_connection_reuse_limit",
            apply: { config, value throws(ValueError) in
                config.smtpConnectionCacheSettings.reuseLimit = try ValueParser.count(value, range: 1...100_000)
            },
            render: { "\($0.smtpConnectionCacheSettings.reuseLimit)" }),
        ConfigurationKey(
            name: "smtp_connection_cache_size",
            apply: { config, value throws(ValueError) in
                config.smtpConnectionCacheSettings.size = try ValueParser.count(value, range: 1...10_000)
            },
            render: { "\($0.smtpConnectionCacheSettings.size)" }),
        ConfigurationKey(
            name: "bind_address",
            apply: { config, value throws(ValueError) in
                config.bindAddress = try ValueParser.address(value, family: .ipv4)
            },
            render: { $0.bindAddress?.description }),
        ConfigurationKey(
            name: "bind_address6",
            apply: { config, value throws(ValueError) in
                config.bindAddress6 = try ValueParser.address(value, family: .ipv6)
            },
            render: { $0.bindAddress6?.description }),
        ConfigurationKey(
            name: "dns_servers",
            apply: { config, value throws(ValueError) in
                var servers: [NameServer] = []
                for item in ValueParser.list(value) {
                    guard let server = NameServer(parsing: item) else {
                        throw ValueError("\"\(item)\" is not a name server, e.g. 192.0.2.53 or [2001:db8::53]:53")
                    }
                    servers.append(server)
                }
                config.dnsServers = servers.isEmpty ? nil : servers
            },
            render: { $0.dnsServers?.map(\.description).joined(separator: ", ") }),
        ConfigurationKey(
            name: "routes",
            apply: { config, value throws(ValueError) in
                do throws(StaticRouteError) {
                    config.routes = try StaticRoutes(parsing: value)
                } catch {
                    throw ValueError(error.description)
                }
            },
            render: { config in
                config.routes.entries.isEmpty ? nil : config.routes.entries.map(\.description).joined(separator: ", ")
            }),
        ConfigurationKey(
            name: "transport_cache_ttl",
            apply: { config, value throws(ValueError) in config.transportCacheTTL = try ValueParser.duration(value) },
            render: { ValueParser.render($0.transportCacheTTL) }),
        ConfigurationKey(
            name: "connect_timeout",
            apply: { config, value throws(ValueError) in
                config.connectTimeout = try ValueParser.positiveDuration(value)
            },
            render: { ValueParser.render($0.connectTimeout) }),
        ConfigurationKey(
            name: "smtp_reply_timeout",
            apply: { config, value throws(ValueError) in
                config.smtpReplyTimeout = try ValueParser.positiveDuration(value)
            },
            render: { $0.smtpReplyTimeout.map(ValueParser.render) }),
        ConfigurationKey(
            name: "retry_schedule",
            apply: { config, value throws(ValueError) in
                var schedule: [Duration] = []
                for item in ValueParser.list(value) { schedule.append(try ValueParser.positiveDuration(item)) }
                guard !schedule.isEmpty else { throw ValueError("at least one interval is required") }
                config.retrySchedule = schedule
            },
            render: { $0.retrySchedule.map(ValueParser.render).joined(separator: ", ") }),
        ConfigurationKey(
            name: "delivery_concurrency",
            apply: { config, value throws(ValueError) in
                config.deliveryConcurrency = try ValueParser.count(value, range: 1...1000)
            },
            render: { String($0.deliveryConcurrency) }),
        ConfigurationKey(
            name: "family_mismatch",
            apply: { config, value throws(ValueError) in
                guard let policy = FamilyMismatchPolicy(rawValue: value.lowercased()) else {
                    throw ValueError("expected bounce or defer, got \"\(value)\"")
                }
                config.familyMismatch = policy
            },
            render: { $0.familyMismatch.rawValue }),
        ConfigurationKey(
            name: "mx_port",
            apply: { config, value throws(ValueError) in
                config.mxPort = UInt16(try ValueParser.count(value, range: 1...65535))
            },
            render: { String($0.mxPort) }),
        ConfigurationKey(
            name: "allow_loopback_mx",
            apply: { config, value throws(ValueError) in config.allowLoopbackMX = try ValueParser.boolean(value) },
            render: { $0.allowLoopbackMX ? "yes" : "no" }),
    ]
}
