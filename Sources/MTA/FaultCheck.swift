import Faults
import NetAddress
import Sockets

/// Fault rules are for labs: an inbound rule that a listener reachable from outside can trigger makes real clients
/// fail on purpose. `config check` and the start-up self-check name each such rule and listener.
enum FaultCheck {
    /// One warning per inbound rule (ids as the config gives them: F1 for the first `fault =` line, ...) that can
    /// fire on a listener whose address is not loopback.
    static func warnings(rules: [FaultRule], listeners: [SocketAddress]) -> [String] {
        var warnings: [String] = []
        for (index, rule) in rules.enumerated() where rule.side == .inbound {
            let exposed = listeners.filter { listener in
                guard listener.ip.unmapped.addressClass != .loopback else { return false }
                guard let pattern = rule.match.listener else { return true }
                guard pattern.port == Int(listener.port) else { return false }
                return pattern.address == nil || pattern.address?.unmapped == listener.ip.unmapped
            }
            guard !exposed.isEmpty else { continue }
            warnings.append(
                "fault F\(index + 1) (\(rule.text)) applies to the non-loopback listener "
                    + "\(exposed.map(\.description).joined(separator: ", ")): real clients get failures on purpose")
        }
        return warnings
    }
}
