import Faults
import Logging
import Metrics
import NetAddress
import SMTPProtocol
import Sockets

/// The bridge between the lab's fault rules and one server session: the session asks at each stage, this hook
/// consults the shared `FaultBook` with what the driver knows (client, listener, family) and turns a hit into the
/// session's decision. Each hit is logged once (`fault=F<n>`) and counted (`dualmta_faults_total`).
enum InboundFaults {
    static func hook(book: FaultBook?, connection: Connection, logger: Logger) -> SessionFaultHook? {
        guard let book else { return nil }
        let client = connection.peer.ip.unmapped
        let listener = (address: connection.local.ip.unmapped, port: Int(connection.local.port))
        return { point in
            guard !book.isEmpty, let stage = FaultStage(rawValue: point.stage.rawValue) else { return nil }
            let context = FaultContext(
                family: client.family, client: client, listener: listener, from: point.sender,
                recipients: point.recipients)
            guard let hit = book.evaluate(side: .inbound, stage: stage, context) else { return nil }
            logger.notice(
                "fault",
                metadata: [
                    "fault": "\(hit.id)", "side": "inbound", "stage": "\(stage.rawValue)",
                    "action": "\(hit.action.name)", "family": "\(client.family)",
                ])
            DualMTAMetrics.registry.increment(
                DualMTAMetrics.faults, ["side": "inbound", "stage": stage.rawValue, "family": client.family.rawValue])
            return sessionFault(hit.action)
        }
    }

    static func sessionFault(_ action: FaultAction) -> SessionFault? {
        switch action {
        case .reply(let reply):
            let status = reply.status.map { EnhancedStatus($0.0, $0.1, $0.2) }
            return .reply(Reply(reply.code, status, reply.text))
        case .drop: return .drop
        case .reset: return .reset
        case .delay(let milliseconds): return .delay(milliseconds: milliseconds)
        case .discard: return .discard
        // A greylist that holds arrives as its reply; the outbound actions never match an inbound rule.
        case .greylist, .refuse, .unreachable, .blackhole, .tlsFail: return nil
        }
    }
}
