import MTA
import Sockets
import Testing

@Suite struct ConfigDiscoveryTests {
    static let system = ConfigDiscovery.systemPath

    @Test(
        "-c, then $DUALMTA_CONFIG, then /etc/dualmta/dualmta.conf, then the embedded defaults",
        arguments: [
            ("/x.conf", "/env.conf", true, ConfigDiscovery.Source.option("/x.conf")),
            (nil, "/env.conf", true, .environment("/env.conf")),
            (nil, "", true, .system(system)),
            (nil, nil, true, .system(system)),
            (nil, nil, false, .defaults),
        ] as [(String?, String?, Bool, ConfigDiscovery.Source)])
    func order(option: String?, environment: String?, systemExists: Bool, expected: ConfigDiscovery.Source) {
        let env = environment.map { ["DUALMTA_CONFIG": $0] } ?? [:]
        let source = ConfigDiscovery.source(
            option: option, environment: env, fileExists: { $0 == Self.system && systemExists })
        #expect(source == expected)
    }

    @Test("a client without a config needs an existing spool; with a config it goes on")
    func clientRefusal() {
        #expect(ConfigDiscovery.clientRefusal(source: .defaults, spoolDirectory: "spool", spoolExists: false) != nil)
        #expect(ConfigDiscovery.clientRefusal(source: .defaults, spoolDirectory: "spool", spoolExists: true) == nil)
        #expect(
            ConfigDiscovery.clientRefusal(source: .environment("/e.conf"), spoolDirectory: "/s", spoolExists: false)
                == nil)
    }

    @Test("the daemon is reached on its loopback or wildcard listeners, never on a public address")
    func daemonEndpoints() {
        let listen = ["[::]:2525", "0.0.0.0:2525", "192.0.2.1:25", "127.0.0.1:2526", "[::1]:2525"]
            .compactMap { SocketAddress(parsing: $0) }
        #expect(
            DaemonSubmission.endpoints(listen: listen).map(\.description) == [
                "[::1]:2525", "127.0.0.1:2525", "127.0.0.1:2526",
            ])
    }
}
