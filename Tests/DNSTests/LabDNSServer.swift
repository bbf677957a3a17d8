import DNS
import Foundation
import Glibc
import NetAddress
import Testing

/// A real DNS server for the tests: unbound (Debian package `unbound`) on 127.0.0.1 and ::1 at a free high port,
/// serving `LabDNSServer.zone` from local-data. Never the machine's own resolver.
final class LabDNSServer {
    let port: UInt16
    private let process: Process
    private let directory: URL

    static let unboundPath: String? = ["/usr/sbin/unbound", "/usr/bin/unbound"].first {
        FileManager.default.isExecutableFile(atPath: $0)
    }

    /// Runs the test when unbound is there; on CI (CI=true) a missing unbound is a failure, not a skip.
    static let enabled = unboundPath != nil || ProcessInfo.processInfo.environment["CI"] == "true"

    enum StartError: Error, CustomStringConvertible {
        case unboundMissing
        case notReady(String)

        var description: String {
            switch self {
            case .unboundMissing: return "unbound is not installed (Debian package: unbound)"
            case .notReady(let log): return "unbound did not answer in time; its log:\n\(log)"
            }
        }
    }

    var ipv4: NameServer { NameServer(address: .v4(IPv4Address(127, 0, 0, 1)), port: port) }
    var ipv6: NameServer { NameServer(address: .v6(IPv6Address(groups: [0, 0, 0, 0, 0, 0, 0, 1])), port: port) }

    /// A resolver that asks only this server (over IPv4 unless told otherwise).
    func resolver(_ servers: [NameServer]? = nil, timeout: Int = 2, attempts: Int = 2) -> SystemResolver {
        SystemResolver(servers: servers ?? [ipv4], timeout: timeout, attempts: attempts)
    }

    private init(port: UInt16, process: Process, directory: URL) {
        self.port = port
        self.process = process
        self.directory = directory
    }

    /// Starts unbound and waits (polling a query, 15 s deadline) until it answers. Retries on another port if the
    /// chosen one was taken in the meantime.
    static func start() throws -> LabDNSServer {
        guard let unbound = unboundPath else { throw StartError.unboundMissing }
        var lastLog = ""
        for _ in 0..<4 {
            let port = try freePort()
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("dualmta-dns-\(UUID())")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            let config = directory.appendingPathComponent("unbound.conf")
            try configuration(port: port, directory: directory.path).write(
                to: config, atomically: true, encoding: .utf8)
            let logURL = directory.appendingPathComponent("unbound.log")
            _ = FileManager.default.createFile(atPath: logURL.path, contents: nil)
            let log = try FileHandle(forWritingTo: logURL)
            let process = Process()
            process.executableURL = URL(fileURLWithPath: unbound)
            process.arguments = ["-d", "-c", config.path]
            process.standardOutput = log
            process.standardError = log
            try process.run()
            let server = LabDNSServer(port: port, process: process, directory: directory)
            if server.waitUntilReady(deadline: Date().addingTimeInterval(15)) { return server }
            lastLog = (try? String(contentsOf: logURL, encoding: .utf8)) ?? ""
            server.stop()
        }
        throw StartError.notReady(lastLog)
    }

    private func waitUntilReady(deadline: Date) -> Bool {
        let probe = SystemResolver(servers: [ipv4], timeout: 1, attempts: 1)
        while Date() < deadline && process.isRunning {
            if case .records = probe.addresses("ready.lab.test", family: .ipv4) { return true }
            usleep(20_000)  // between polls only; the loop ends on the condition or the deadline
        }
        return false
    }

    func stop() {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(at: directory)
    }

    /// Runs `body` with a fresh server and always stops it, also when `body` throws or an expectation fails.
    static func with<T>(_ body: (LabDNSServer) throws -> T) throws -> T {
        let server = try start()
        defer { server.stop() }
        return try body(server)
    }

    /// A port that was free on ::1 (TCP and UDP) a moment ago.
    private static func freePort() throws -> UInt16 {
        let fd = socket(AF_INET6, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(.EMFILE) }
        defer { close(fd) }
        var address = sockaddr_in6()
        address.sin6_family = sa_family_t(AF_INET6)
        address.sin6_addr = in6addr_loopback
        address.sin6_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in6>.size)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        guard bound == 0 else { throw POSIXError(.EADDRINUSE) }
        let named = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard named == 0 else { throw POSIXError(.EADDRINUSE) }
        return UInt16(bigEndian: address.sin6_port)
    }

    /// Names of the 40-record MX set: long enough that the answer cannot fit a 512-byte UDP reply.
    static let bigMXHosts = (1...40).map { "mx\($0)-with-a-deliberately-long-label-to-force-tcp.big-zone.lab.test" }

    static let zone: [String] =
        [
            "ready.lab.test. 300 IN A 192.0.2.250",
            // equal preferences
            "eq.lab.test. 300 IN MX 10 mx1.lab.test.",
            "eq.lab.test. 300 IN MX 10 mx2.lab.test.",
            "eq.lab.test. 300 IN MX 10 mx3.lab.test.",
            "eq.lab.test. 300 IN MX 20 mx4.lab.test.",
            "mx1.lab.test. 300 IN A 192.0.2.1",
            "mx1.lab.test. 300 IN AAAA 2001:db8::1",
            "mx2.lab.test. 300 IN A 192.0.2.2",
            "mx3.lab.test. 300 IN AAAA 2001:db8::3",
            "mx4.lab.test. 300 IN A 192.0.2.4",
            // implicit MX: addresses only
            "implicit.lab.test. 300 IN A 192.0.2.5",
            "implicit.lab.test. 300 IN AAAA 2001:db8::5",
            // null MX
            "null.lab.test. 300 IN MX 0 .",
            // NODATA: the name exists with other types only
            "nodata.lab.test. 300 IN TXT \"no mail here\"",
            // CNAME as an MX target, and a CNAME'd domain
            "cnametarget.lab.test. 300 IN MX 10 alias.lab.test.",
            "alias.lab.test. 300 IN CNAME mx1.lab.test.",
            "cdom.lab.test. 300 IN CNAME eq.lab.test.",
            // a CNAME to a name that does not exist
            "dangling.lab.test. 300 IN CNAME gone.lab.test.",
        ] + bigMXHosts.enumerated().map { "big.lab.test. 300 IN MX \($0.offset + 1) \($0.element)." }

    private static func configuration(port: UInt16, directory: String) -> String {
        var lines = [
            "server:",
            "    interface: 127.0.0.1@\(port)",
            "    interface: ::1@\(port)",
            "    port: \(port)",
            "    do-daemonize: no",
            "    username: \"\"",
            "    chroot: \"\"",
            "    directory: \"\(directory)\"",
            "    pidfile: \"\(directory)/unbound.pid\"",
            "    use-syslog: no",
            "    logfile: \"\"",
            "    verbosity: 1",
            "    do-ip4: yes",
            "    do-ip6: yes",
            "    do-udp: yes",
            "    do-tcp: yes",
            "    access-control: 127.0.0.0/8 allow",
            "    access-control: ::1/128 allow",
            "    module-config: \"iterator\"",
            "    local-zone: \"lab.test.\" static",
            "    local-data: \"lab.test. 300 IN SOA ns.lab.test. hostmaster.lab.test. 1 3600 600 86400 300\"",
            "    local-zone: \"refused.test.\" refuse",
            "    local-zone: \"dropped.test.\" deny",
        ]
        lines += zone.map { "    local-data: \"\($0.replacingOccurrences(of: "\"", with: "\\\""))\"" }
        lines += ["remote-control:", "    control-enable: no", ""]
        return lines.joined(separator: "\n")
    }
}
