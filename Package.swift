// swift-tools-version:6.0
import PackageDescription

let log: Target.Dependency = .product(name: "Logging", package: "swift-log")
let argumentParser: Target.Dependency = .product(name: "ArgumentParser", package: "swift-argument-parser")

let package = Package(
    name: "dualmta",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "dualmta", targets: ["dualmta"])
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    ],
    targets: [
        // Layer 0: C libraries and pure, dependency-free modules.
        .systemLibrary(name: "COpenSSL", pkgConfig: "openssl", providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "CResolv"),
        .systemLibrary(name: "CCrypt"),
        .target(name: "NetAddress"),
        .target(name: "SMTPProtocol", dependencies: ["NetAddress"]),
        .target(name: "Sockets", dependencies: ["NetAddress"]),
        .target(name: "Metrics", dependencies: ["NetAddress"]),
        .target(name: "Faults", dependencies: ["NetAddress"]),
        // Layer 1
        .target(name: "Spool", dependencies: ["SMTPProtocol"]),
        .target(name: "TLS", dependencies: ["COpenSSL"]),
        .target(name: "DNS", dependencies: ["CResolv", "NetAddress"]),
        .target(name: "Routing", dependencies: ["DNS", "NetAddress", "SMTPProtocol", log]),
        .target(name: "Console", dependencies: ["Sockets", "Metrics", "Spool", "SMTPProtocol"]),
        // Layer 2
        .target(
            name: "SMTPServer",
            dependencies: [
                "SMTPProtocol", "Spool", "Sockets", "Metrics", "TLS", "CCrypt", "NetAddress", "Faults", log,
            ]),
        .target(
            name: "Delivery",
            dependencies: [
                "SMTPProtocol", "Spool", "Sockets", "Metrics", "TLS", "DNS", "Routing", "NetAddress", "Faults", log,
            ]),
        .target(
            name: "MTA",
            dependencies: [
                "SMTPServer", "Delivery", "Console", "Metrics", "Spool", "SMTPProtocol", "Sockets", "TLS", "DNS",
                "Routing", "NetAddress", "Faults", log,
            ]
        ),
        // Layer 3
        .executableTarget(name: "dualmta", dependencies: ["MTA", "Faults", argumentParser, log]),

        .testTarget(name: "NetAddressTests", dependencies: ["NetAddress"]),
        .testTarget(name: "FaultsTests", dependencies: ["Faults", "NetAddress"]),
        .testTarget(name: "SMTPProtocolTests", dependencies: ["SMTPProtocol"]),
        .testTarget(name: "SpoolTests", dependencies: ["Spool", "SMTPProtocol"], exclude: ["Fixtures"]),
        .testTarget(name: "SocketsTests", dependencies: ["Sockets"]),
        .testTarget(name: "MetricsTests", dependencies: ["Metrics"]),
        .testTarget(name: "ConsoleTests", dependencies: ["Console", "Sockets", "Spool", "SMTPProtocol"]),
        .testTarget(name: "TLSTests", dependencies: ["TLS"]),
        .testTarget(name: "DNSTests", dependencies: ["DNS"]),
        .testTarget(name: "RoutingTests", dependencies: ["Routing", log]),
        .testTarget(
            name: "DeliveryTests",
            dependencies: ["Delivery", "Sockets", "SMTPProtocol", "Spool", "Routing", "NetAddress"]),
        .testTarget(name: "MTATests", dependencies: ["MTA", "Faults", "Sockets", "NetAddress"]),
        .testTarget(
            name: "SMTPServerTests",
            dependencies: ["SMTPServer", "SMTPProtocol", "Spool", "Sockets", "TLS", "NetAddress", log]),
    ]
)
