import Dispatch
import Foundation
import NetAddress
import Routing
import SMTPProtocol
import Sockets
import Testing

@testable import Delivery

@Suite(.serialized, .timeLimit(.minutes(1)))
struct ConnectionRacerTests {
    /// A loopback port nobody listens on (bound, then closed): connects to it are refused at once.
    static func closedPort(_ ip: String) throws -> SocketAddress {
        let listener = try Listener.bind(SocketAddress(ip: try #require(IPAddress(ip)), port: 0))
        let address = listener.localAddress
        listener.close()
        return address
    }

    static func candidate(_ address: SocketAddress, preference: UInt16 = 10) -> ConnectionRacer.Candidate {
        ConnectionRacer.Candidate(
            attempt: PlannedAttempt(
                mxHost: "mx.test", preference: preference, endpoint: Endpoint(address: address.ip, port: address.port)),
            source: nil)
    }

    static func race(_ candidates: [ConnectionRacer.Candidate], delay: Duration) async -> ConnectionRacer.Outcome {
        let queue = DispatchQueue(label: "racer-test")
        return await withCheckedContinuation { continuation in
            ConnectionRacer.race(candidates, delay: delay, connectTimeout: .seconds(5), queue: queue) { outcome in
                continuation.resume(returning: outcome)
            }
        }
    }

    @Test("a refused attempt starts the next at once (long delay), which wins; the session runs on it")
    func failureStartsNextAtOnce() async throws {
        let peer = try ScriptedPeer(on: "::1")
        defer { peer.stop() }
        let refused = try Self.closedPort("127.0.0.1")
        let started = ContinuousClock.now
        let outcome = await Self.race([Self.candidate(refused), Self.candidate(peer.address)], delay: .seconds(2))
        #expect(ContinuousClock.now - started < .seconds(1.5), "the delay was waited out after a failure")
        #expect(outcome.reports.map(\.index) == [0, 1])
        #expect(outcome.reports.map(\.result.label) == ["failed", "won"])
        #expect(outcome.reports[0].result == .failed(.system(call: "connect", errno: ECONNREFUSED)))
        let winner = try #require(outcome.winner)
        #expect(winner.index == 1)
        #expect(winner.connection.peer == peer.address)

        let message = try StoredMessage(Array("Subject: t\r\n\r\nbody\r\n".utf8))
        defer { message.remove() }
        let result = await withCheckedContinuation { continuation in
            let request = AttemptRequest(
                source: nil, connectTimeout: .seconds(5), timeouts: .all(.seconds(10)), heloName: "client.test",
                sender: "alice@client.test", recipients: ["bob@mx.test"], messageFile: message.path, bodyType: nil,
                smtpUTF8: false)
            RemoteDelivery.deliver(over: winner.connection, request) { continuation.resume(returning: $0) }
        }
        guard case .session(let session) = result.outcome else {
            Issue.record("expected a session, got \(result.outcome)")
            return
        }
        #expect(session.kind == .completed)
        #expect(peer.record.withLock { $0.commands.contains("DATA") })
    }

    @Test("the first attempt that connects wins; later candidates never start")
    func firstWins() async throws {
        let first = try ScriptedPeer(on: "::1")
        let second = try ScriptedPeer(on: "127.0.0.1")
        defer {
            first.stop()
            second.stop()
        }
        let outcome = await Self.race(
            [Self.candidate(first.address), Self.candidate(second.address)], delay: .seconds(2))
        #expect(outcome.reports.map(\.result.label) == ["won"])
        let winner = try #require(outcome.winner)
        #expect(winner.index == 0)
        winner.connection.queue.sync { winner.connection.close(afterFlush: false) }
    }

    @Test("every attempt failing ends the race without a winner, every attempt reported")
    func allFail() async throws {
        let outcome = await Self.race(
            [Self.candidate(try Self.closedPort("::1")), Self.candidate(try Self.closedPort("127.0.0.1"))],
            delay: .milliseconds(10))
        #expect(outcome.winner == nil)
        #expect(outcome.reports.map(\.result.label) == ["failed", "failed"])
    }
}
