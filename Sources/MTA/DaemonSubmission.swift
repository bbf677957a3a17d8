import Foundation
import Glibc
import SMTPProtocol
import Sockets

/// How a user who does not own the spool submits: over SMTP to the running daemon's own loopback listener (the
/// first `listen` address that is loopback or a wildcard, reached at ::1 or 127.0.0.1). The daemon then applies its
/// usual rules (relay_networks must cover loopback for mail to other domains, as it does by default) and writes
/// the spool as its owner. A command-line tool, so plain blocking sockets with timeouts.
public enum DaemonSubmission {
    /// Where the daemon can be reached on this host, in the order to try.
    public static func endpoints(listen: [SocketAddress]) -> [SocketAddress] {
        var result: [SocketAddress] = []
        for address in listen {
            switch address.ip.addressClass {
            case .loopback:
                result.append(address)
            case .unspecified:
                let text = address.family == .ipv6 ? "[::1]:\(address.port)" : "127.0.0.1:\(address.port)"
                if let loopback = SocketAddress(parsing: text) { result.append(loopback) }
            default:
                continue
            }
        }
        var seen = Set<SocketAddress>()
        return result.filter { seen.insert($0).inserted }
    }

    /// Sends one message; returns the daemon's queue id from its final `250 ... queued as ID`.
    public static func submit(_ submission: Submission, listen: [SocketAddress], heloName: String, timeout: Int = 60)
        throws(SubmissionError) -> String
    {
        let targets = endpoints(listen: listen)
        guard !targets.isEmpty else {
            throw .daemon("no loopback or wildcard address in listen: the daemon cannot be reached from this host")
        }
        var refused: [String] = []
        for target in targets {
            guard let connection = BlockingSMTP(address: target, timeoutSeconds: timeout) else {
                refused.append(target.description)
                continue
            }
            defer { connection.close() }
            return try connection.send(submission, heloName: heloName)
        }
        throw .daemon(
            "the MTA is not running: nothing answers on \(refused.joined(separator: ", ")) "
                + "(you do not own the spool, so the message must go through the daemon; start it and retry)")
    }
}

/// One SMTP session over a blocking socket.
private final class BlockingSMTP {
    private let fd: Int32
    private let address: SocketAddress
    private var parser = ReplyParser()

    init?(address: SocketAddress, timeoutSeconds: Int) {
        var hints = addrinfo()
        hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo("\(address.ip)", "\(address.port)", &hints, &list) == 0, let info = list else { return nil }
        defer { freeaddrinfo(list) }
        let fd = socket(info.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return nil }
        var limit = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        guard connect(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0 else {
            Glibc.close(fd)
            return nil
        }
        self.fd = fd
        self.address = address
    }

    func close() { Glibc.close(fd) }

    func send(_ submission: Submission, heloName: String) throws(SubmissionError) -> String {
        try expect(read(), 220, "greeting")
        try write("EHLO \(heloName)\r\n")
        let ehlo = try read()
        try expect(ehlo, 250, "EHLO")
        let keywords = Set(ehlo.lines.dropFirst().map { $0.split(separator: " ").first.map(String.init) ?? "" })
        var mail = "MAIL FROM:<\(submission.sender)>"
        if submission.eightBit && keywords.contains("8BITMIME") { mail += " BODY=8BITMIME" }
        if submission.smtpUTF8 && keywords.contains("SMTPUTF8") { mail += " SMTPUTF8" }
        let dsn = OutboundDSN(
            ret: submission.dsnReturn, envelopeID: submission.envelopeID,
            recipients: submission.recipients.map { _ in .init(notify: submission.notify, originalRecipient: nil) })
        let offersDSN = keywords.contains("DSN")
        if offersDSN { mail += dsn.mailParameters }
        try write(mail + "\r\n")
        try expect(read(), 250, "MAIL FROM")
        for (index, recipient) in submission.recipients.enumerated() {
            try write("RCPT TO:<\(recipient)>\(offersDSN ? dsn.rcptParameters(index) : "")\r\n")
            try expect(read(), 250, "RCPT TO:<\(recipient)>")
        }
        try write("DATA\r\n")
        try expect(read(), 354, "DATA")
        try write(OutboundBody.encode(submission.message))
        let final = try read()
        try expect(final, 250, "end of data")
        try? write("QUIT\r\n")
        let text = final.lines.joined(separator: " ")
        guard let range = text.range(of: "queued as ") else { return "?" }
        return String(text[range.upperBound...].prefix { !$0.isWhitespace })
    }

    private func expect(_ reply: Reply, _ code: Int, _ stage: String) throws(SubmissionError) {
        guard reply.code == code else {
            throw .rejected(
                code: reply.code, text: "\(address) at \(stage): \(reply.code) \(reply.lines.joined(separator: " "))")
        }
    }

    private func write(_ text: String) throws(SubmissionError) { try write(Array(text.utf8)) }

    private func write(_ bytes: [UInt8]) throws(SubmissionError) {
        var offset = 0
        while offset < bytes.count {
            let count = bytes[offset...].withUnsafeBytes {
                Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL))
            }
            if count < 0 {
                if errno == EINTR { continue }
                throw .daemon("sending to \(address): \(String(cString: strerror(errno)))")
            }
            offset += count
        }
    }

    private func read() throws(SubmissionError) -> Reply {
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            do throws(ReplyParseError) {
                if let reply = try parser.nextReply() { return reply }
            } catch {
                throw .daemon("\(address) sent a malformed reply: \(error)")
            }
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else {
                throw .daemon("\(address) closed the connection or did not answer in time")
            }
            parser.append(buffer[0..<count])
        }
    }
}
