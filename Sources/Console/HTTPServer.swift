import Dispatch
import Sockets
import Synchronization

/// The console's HTTP/1.1 listener (`http_listen`): one request per connection, answered and closed. The same
/// defences as the SMTP side: the head is capped (HTTPLimits), must arrive within `requestTimeout` (a slow client
/// costs one descriptor for that long at most), connections beyond `maxConnections` get 503 (see `admission`), and
/// answers go out through Connection's bounded output buffer.
public final class HTTPServer: Sendable {
    public struct Settings: Sendable {
        public var limits = HTTPLimits()
        public var requestTimeout: Duration = .seconds(5)
        public var maxConnections = 32

        public init() {}
    }

    /// Answers one request (on that connection's queue, never the accept queue).
    public typealias Handler = @Sendable (HTTPRequest) -> HTTPResponse

    public let localAddress: SocketAddress
    private let listener: Listener
    /// Connections being served, and connections being refused.
    private let open = Mutex((0, 0))

    private init(listener: Listener) {
        self.listener = listener
        localAddress = listener.localAddress
    }

    public static func start(on address: SocketAddress, settings: Settings = Settings(), handler: @escaping Handler)
        throws(SocketError) -> HTTPServer
    {
        let listener = try Listener.bind(address, backlog: 64)
        let server = HTTPServer(listener: listener)
        listener.start(
            queue: DispatchQueue(label: "dualmta.http.accept"),
            onAccept: { [weak server] socket in
                guard let server else { return socket.close() }
                server.accepted(socket, settings: settings, handler: handler)
            },
            onError: { _ in })
        return server
    }

    public var openConnections: Int { open.withLock { $0.0 } }

    public func close() {
        listener.close()
    }

    /// How a new connection is taken: served, told 503, or (beyond even the refusal slots) closed at once.
    enum Admission: Equatable {
        case serve, refuse, drop
    }

    /// Pure: `maxConnections` are served; as many again get 503 (after their head arrived, so the answer is not
    /// lost to a reset from unread bytes), within a short deadline; anything beyond is closed unanswered.
    static func admission(open: Int, refusing: Int, maxConnections: Int) -> Admission {
        if open < maxConnections { return .serve }
        return refusing < maxConnections ? .refuse : .drop
    }

    private func accepted(_ socket: AcceptedSocket, settings: Settings, handler: @escaping Handler) {
        let admission = open.withLock { counts in
            let admission = Self.admission(open: counts.0, refusing: counts.1, maxConnections: settings.maxConnections)
            switch admission {
            case .serve: counts.0 += 1
            case .refuse: counts.1 += 1
            case .drop: break
            }
            return admission
        }
        guard admission != .drop else { return socket.close() }
        let queue = DispatchQueue(label: "dualmta.http.connection")
        let connection = Connection(socket: socket, queue: queue)
        var exchangeSettings = settings
        var exchangeHandler = handler
        if admission == .refuse {
            exchangeSettings.requestTimeout = min(settings.requestTimeout, Self.refusalTimeout)
            exchangeHandler = { _ in .text(.serviceUnavailable, "too many connections\n") }
        }
        let exchange = HTTPExchange(connection: connection, settings: exchangeSettings, handler: exchangeHandler) {
            [self] in
            open.withLock { counts in
                if admission == .serve { counts.0 -= 1 } else { counts.1 -= 1 }
            }
        }
        queue.async { exchange.start() }
    }

    /// How long a connection that is to be refused may take to send its head.
    static let refusalTimeout: Duration = .seconds(1)

    /// The answer to a parsed head, before the handler: only GET, HEAD and (bodiless) POST reach it.
    public static func respond(to result: HTTPParseResult, handler: Handler) -> (HTTPResponse, head: Bool)? {
        switch result {
        case .incomplete:
            return nil
        case .refused(let status, let reason):
            return (.text(status, reason + "\n"), false)
        case .request(let request):
            guard ["GET", "HEAD", "POST"].contains(request.method) else {
                var response = HTTPResponse.text(.methodNotAllowed, "only GET, HEAD and POST\n")
                response.extraHeaders = [("Allow", "GET, HEAD, POST")]
                return (response, false)
            }
            return (handler(request), request.method == "HEAD")
        }
    }
}

/// One request on one connection; confined to the connection's queue.
private final class HTTPExchange: @unchecked Sendable {
    // @unchecked Sendable: created on the accept queue, then touched only on `connection.queue` (start() is queued
    // there; the read, close and timer handlers run there).
    private let connection: Connection
    private let settings: HTTPServer.Settings
    private let handler: HTTPServer.Handler
    private let onEnd: @Sendable () -> Void
    private var head: [UInt8] = []
    private var timer: DispatchSourceTimer?
    private var answered = false
    private var ended = false

    init(
        connection: Connection, settings: HTTPServer.Settings, handler: @escaping HTTPServer.Handler,
        onEnd: @escaping @Sendable () -> Void
    ) {
        self.connection = connection
        self.settings = settings
        self.handler = handler
        self.onEnd = onEnd
    }

    func start() {
        let timer = DispatchSource.makeTimerSource(queue: connection.queue)
        timer.schedule(deadline: deadline(after: settings.requestTimeout))
        timer.setEventHandler { [self] in answer(.text(.requestTimeout, "request head too slow\n"), head: false) }
        self.timer = timer
        timer.activate()
        connection.startReading(
            { [self] bytes in received(bytes) },
            onClose: { [self] _ in end() })
    }

    private func received(_ bytes: UnsafeRawBufferPointer) {
        guard !answered else { return }
        head.append(contentsOf: bytes)
        let result = HTTPRequestParser.parse(head, limits: settings.limits)
        if let (response, isHead) = HTTPServer.respond(to: result, handler: handler) {
            answer(response, head: isHead)
        }
    }

    /// Sends the answer and closes once it drained (bounded by the drain timeout, so a reader that stalls cannot
    /// keep the descriptor).
    private func answer(_ response: HTTPResponse, head isHead: Bool) {
        guard !answered else { return }
        answered = true
        connection.write(response.serialized(includeBody: !isHead))
        connection.close(afterFlush: true, drainTimeout: settings.requestTimeout)
        end()
    }

    private func end() {
        guard !ended else { return }
        ended = true
        answered = true
        timer?.cancel()
        timer = nil
        onEnd()
    }
}
