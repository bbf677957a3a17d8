import Delivery
import Foundation
import Logging
import Routing
import SMTPProtocol

/// `sender_return_check`: at MAIL FROM, ask the route planner whether a bounce to the sender's domain could be
/// delivered from this host (the paper's Test 3: an IPv4-only relay accepting mail from an IPv6-only domain can never
/// return a failure). Uses the same planner, DNS and transport cache as delivery.
struct SenderReturnCheck: Sendable {
    let router: Router
    let mode: Configuration.SenderReturnCheck
    let logger: Logger

    /// Blocking (DNS): called off the connection's queue.
    func check(domain: String) -> SenderCheckResult {
        let plan = router.plan(.domain(domain), now: Date())
        switch plan.verdict {
        case .deliver, .deliverLocally:
            return .accept
        case .permanentFailure(let status, let reason):
            let text = "bounces to \(domain) cannot be delivered from here (\(status): \(reason))"
            logger.notice(
                "sender-return-check",
                metadata: ["domain": "\(domain)", "mode": "\(mode.rawValue)", "reason": "\(text)"])
            if mode == .reject {
                return .reject(
                    Reply(550, EnhancedStatus(5, 1, 8), "Sender address rejected: \(text)"))
            }
            return .acceptWithWarning(text)
        case .temporaryFailure(let status, let reason):
            let text = "cannot check the sender's domain \(domain) now (\(status): \(reason))"
            logger.notice(
                "sender-return-check",
                metadata: ["domain": "\(domain)", "mode": "\(mode.rawValue)", "reason": "\(text)"])
            if mode == .reject {
                return .reject(Reply(450, EnhancedStatus(4, 1, 8), "Sender address rejected: \(text)"))
            }
            return .accept
        }
    }
}
