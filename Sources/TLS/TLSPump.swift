/// What ciphertext from the network turned into, in order.
public enum TLSEvent: Equatable, Sendable {
    /// The handshake finished with these bytes.
    case established
    /// Decrypted application bytes (never empty).
    case plaintext([UInt8])
    /// The peer's close_notify.
    case closed
    /// The handshake failed (`duringHandshake`), or a record could not be read afterwards.
    case failed(TLSError, duringHandshake: Bool)
}

extension TLSSession {
    /// The one place a connection's ciphertext goes through TLS, for the server's and the client's session drivers
    /// alike: feeds `bytes` in, drives an unfinished handshake, decrypts what is buffered, and returns what happened
    /// plus the bytes to send to the peer (handshake records, alerts). After `.failed` or `.closed` nothing follows.
    public func pump(_ bytes: some Collection<UInt8>) -> (events: [TLSEvent], output: [UInt8]) {
        consumeFromNetwork(bytes)
        var events: [TLSEvent] = []
        if !isHandshakeComplete {
            switch handshake() {
            case .incomplete:
                return (events, getDataForNetwork())
            case .failed(let error):
                return ([.failed(error, duringHandshake: true)], getDataForNetwork())
            case .complete:
                events.append(.established)
            }
        }
        switch readPlaintext() {
        case .complete(let plaintext):
            if !plaintext.isEmpty { events.append(.plaintext(plaintext)) }
        case .incomplete:
            break
        case .failed(.closed):
            events.append(.closed)
        case .failed(let error):
            events.append(.failed(error, duringHandshake: false))
        }
        return (events, getDataForNetwork())
    }
}
