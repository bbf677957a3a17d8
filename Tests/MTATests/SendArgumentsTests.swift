import Testing

@testable import MTA

@Suite struct SendArgumentsTests {
    @Test func recipientsAndFlags() throws {
        let options = try SendArguments.parse(["-t", "-i", "-f", "a@r.example", "b@lab.example", "c@lab.example"])
        #expect(options.recipientsFromHeaders)
        #expect(options.ignoreDots)
        #expect(options.sender == "a@r.example")
        #expect(options.recipients == ["b@lab.example", "c@lab.example"])
        #expect(options.mode == .send)
    }

    @Test(arguments: [
        (["-fa@r.example"], "a@r.example"), (["-f", "<>"], "<>"), (["-f", ""], ""), (["-ra@r.example"], "a@r.example"),
    ])
    func senderForms(arguments: [String], expected: String) throws {
        #expect(try SendArguments.parse(arguments).sender == expected)
    }

    @Test func oiAndCombinedFlags() throws {
        #expect(try SendArguments.parse(["-oi"]).ignoreDots)
        let combined = try SendArguments.parse(["-ti"])
        #expect(combined.recipientsFromHeaders && combined.ignoreDots)
    }

    @Test func modes() throws {
        #expect(try SendArguments.parse(["-bp"]).mode == .listQueue)
        #expect(try SendArguments.parse(["-q"]).mode == .flushQueue)
        #expect(try SendArguments.parse(["-bm", "x@y.example"]).mode == .send)
        #expect(try SendArguments.parse(["--help"]).mode == .help)
    }

    @Test func fullNameIsKept() throws {
        let separate = try SendArguments.parse(["-F", "Joe User", "x@y.example"])
        #expect(separate.recipients == ["x@y.example"])
        #expect(separate.fullName == "Joe User")
        #expect(separate.warnings.isEmpty)
        #expect(try SendArguments.parse(["-FJoe", "x@y.example"]).fullName == "Joe")
    }

    @Test("what cron and mutt pass is accepted without a warning")
    func cronAndMuttOptionsDoNotWarn() throws {
        let options = try SendArguments.parse([
            "-odb", "-oem", "-oi", "-B8BITMIME", "-N", "failure,delay", "-R", "hdrs", "-V", "env-1", "-em",
            "x@y.example",
        ])
        #expect(options.warnings.isEmpty)
        #expect(options.recipients == ["x@y.example"])
        #expect(options.ignoreDots)
        #expect(options.bodyType == "8BITMIME")
        #expect(options.dsnNotify == "failure,delay" && options.dsnReturn == "hdrs" && options.envelopeID == "env-1")
        #expect(try SendArguments.parse(["-oXyz", "x@y.example"]).warnings.count == 1)
    }

    @Test(
        "-F NAME becomes the From display name",
        arguments: [
            ("Cron Daemon", "\"Cron Daemon\""),
            ("Say \"hi\"", "\"Say \\\"hi\\\"\""),
            ("J\u{00F6}rg", "=?UTF-8?B?SsO2cmc=?="),
            ("  ", ""),
        ])
    func displayName(name: String, expected: String) {
        #expect(DisplayName.encode(name) == expected)
    }

    @Test func configOption() throws {
        #expect(try SendArguments.parse(["x@y.example", "-c", "/etc/d.conf"]).configPath == "/etc/d.conf")
        #expect(try SendArguments.parse(["-C/etc/d.conf"]).configPath == "/etc/d.conf")
        #expect(try SendArguments.parse(["--config=/etc/d.conf"]).configPath == "/etc/d.conf")
    }

    @Test func doubleDashEndsOptions() throws {
        #expect(try SendArguments.parse(["--", "-t", "x@y.example"]).recipients == ["-t", "x@y.example"])
    }

    @Test(arguments: [["-Z"], ["-f"], ["-bs"], ["-c"], ["-tx"], ["--configx"], ["-B", "9BIT"]])
    func usageErrors(arguments: [String]) {
        #expect(throws: SubmissionError.self) { try SendArguments.parse(arguments) }
        do {
            _ = try SendArguments.parse(arguments)
        } catch {
            #expect(error.exitStatus == 64)
        }
    }
}
