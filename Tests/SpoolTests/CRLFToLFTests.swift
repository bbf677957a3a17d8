import Testing

@testable import Spool

@Suite struct CRLFToLFTests {
    @Test(
        "CRLF becomes LF, other CRs stay, also when a CRLF is split between chunks",
        arguments: [
            (["a\r\nb\r\n"], "a\nb\n"),
            (["a\r", "\nb"], "a\nb"),
            (["a\r", "b\r\n"], "a\rb\n"),
            (["a\r"], "a\r"),
            (["\r\r\n"], "\r\n"),
            (["x\n"], "x\n"),
            ([""], ""),
        ])
    func convert(chunks: [String], expected: String) {
        var converter = CRLFToLF()
        var output: [UInt8] = []
        for chunk in chunks { output += converter.convert(Array(chunk.utf8)) }
        output += converter.finish()
        #expect(output == Array(expected.utf8))
    }
}
