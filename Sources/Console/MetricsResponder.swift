import Dispatch
import Sockets

/// A tiny HTTP/1.0 responder for Prometheus scrapes (`metrics_listen`): `GET /metrics` gets the exposition text,
/// anything else 404 (a request that is not HTTP gets 400). One request per connection, then close. The request
/// head is capped at 8 KiB and must arrive within 5 s, so a stuck client costs one fd for 5 s at most.
public final class MetricsResponder: Sendable {
    public static let maxRequestHead = 8 * 1024
    public static let requestTimeout: Duration = .seconds(5)
    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    public let localAddress: SocketAddress
    private let listener: Listener

    private init(listener: Listener) {
        self.listener = listener
        localAddress = listener.localAddress
    }

    /// Binds `address` and starts answering; `body` is called once per scrape (on a connection's queue).
    public static func start(on address: SocketAddress, body: @escaping @Sendable () -> String) throws(SocketError)
        -> MetricsResponder
    {
        let listener = try Listener.bind(address, backlog: 64)
        let acceptQueue = DispatchQueue(label: "dualmta.metrics.accept")
        listener.start(
            queue: acceptQueue,
            onAccept: { socket in
                let queue = DispatchQueue(label: "dualmta.metrics.connection")
                let exchange = HTTPExchange(
                    connection: Connection(socket: socket, queue: queue), body: body)
                queue.async { exchange.start() }
            },
            onError: { _ in })
        return MetricsResponder(listener: listener)
    }

    public func close() {
        listener.close()
    }

    /// The response to a complete request head (pure): status line, headers and body as bytes.
    public static func response(toRequestHead head: String, body: () -> String) -> [UInt8] {
        // "\r\n" is one Character in Swift: `isNewline` covers it and a bare LF alike.
        let requestLine = head.prefix { !$0.isNewline }
        let parts = requestLine.split(separator: " ", omittingEmptySubsequences: true)
        guard parts.count == 3, parts[2].hasPrefix("HTTP/") else {
            return render(status: "400 Bad Request", body: "bad request\n")
        }
        let path = parts[1].split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        guard parts[0] == "GET", path == "/metrics" else { return render(status: "404 Not Found", body: "not found\n") }
        return render(status: "200 OK", body: body(), contentType: contentType)
    }

    static func render(status: String, body: String, contentType: String = "text/plain; charset=utf-8") -> [UInt8] {
        let bytes = Array(body.utf8)
        let head =
            "HTTP/1.0 \(status)\r\nContent-Type: \(contentType)\r\nContent-Length: \(bytes.count)\r\n"
            + "Connection: close\r\n\r\n"
        return Array(head.utf8) + bytes
    }
}

/// One scrape on one connection; confined to the connection's queue.
private final class HTTPExchange: @unchecked Sendable {
    // @unchecked Sendable: created on the accept queue, then touched only on `connection.queue` (start() is queued
    // there; the read, close and timer handlers run there).
    private let connection: Connection
    private let body: @Sendable () -> String
    private var head: [UInt8] = []
    private var timer: DispatchSourceTimer?
    private var answered = false

    init(connection: Connection, body: @escaping @Sendable () -> String) {
        self.connection = connection
        self.body = body
    }

    func start() {
        let timer = DispatchSource.makeTimerSource(queue: connection.queue)
        timer.schedule(deadline: deadline(after: MetricsResponder.requestTimeout))
        timer.setEventHandler { self.finish(nil) }
        self.timer = timer
        timer.activate()
        connection.startReading(
            { bytes in self.received(bytes) },
            onClose: { _ in self.finish(nil) })
    }

    private func received(_ bytes: UnsafeRawBufferPointer) {
        guard !answered else { return }
        head.append(contentsOf: bytes)
        if let end = headEnd() {
            let text = String(decoding: head[..<end], as: UTF8.self)
            finish(MetricsResponder.response(toRequestHead: text, body: body))
        } else if head.count > MetricsResponder.maxRequestHead {
            finish(MetricsResponder.render(status: "400 Bad Request", body: "request head too long\n"))
        }
    }

    /// Where the head ends (a blank line, CRLF or bare LF), if it has arrived.
    private func headEnd() -> Int? {
        guard head.count >= 2 else { return nil }
        for index in 1..<head.count where head[index] == 0x0A {
            if head[index - 1] == 0x0A { return index }
            if index >= 3, head[index - 1] == 0x0D, head[index - 2] == 0x0A { return index }
        }
        return nil
    }

    /// Sends `response` (if any) and closes; a second call does nothing.
    private func finish(_ response: [UInt8]?) {
        guard !answered else { return }
        answered = true
        timer?.cancel()
        timer = nil
        if let response { connection.write(response) }
        connection.close(afterFlush: true, drainTimeout: MetricsResponder.requestTimeout)
    }
}
