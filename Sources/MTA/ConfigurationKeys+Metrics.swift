import Sockets

/// Keys of the web console (pages, JSON API and the Prometheus `/metrics` text, `dualmta stats`).
extension ConfigurationKey {
    static let metricsKeys: [ConfigurationKey] = [
        ConfigurationKey(
            name: "http_listen",
            apply: { config, value throws(ValueError) in try applyHTTPListen(&config, value, key: "http_listen") },
            render: { render($0, key: "http_listen") }),
        // The older name of the same setting, from when the listener served only `/metrics`.
        ConfigurationKey(
            name: "metrics_listen",
            apply: { config, value throws(ValueError) in try applyHTTPListen(&config, value, key: "metrics_listen") },
            render: { render($0, key: "metrics_listen") }),
    ]

    /// Rendered under the key that set it, so a rendered file reads back the same (the default renders as unset).
    static func render(_ config: Configuration, key: String) -> String? {
        guard config.httpListenKey == key else { return nil }
        return config.httpListen?.description ?? "none"
    }

    static func applyHTTPListen(_ config: inout Configuration, _ value: String, key: String) throws(ValueError) {
        config.httpListenKey = key
        guard !value.isEmpty, value.lowercased() != "none" else {
            config.httpListen = nil
            return
        }
        guard let address = SocketAddress(parsing: value) else {
            throw ValueError("\"\(value)\" is not an address with a port, e.g. 127.0.0.1:8025 or [::1]:8025")
        }
        guard address.port != 0 else { throw ValueError("\"\(value)\": port 0 is not a port to listen on") }
        config.httpListen = address
    }
}
