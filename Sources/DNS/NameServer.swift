import NetAddress

/// A name server from `dns_servers`: `192.0.2.53`, `192.0.2.53:5353`, `2001:db8::53`, `[2001:db8::53]:53`.
/// A bare IPv6 address never carries a port (its colons are the address's own); use brackets for one.
public struct NameServer: Hashable, Sendable, CustomStringConvertible {
    public var address: IPAddress
    public var port: UInt16

    public init(address: IPAddress, port: UInt16 = 53) {
        self.address = address
        self.port = port
    }

    public init?(parsing text: String) {
        let text = text.trimmingSpaces()
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"),
                let address = IPv6Address(String(text[text.index(after: text.startIndex)..<close]))
            else { return nil }
            let rest = text[text.index(after: close)...]
            var port: UInt16 = 53
            if !rest.isEmpty {
                guard rest.hasPrefix(":"), let parsed = NameServer.port(rest.dropFirst()) else { return nil }
                port = parsed
            }
            self.init(address: .v6(address), port: port)
            return
        }
        if let v6 = IPv6Address(text) {
            self.init(address: .v6(v6))
            return
        }
        let pieces = text.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
        guard let v4 = IPv4Address(pieces[0]) else { return nil }
        var port: UInt16 = 53
        if pieces.count == 2 {
            guard let parsed = NameServer.port(pieces[1]) else { return nil }
            port = parsed
        }
        self.init(address: .v4(v4), port: port)
    }

    /// `192.0.2.53:53` / `[2001:db8::53]:53`.
    public var description: String {
        address.family == .ipv6 ? "[\(address)]:\(port)" : "\(address):\(port)"
    }

    private static func port(_ text: Substring) -> UInt16? {
        guard !text.isEmpty, text.count <= 5, text.allSatisfy({ $0.isASCII && $0.isNumber }),
            let value = UInt16(text), value > 0
        else { return nil }
        return value
    }
}

extension String {
    func trimmingSpaces() -> String {
        String(drop(while: { $0 == " " || $0 == "\t" }).reversed().drop(while: { $0 == " " || $0 == "\t" }).reversed())
    }
}
