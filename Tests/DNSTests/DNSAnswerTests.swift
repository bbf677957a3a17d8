import DNS
import NetAddress
import Testing

@Suite struct DNSAnswerTests {
    @Test("MX exchange is normalized; the root is the null MX")
    func normalization() {
        #expect(MXRecord(preference: 10, exchange: "MX.Example.TEST.").exchange == "mx.example.test")
        #expect(MXRecord(preference: 0, exchange: ".").isNullMX)
        #expect(!MXRecord(preference: 0, exchange: "mx.example.test").isNullMX)
    }

    @Test("records accessor")
    func records() {
        let answer = DNSAnswer<MXRecord>.records([MXRecord(preference: 1, exchange: "a")], canonicalName: nil)
        #expect(answer.records.count == 1)
        #expect(DNSAnswer<MXRecord>.noData.records.isEmpty)
        #expect(DNSAnswer<MXRecord>.temporaryFailure("x").records.isEmpty)
    }
}
