import Faults
import NetAddress
import Routing

/// For `dualmta route`: which outbound fault rules of the config would apply to each planned address (their match
/// conditions hold; limits such as first= are not evaluated). A rule with a `from=` condition is listed only when
/// it does not depend on the sender, which `route` does not know.
enum FaultPreview {
    static func text(rules: [FaultRule], attempts: [PlannedAttempt], recipient: String?) -> String {
        let numbered = rules.enumerated().filter { $0.element.side == .outbound && $0.element.match.from == nil }
        guard !numbered.isEmpty else { return "" }
        var lines = ["fault rules (from the config):"]
        for attempt in attempts {
            let context = FaultContext(
                family: attempt.family, mx: attempt.mxHost, addr: attempt.address, port: Int(attempt.port),
                recipients: recipient.map { [$0] } ?? [])
            let applying = numbered.filter { $0.element.match.matches(context) }
            let address = attempt.family == .ipv6 ? "[\(attempt.address)]" : "\(attempt.address)"
            let rules = applying.map { "F\($0.offset + 1) \($0.element.stage.rawValue) \($0.element.action.name)" }
            lines.append("  \(attempt.mxHost) \(address): " + (rules.isEmpty ? "none" : rules.joined(separator: ", ")))
        }
        return lines.joined(separator: "\n") + "\n"
    }
}
