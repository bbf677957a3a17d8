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
        ConfigurationKey(
            name: "http_token",
            apply: { config, value throws(ValueError) in
                guard !value.isEmpty else {
                    config.httpToken = nil
                    return
                }
                // A guessable token would hand the queue to anyone who can reach the port.
                guard value.count >= 16, value.allSatisfy({ $0.isASCII && !$0.isWhitespace && $0 != "\"" }) else {
                    throw ValueError("the token must be at least 16 printable ASCII characters without blanks")
                }
                config.httpToken = value
            },
            render: { $0.httpToken }),
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
