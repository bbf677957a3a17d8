import Glibc
import Testing

@testable import Sockets

@Suite struct SocketErrorTests {
    @Test(arguments: [
        (SocketError.system(call: "connect", errno: EHOSTUNREACH), "connect: No route to host"),
        (.system(call: "connect", errno: ECONNREFUSED), "connect: Connection refused"),
        (.system(call: "bind", errno: EADDRINUSE), "bind: Address already in use"),
        (.system(call: "connect", errno: ENETUNREACH), "connect: Network is unreachable"),
        (.timedOut, "connection timed out"),
        (.closed, "connection closed"),
        (.addressFamilyUnsupported, "address family not supported"),
    ])
    func descriptionNamesCallAndReason(error: SocketError, text: String) {
        #expect(error.description == text)
    }

    @Test func errnoCodeOnlyForSystemErrors() {
        #expect(SocketError.system(call: "send", errno: EPIPE).errnoCode == EPIPE)
        #expect(SocketError.timedOut.errnoCode == nil)
    }

    @Test func familyMismatchNamesBothAddresses() throws {
        let error = SocketError.familyMismatch(source: try address("[::1]:0"), remote: try address("192.0.2.1:25"))
        #expect(error.description.contains("[::1]:0"))
        #expect(error.description.contains("192.0.2.1:25"))
    }
}

@Suite struct SocketErrorMetricReasonTests {
    @Test("failure reasons of connect errors, as the connect metrics label them")
    func reasons() {
        #expect(SocketError.system(call: "connect", errno: ECONNREFUSED).metricReason == "refused")
        #expect(SocketError.system(call: "connect", errno: EHOSTUNREACH).metricReason == "unreachable")
        #expect(SocketError.system(call: "connect", errno: ENETUNREACH).metricReason == "unreachable")
        #expect(SocketError.timedOut.metricReason == "timeout")
        #expect(SocketError.system(call: "bind", errno: EACCES).metricReason == "other")
    }
}
