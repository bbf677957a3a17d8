import NetAddress
import Sockets

/// Listening addresses that cannot all be bound: the same address twice, or a wildcard and a specific address of
/// the same family on the same port (`0.0.0.0:25` and `127.0.0.1:25`; `[::]:25` and `[::1]:25`). IPv6 sockets are
/// IPV6_V6ONLY, so `[::]:25` and `0.0.0.0:25` do not conflict. Pure, so `config check` finds what `serve` would
/// fail to bind.
enum ListenerConflicts {
    struct Listener: Equatable {
        let key: String
        let address: SocketAddress
    }

    static func listeners(of configuration: Configuration) -> [Listener] {
        var result: [Listener] = []
        result += configuration.listen.map { Listener(key: "listen", address: $0) }
        result += configuration.submissionListen.map { Listener(key: "submission_listen", address: $0) }
        result += configuration.submissionsListen.map { Listener(key: "submissions_listen", address: $0) }
        if let console = configuration.httpListen, let key = configuration.httpListenKey {
            result.append(Listener(key: key, address: console))
        }
        return result
    }

    static func overlap(_ first: SocketAddress, _ second: SocketAddress) -> Bool {
        guard first.family == second.family, first.port == second.port else { return false }
        return first.ip == second.ip || first.ip.addressClass == .unspecified
            || second.ip.addressClass == .unspecified
    }

    /// The first conflict, reported at the later of the two keys.
    static func check(_ listeners: [Listener]) throws(ValueError) {
        for (index, later) in listeners.enumerated() {
            for earlier in listeners[..<index] where overlap(earlier.address, later.address) {
                let what =
                    earlier.address == later.address
                    ? "is listed twice" : "overlaps \(earlier.address) (a wildcard and an address on the same port)"
                let place = earlier.key == later.key ? "" : " (also in \(earlier.key))"
                throw ValueError("\(later.key): \(later.address) \(what)\(place)", key: later.key)
            }
        }
    }
}
