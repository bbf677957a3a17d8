import Dispatch
import Logging
import Metrics
import NetAddress
import Routing
import SMTPProtocol
import Sockets
import Spool

/// Makes one delivery attempt: builds what it sends and how (`AttemptRequest`: the source address of the family,
/// the timeouts, the destination's TLS policy and the SNI name) and runs it over a new connection or over the
/// connection that won a race. The delivery run is suspended until the attempt ends; no thread waits for it.
struct AttemptMaker: Sendable {
    let configuration: OutboundConfiguration
    let spool: Spool
    /// The message converted to 7 bit for a next hop without 8BITMIME, when it needed and allowed conversion.
    var sevenBitBody: SevenBitBody? = nil
    var logger: Logger? = nil

    /// The connection cache when reuse applies: configured, and no lab fault rules (each attempt must then meet
    /// its rules on a connection of its own).
    var connectionCache: ConnectionCache? {
        guard let cache = configuration.connectionCache, configuration.faults?.isEmpty ?? true else { return nil }
        return cache
    }

    /// Runs the attempt on a parked connection to its address when the cache holds one; nil when it holds none. A
    /// parked connection found dead (closed, reset or 421 before any other reply) is not an attempt: the same
    /// address is tried again at once on a new connection, and that result is returned (logged as such).
    func attemptOnParked(envelope: Envelope, attempt: PlannedAttempt, recipients: [String]) async
        -> DeliveryAttemptResult?
    {
        guard let cache = connectionCache else { return nil }
        let request = self.request(envelope: envelope, attempt: attempt, recipients: recipients)
        let address = SocketAddress(ip: attempt.address, port: attempt.port)
        guard let channel = cache.take(request.connectionKey(address)) else { return nil }
        let result = await withCheckedContinuation { continuation in
            RemoteDelivery.deliver(reusing: channel, request) { continuation.resume(returning: $0) }
        }
        guard case .session(let session) = result.outcome,
            case .retryOnNewConnection(let reason) = ConnectionReuse.afterReusedSession(session)
        else { return result }
        DualMTAMetrics.registry.increment(
            DualMTAMetrics.connectionCacheClosed, ["reason": ConnectionDropReason.deadOnReuse.rawValue])
        logger?.info(
            "connection-cache",
            metadata: [
                "id": "\(envelope.id)", "event": "closed", "addr": "\(attempt.address.bracketed)",
                "reason": "\(ConnectionDropReason.deadOnReuse.rawValue)", "detail": "\(reason)",
                "action": "retrying on a new connection, not counted as an attempt",
            ])
        return await attemptDelivery(envelope: envelope, attempt: attempt, recipients: recipients)
    }

    /// Runs one attempt over a new connection; the run is suspended until the attempt ends. A lab fault rule for the
    /// connect stands in for it before any packet leaves (OutboundFaults.swift).
    func attemptDelivery(envelope: Envelope, attempt: PlannedAttempt, recipients: [String]) async
        -> DeliveryAttemptResult
    {
        var request = self.request(envelope: envelope, attempt: attempt, recipients: recipients)
        let connectFault = connectFault(attempt, sender: envelope.sender, recipients: recipients)
        request.connectFault = connectFault?.injection
        let faults = request.faults
        return await withCheckedContinuation { continuation in
            RemoteDelivery.deliver(
                to: SocketAddress(ip: attempt.address, port: attempt.port), request,
                queue: DispatchQueue(label: "dualmta.outbound")
            ) { result in
                var result = result
                result.fault = faults?.fired ?? connectFault?.id
                continuation.resume(returning: result)
            }
        }
    }

    /// What an attempt sends, and how, for the open recipients of `envelope`: the TLS policy of the destination
    /// (`smtp_tls_policy`, else `smtp_tls`) and the MX name for SNI.
    func request(envelope: Envelope, attempt: PlannedAttempt, recipients: [String]) -> AttemptRequest {
        var timeouts = ClientTimeouts()
        if let cap = configuration.replyTimeout { timeouts = timeouts.capped(at: cap) }
        var request = AttemptRequest(
            source: sourceAddress(for: attempt.family), connectTimeout: configuration.connectTimeout,
            timeouts: timeouts,
            heloName: configuration.heloName, sender: envelope.sender, recipients: recipients,
            messageFile: spool.messagePath(envelope.id), bodyType: envelope.bodyType.flatMap(BodyType.init(rawValue:)),
            smtpUTF8: envelope.smtpUTF8, tlsPolicy: configuration.tlsPolicy(for: attempt, recipients: recipients),
            serverName: configuration.tlsServerName(for: attempt),
            dsn: Self.dsn(envelope, recipients: recipients), sevenBitBody: sevenBitBody)
        request.faults = sessionFaults(attempt, sender: envelope.sender, recipients: recipients)
        request.connectionCache = connectionCache
        return request
    }

    /// The DSN request to pass on to a next hop that offers DSN (RFC 3461 §6.2), or nil when the sender asked for
    /// nothing.
    static func dsn(_ envelope: Envelope, recipients: [String]) -> OutboundDSN? {
        let records = recipients.map { address in envelope.recipients.first { $0.address == address } }
        let perRecipient = records.map {
            OutboundDSN.Recipient(notify: $0?.notify, originalRecipient: $0?.originalRecipient)
        }
        let asked = perRecipient.contains { $0.notify != nil || $0.originalRecipient != nil }
        guard asked || envelope.dsnReturn != nil || envelope.envelopeID != nil else { return nil }
        return OutboundDSN(ret: envelope.dsnReturn, envelopeID: envelope.envelopeID, recipients: perRecipient)
    }

    /// `bind_address` / `bind_address6` for `family`, port 0.
    func sourceAddress(for family: AddressFamily) -> SocketAddress? {
        switch family {
        case .ipv4: return configuration.bindAddress.map { SocketAddress(ip: $0, port: 0) }
        case .ipv6: return configuration.bindAddress6.map { SocketAddress(ip: $0, port: 0) }
        }
    }

    /// Runs the SMTP session on the connection that won a race; the run is suspended until it ends.
    func attemptDelivery(
        envelope: Envelope, attempt: PlannedAttempt, over connection: Connection, recipients: [String],
        started: ContinuousClock.Instant
    ) async -> DeliveryAttemptResult {
        let request = self.request(envelope: envelope, attempt: attempt, recipients: recipients)
        let faults = request.faults
        return await withCheckedContinuation { continuation in
            RemoteDelivery.deliver(over: connection, request, started: started) { result in
                var result = result
                result.fault = faults?.fired
                continuation.resume(returning: result)
            }
        }
    }
}
