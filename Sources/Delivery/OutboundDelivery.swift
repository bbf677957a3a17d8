import Dispatch
import Foundation
import Logging
import Metrics
import NetAddress
import Routing
import SMTPProtocol
import Sockets
import Spool

/// Executes route plans: for each destination domain of a message, asks the `Router` for the plan (the same one
/// `dualmta route` prints), then tries the planned addresses strictly in order (RFC 3974 / RFC 5321 §5.1), one SMTP
/// transaction per address for the recipients still open. What each attempt means for the recipients is decided by
/// `DestinationRun.judge` (Decisions/AttemptDecisions.swift, which also lists the rules); this shell runs the
/// attempts and executes the effects: log lines, metrics, transport cache.
struct OutboundDelivery: Sendable {
    let configuration: OutboundConfiguration
    let router: Router
    let logger: Logger
    let spool: Spool
    let work: BlockingWork
    var history: HistoryBuffer? = nil
    /// For an 8-bit message: its 7-bit conversion (or why there is none), made once per run and sent to next hops
    /// without 8BITMIME.
    var sevenBitBody: SevenBitBody? = nil

    /// Delivers the recipients at `indices` (all pending and remote) and returns the updated envelope.
    func deliver(_ envelope: Envelope, indices: [Int]) async -> Envelope {
        var envelope = envelope
        var delivery = self
        if envelope.bodyType == BodyType.eightBitMIME.rawValue {
            let id = envelope.id
            delivery.sevenBitBody = await work.run { [spool] in SevenBitBody.convert(spool: spool, id: id) }
        }
        let effects = EffectExecutor(logger: logger, router: router, history: history)
        for group in Self.destinations(of: envelope, indices: indices) {
            guard let destination = group.destination else {
                let now = Int64(Date().timeIntervalSince1970)
                for index in group.indices {
                    effects.execute(
                        envelope.settle(
                            index, .failed, EnhancedStatus(5, 1, 3), "recipient domain does not parse", remote: nil,
                            now: now),
                        envelope: envelope)
                }
                continue
            }
            envelope = await delivery.deliver(envelope, to: destination, indices: group.indices)
        }
        return envelope
    }

    /// The recipients grouped by destination, in the order they first appear.
    static func destinations(of envelope: Envelope, indices: [Int]) -> [(destination: Destination?, indices: [Int])] {
        var groups: [(key: String, destination: Destination?, indices: [Int])] = []
        for index in indices {
            let address = envelope.recipients[index].address
            let destination = Destination(parsing: address)
            let key = destination?.description ?? address
            if let position = groups.firstIndex(where: { $0.key == key }) {
                groups[position].indices.append(index)
            } else {
                groups.append((key, destination, [index]))
            }
        }
        return groups.map { ($0.destination, $0.indices) }
    }

    private func deliver(_ envelope: Envelope, to destination: Destination, indices: [Int]) async -> Envelope {
        var envelope = envelope
        let effects = EffectExecutor(logger: logger, router: router, history: history)
        let plan = await work.run { [router] in router.plan(destination, now: Date()) }
        effects.execute(DestinationRun.notes(of: plan), envelope: envelope)
        var run = DestinationRun(destination: destination.description, recipients: indices)
        if let verdictEffects = run.judge(
            verdict: plan.verdict, envelope: &envelope, now: Int64(Date().timeIntervalSince1970))
        {
            effects.execute(verdictEffects, envelope: envelope)
            return envelope
        }
        var feed = AttemptFeed(
            plan: plan,
            maker: AttemptMaker(
                configuration: configuration, spool: spool, sevenBitBody: sevenBitBody, logger: logger),
            logger: logger)
        feed.history = history
        let started = ContinuousClock.now
        while !run.isDone,
            let fed = await feed.next(
                envelope: envelope, recipients: run.open.map { envelope.recipients[$0].address })
        {
            var outcome = fed.outcome
            if case .session(let session) = outcome.outcome {
                DualMTAMetrics.registry.increment(
                    DualMTAMetrics.outboundConnections, ["conn": session.reused ? "reused" : "new"])
            }
            outcome.tlsPolicy = configuration.tlsPolicy(
                for: fed.attempt, recipients: run.open.map { envelope.recipients[$0].address })
            let judged = run.judge(
                outcome, attempt: fed.attempt, rank: fed.rank, firstFamily: feed.firstFamily,
                envelope: &envelope, now: Int64(Date().timeIntervalSince1970))
            // Once per accepted recipient: the peer has it, the envelope does not say so yet.
            for effect in judged where effect.isCacheSuccess { CrashPoint.hit("outbound.remote-accepted") }
            effects.execute(judged, envelope: envelope, destinationStarted: started)
        }
        effects.execute(
            run.exhausted(envelope: &envelope, now: Int64(Date().timeIntervalSince1970)), envelope: envelope)
        return envelope
    }
}

extension DeliveryEffect {
    var isCacheSuccess: Bool {
        if case .cache(.success) = self { return true }
        return false
    }
}

extension DestinationRun {
    /// The plan's notes for the log: what was skipped and why, and remarks on planned addresses.
    static func notes(of plan: RoutePlan) -> [DeliveryEffect] {
        plan.skipped.map { .log(.skipped(subject: $0.subject, reason: $0.reason)) }
            + plan.attempts.compactMap { attempt in
                attempt.note.map {
                    .log(.routeNote(mx: attempt.mxHost, address: attempt.address.description, note: $0))
                }
            }
    }
}

extension IPAddress {
    /// `[2001:db8::1]` / `[192.0.2.1]`, the form log lines use for addresses.
    var bracketed: String { "[\(self)]" }
}

extension ClientTimeouts {
    /// Every stage at most `cap` (lab and test setups shorten them all).
    func capped(at cap: Duration) -> ClientTimeouts {
        var copy = self
        copy.greeting = min(greeting, cap)
        copy.ehlo = min(ehlo, cap)
        copy.mail = min(mail, cap)
        copy.rcpt = min(rcpt, cap)
        copy.dataInit = min(dataInit, cap)
        copy.dataBlock = min(dataBlock, cap)
        copy.dataDone = min(dataDone, cap)
        copy.quit = min(quit, cap)
        copy.rset = min(rset, cap)
        return copy
    }
}

/// The 7-bit form of an 8-bit message for a next hop without 8BITMIME, or why it cannot exist.
public enum SevenBitBody: Sendable {
    case converted([UInt8])
    case impossible(String)

    /// What the client session may do when the next hop lacks 8BITMIME.
    var option: SevenBitOption {
        switch self {
        case .converted: return .available
        case .impossible(let why): return .unavailable(why)
        }
    }

    /// Reads the queued message and converts it (blocking: runs on the work queue).
    static func convert(spool: Spool, id: QueueID) -> SevenBitBody {
        let bytes: [UInt8]
        do throws(SpoolError) {
            bytes = try spool.readMessage(id)
        } catch {
            return .impossible("cannot read the queued message: \(error)")
        }
        switch SevenBitDowngrade.convert(bytes) {
        case .success(let converted): return .converted(converted)
        case .failure(let failure): return .impossible(failure.description)
        }
    }
}
