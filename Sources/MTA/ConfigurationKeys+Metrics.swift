import Sockets

/// Keys of the metrics endpoint (Prometheus text format, `dualmta stats`).
extension ConfigurationKey {
    static let metricsKeys: [ConfigurationKey] = [
        ConfigurationKey(
            name: "metrics_listen",
            apply: { config, value throws(ValueError) in
                guard !value.isEmpty else {
                    config.metricsListen = nil
                    return
                }
                guard let address = SocketAddress(parsing: value) else {
                    throw ValueError("\"\(value)\" is not an address with a port, e.g. 127.0.0.1:9125 or [::1]:9125")
                }
                guard address.port != 0 else { throw ValueError("\"\(value)\": port 0 is not a port to listen on") }
                config.metricsListen = address
            },
            render: { $0.metricsListen?.description })
    ]
}
