import Glibc
import Sockets
import Testing

@testable import SMTPServer

@Suite struct ListenerReloadTests {
    static func key(_ text: String, _ kind: ListenerKind = .smtp) -> ListenerKey {
        ListenerKey(address: SocketAddress(parsing: text)!, kind: kind)
    }

    @Test("the diff closes what is gone, opens what is new, keeps the rest (a kind change is a new listener)")
    func diff() {
        let current = [Self.key("[::]:25"), Self.key("0.0.0.0:25"), Self.key("[::]:587", .submission)]
        let wanted = [Self.key("[::]:25"), Self.key("0.0.0.0:2525"), Self.key("[::]:587", .submissions)]
        let result = SMTPServer.listenerDiff(current: current, wanted: wanted)
        #expect(result.close == [Self.key("0.0.0.0:25"), Self.key("[::]:587", .submission)])
        #expect(result.open == [Self.key("0.0.0.0:2525"), Self.key("[::]:587", .submissions)])
        #expect(SMTPServer.listenerDiff(current: current, wanted: current) == ([], []))
    }

    @Test("a port below 1024 refused after the privilege drop says to restart")
    func privilegedPortAfterDrop() {
        let denied = SocketError.system(call: "bind", errno: EACCES)
        let low = SocketAddress(parsing: "0.0.0.0:25")!
        #expect(SMTPServer.bindFailure(low, denied, effectiveUser: 1000).contains("restart it to listen on 0.0.0.0:25"))
        #expect(!SMTPServer.bindFailure(low, denied, effectiveUser: 0).contains("restart"))
        let high = SocketAddress(parsing: "0.0.0.0:2525")!
        #expect(!SMTPServer.bindFailure(high, denied, effectiveUser: 1000).contains("restart"))
    }
}
