import Dispatch
import Foundation
import NetAddress
import Sockets

/// `dualmta stats`: fetches `GET /metrics` from the running daemon's `http_listen` address and prints it.
public enum Stats {
    public enum Failure: Error, CustomStringConvertible {
        case notConfigured
        case connect(SocketAddress, SocketError)
        case timedOut(SocketAddress)
        case badResponse(String)

        public var description: String {
            switch self {
            case .notConfigured:
                return "metrics are not configured: http_listen is none; set it (e.g. 127.0.0.1:8025) and restart"
            case .connect(let address, let error): return "cannot reach the metrics endpoint \(address): \(error)"
            case .timedOut(let address): return "no answer from the metrics endpoint \(address)"
            case .badResponse(let why): return "unexpected answer from the metrics endpoint: \(why)"
            }
        }
    }

    /// Where to connect for `http_listen`: a wildcard becomes the loopback address of its family.
    public static func endpoint(for listen: SocketAddress) -> SocketAddress {
        guard listen.ip.addressClass == .unspecified else { return listen }
        let loopback = listen.family == .ipv6 ? IPAddress("::1") : IPAddress("127.0.0.1")
        return loopback.map { SocketAddress(ip: $0, port: listen.port) } ?? listen
    }

    /// The exposition text from the daemon.
    public static func fetch(_ configuration: Configuration, timeout: Duration = .seconds(5)) throws(Failure) -> String
    {
        guard let listen = configuration.httpListen else { throw .notConfigured }
        let address = endpoint(for: listen)
        let queue = DispatchQueue(label: "dualmta.stats")
        let done = DispatchSemaphore(value: 0)
        let box = FetchBox()
        Connection.connect(to: address, from: nil, timeout: timeout, queue: queue) { result in
            switch result {
            case .failure(let error):
                box.error = error
                done.signal()
            case .success(let connection):
                connection.startReading(
                    { bytes in box.response.append(contentsOf: bytes) },
                    onClose: { _ in
                        connection.close(afterFlush: false)
                        done.signal()
                    })
                connection.write(Array("GET /metrics HTTP/1.0\r\nHost: \(address)\r\n\r\n".utf8))
            }
        }
        let (seconds, attoseconds) = timeout.components
        let milliseconds = Int(seconds) * 1000 + Int(attoseconds / 1_000_000_000_000_000)
        if done.wait(timeout: .now() + .milliseconds(milliseconds)) == .timedOut { throw .timedOut(address) }
        let (error, response) = queue.sync { (box.error, box.response) }
        if let error { throw .connect(address, error) }
        return try body(of: response)
    }

    /// The body of a `200` HTTP response (pure).
    public static func body(of response: [UInt8]) throws(Failure) -> String {
        let text = String(decoding: response, as: UTF8.self)
        guard let split = text.range(of: "\r\n\r\n") else { throw .badResponse("no end of headers") }
        let statusLine = text[..<split.lowerBound].split(separator: "\r\n").first ?? ""
        guard statusLine.hasPrefix("HTTP/1."), statusLine.split(separator: " ").dropFirst().first == "200" else {
            throw .badResponse(String(statusLine))
        }
        return String(text[split.upperBound...])
    }

    /// The samples without the comment lines and, unless `raw`, without histogram buckets (their `_sum` and
    /// `_count` stay): what an operator reads at a terminal.
    public static func summary(_ exposition: String, raw: Bool) -> String {
        if raw { return exposition }
        let lines = exposition.split(separator: "\n").filter { line in
            !line.hasPrefix("#") && !line.contains("_bucket{")
        }
        return lines.joined(separator: "\n") + "\n"
    }
}

/// Filled on the fetch queue, read after the semaphore (or via `queue.sync` after a timeout): never concurrently.
private final class FetchBox: @unchecked Sendable {
    var response: [UInt8] = []
    var error: SocketError?
}
