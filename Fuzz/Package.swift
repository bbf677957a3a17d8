// swift-tools-version:6.0
// libFuzzer targets for dualmta: the parsers that read untrusted bytes. Build and run them with scripts/fuzz
// (build flags and pitfalls: docs/rules.md, "Fuzzing and sanitizers").
//
// The main package exports no library products, so `.package(path: "..")` cannot reach its modules. Instead the
// modules under test are compiled here from the very same sources: Modules/<Name> are symlinks to
// ../Sources/<Name>. The main package's build is untouched, and the fuzz build (sanitizer flags, Fuzz/.build)
// never mixes with it.
import PackageDescription

let package = Package(
    name: "dualmta-fuzz",
    targets: [
        .target(name: "NetAddress", path: "Modules/NetAddress"),
        .target(name: "SMTPProtocol", dependencies: ["NetAddress"], path: "Modules/SMTPProtocol"),
        .target(name: "Spool", dependencies: ["SMTPProtocol"], path: "Modules/Spool"),
        .executableTarget(name: "FuzzSession", dependencies: ["SMTPProtocol", "NetAddress"]),
        .executableTarget(name: "FuzzMailbox", dependencies: ["SMTPProtocol"]),
        .executableTarget(name: "FuzzEnvelope", dependencies: ["Spool"]),
        .executableTarget(name: "FuzzReply", dependencies: ["SMTPProtocol"]),
        // Only the console's pure files (parser, response, escaping): the rest of Console needs sockets.
        .target(
            name: "Console", path: "Modules/Console",
            exclude: [
                "ConsoleActions.swift", "ConsolePages.swift", "ConsoleSite.swift", "ConsoleSource.swift",
                "EncodedWords.swift", "FamilyCounts.swift", "HTTPServer.swift", "Maildirs.swift", "QueueFilter.swift",
            ],
            sources: ["HTTPRequest.swift", "HTTPResponse.swift", "HTML.swift", "LiveScript.swift"]),
        .executableTarget(name: "FuzzHTTP", dependencies: ["Console"]),
    ]
)
