import CResolv
import Glibc
import NetAddress

/// `DNSResolver` over glibc's libresolv. Each question gets its own `res_state` (res_ninit … res_nclose), so one
/// instance may be used from many threads at once. Calls block for up to `timeout × attempts` seconds per server:
/// run them on a work queue, never on a connection's event loop.
///
/// - Search-list expansion is off (RES_DEFNAMES/RES_DNSRCH cleared): every name is absolute.
/// - A truncated UDP answer is retried over TCP by libresolv itself (RES_IGNTC stays clear), never used.
/// - Answers are read only with ns_initparse/ns_parserr/dn_expand/ns_get16; CNAME chains are followed (the
///   server's chain first, then new questions for the target) up to `maxCNAMEDepth` links.
/// - Name servers from `servers` replace the system's; IPv6 servers go through glibc's `_u._ext.nsaddrs`
///   (nsaddr_list[i].sin_family = 0 marks the slot as IPv6; glibc 2.36 res_send then reads nsaddrs[i] and
///   res_nclose frees it, so the slot must hold malloc'd memory). At most MAXNS (3) servers are used.
public final class SystemResolver: DNSResolver {
    public let servers: [NameServer]?
    public let timeout: Int
    public let attempts: Int
    public static let maxCNAMEDepth = 8
    /// Largest DNS message over TCP.
    static let bufferSize = 65_535

    /// `servers` nil = the system configuration (/etc/resolv.conf). `timeout` in seconds per try, `attempts` tries.
    public init(servers: [NameServer]?, timeout: Int = 5, attempts: Int = 2) {
        self.servers = servers.map { Array($0.prefix(Int(MAXNS))) }
        self.timeout = max(1, timeout)
        self.attempts = max(1, attempts)
    }

    public func mx(_ name: String) -> DNSAnswer<MXRecord> {
        resolve(name, type: ns_t_mx) { message, rr in
            guard rr.rdlength >= 3, let rdata = rr.rdata else { return nil }
            let preference = UInt16(truncatingIfNeeded: ns_get16(rdata))
            guard let exchange = expandName(message, rdata + 2) else { return nil }
            return MXRecord(preference: preference, exchange: exchange, ttl: rr.ttl)
        }
    }

    public func addresses(_ name: String, family: AddressFamily) -> DNSAnswer<AddressRecord> {
        let type = family == .ipv4 ? ns_t_a : ns_t_aaaa
        let size = family == .ipv4 ? 4 : 16
        return resolve(name, type: type) { _, rr in
            guard Int(rr.rdlength) == size, let rdata = rr.rdata else { return nil }
            let bytes = Array(UnsafeBufferPointer(start: rdata, count: size))
            let address: IPAddress = size == 4 ? .v4(IPv4Address(bytes: bytes)) : .v6(IPv6Address(bytes: bytes))
            return AddressRecord(address: address, ttl: rr.ttl)
        }
    }

    // MARK: - Question, CNAME chain

    /// Asks `type` for `name`, following CNAMEs. `parse` turns one answer RR of the asked type into a record
    /// (nil = malformed RR, skipped).
    private func resolve<Record: Sendable>(
        _ name: String, type: ns_type, parse: (ns_msg, ns_rr) -> Record?
    ) -> DNSAnswer<Record> {
        let original = DNSName.normalized(name)
        guard DNSName.isValidQueryName(original) else { return .noSuchDomain }
        var current = original
        var links = 0
        while true {
            let outcome = query(current, type: type) { message -> ChainEnd<Record> in
                var cnames: [String: String] = [:]
                var found: [String: [Record]] = [:]
                let count = Int(message._counts.1)  // ns_msg_count(message, ns_s_an)
                var rr = ns_rr()
                for index in 0..<count {
                    guard ns_parserr(&message, ns_s_an, Int32(index), &rr) == 0 else { break }
                    let owner = DNSName.normalized(ownerName(rr))
                    if rr.type == UInt16(ns_t_cname.rawValue) {
                        if let rdata = rr.rdata, let target = expandName(message, rdata) {
                            cnames[owner] = DNSName.normalized(target)
                        }
                    } else if rr.type == UInt16(type.rawValue), let record = parse(message, rr) {
                        found[owner, default: []].append(record)
                    }
                }
                // Walk the chain the server sent us, as far as it goes.
                var name = current
                var hops = 0
                while found[name] == nil, let next = cnames[name], hops <= SystemResolver.maxCNAMEDepth {
                    name = next
                    hops += 1
                }
                return ChainEnd(records: found[name] ?? [], target: name)
            }
            switch outcome {
            case .failure(let failure):
                switch failure {
                case .noSuchDomain: return .noSuchDomain
                case .noData: return .noData
                case .temporary(let why): return .temporaryFailure(why)
                }
            case .parsed(let end):
                let (records, target) = (end.records, end.target)
                if !records.isEmpty {
                    return .records(records, canonicalName: target == original ? nil : target)
                }
                if target == current { return .noData }
                // The chain ends outside this answer: ask again for its last name.
                links += 1
                guard links <= SystemResolver.maxCNAMEDepth, target != original else {
                    return .temporaryFailure("CNAME chain for \(original) too long or looping")
                }
                current = target
            }
        }
    }

    /// Where a CNAME chain inside one answer ends, and the records found there.
    private struct ChainEnd<Record> {
        var records: [Record]
        var target: String
    }

    private enum Failure {
        case noSuchDomain
        case noData
        case temporary(String)
    }

    private enum Outcome<Value> {
        case parsed(Value)
        case failure(Failure)
    }

    /// One res_nquery with a fresh state; `body` reads the answer while its buffer is alive.
    private func query<Value>(
        _ name: String, type: ns_type, body: (inout ns_msg) -> Value
    ) -> Outcome<Value> {
        let state = UnsafeMutablePointer<__res_state>.allocate(capacity: 1)
        state.initialize(to: __res_state())
        defer { state.deallocate() }
        // resolv.h renames res_ninit/res_nclose to these symbols with macros Swift does not import.
        guard __res_ninit(state) == 0 else { return .failure(.temporary("resolver initialisation failed")) }
        defer { __res_nclose(state) }
        configure(state)

        var buffer = [UInt8](repeating: 0, count: SystemResolver.bufferSize)
        let length = buffer.withUnsafeMutableBufferPointer { answer in
            res_nquery(
                state, name, Int32(ns_c_in.rawValue), Int32(type.rawValue), answer.baseAddress, Int32(answer.count))
        }
        guard length >= 0 else {
            switch state.pointee.res_h_errno {
            case HOST_NOT_FOUND: return .failure(.noSuchDomain)
            case NO_DATA: return .failure(.noData)
            case TRY_AGAIN: return .failure(.temporary("SERVFAIL or timeout"))
            case NO_RECOVERY: return .failure(.temporary("server refused or failed the query"))
            default: return .failure(.temporary("resolver error \(state.pointee.res_h_errno)"))
            }
        }
        let used = min(Int(length), buffer.count)
        return buffer.withUnsafeBufferPointer { answer -> Outcome<Value> in
            guard let base = answer.baseAddress else { return .failure(.temporary("empty answer")) }
            var message = ns_msg()
            guard ns_initparse(base, Int32(used), &message) == 0 else {
                return .failure(.temporary("malformed answer for \(name)"))
            }
            return .parsed(body(&message))
        }
    }

    /// Applies our options and name servers to a state fresh from res_ninit.
    private func configure(_ state: UnsafeMutablePointer<__res_state>) {
        state.pointee.retrans = Int32(clamping: timeout)
        state.pointee.retry = Int32(clamping: attempts)
        state.pointee.options &= ~UInt(RES_DEFNAMES | RES_DNSRCH | RES_IGNTC)
        guard let servers, !servers.isEmpty else { return }
        withUnsafeMutablePointer(to: &state.pointee.nsaddr_list) { tuple in
            tuple.withMemoryRebound(to: sockaddr_in.self, capacity: Int(MAXNS)) { list in
                withUnsafeMutablePointer(to: &state.pointee._u._ext.nsaddrs) { extTuple in
                    extTuple.withMemoryRebound(to: UnsafeMutablePointer<sockaddr_in6>?.self, capacity: Int(MAXNS)) {
                        ext in
                        for (slot, server) in servers.enumerated() {
                            switch server.address {
                            case .v4(let address):
                                list[slot] = sockaddr_in()
                                list[slot].sin_family = sa_family_t(AF_INET)
                                list[slot].sin_port = server.port.bigEndian
                                list[slot].sin_addr.s_addr = address.value.bigEndian
                            case .v6(let address):
                                // Slot marked IPv6; glibc owns (and frees) the malloc'd sockaddr_in6.
                                list[slot] = sockaddr_in()
                                if ext[slot] == nil {
                                    ext[slot] = malloc(MemoryLayout<sockaddr_in6>.size)?
                                        .assumingMemoryBound(to: sockaddr_in6.self)
                                }
                                guard let target = ext[slot] else { continue }
                                var socketAddress = sockaddr_in6()
                                socketAddress.sin6_family = sa_family_t(AF_INET6)
                                socketAddress.sin6_port = server.port.bigEndian
                                withUnsafeMutableBytes(of: &socketAddress.sin6_addr) { raw in
                                    raw.copyBytes(from: address.bytes)
                                }
                                target.pointee = socketAddress
                            }
                        }
                    }
                }
            }
        }
        state.pointee.nscount = Int32(servers.count)
        // res_send rebuilds its private copy of the list when this is 0.
        state.pointee._u._ext.nscount = 0
    }
}

/// dn_expand of a (possibly compressed) name inside `message`.
private func expandName(_ message: ns_msg, _ position: UnsafePointer<UInt8>) -> String? {
    var name = [CChar](repeating: 0, count: Int(NS_MAXDNAME))
    let used = dn_expand(message._msg, message._eom, position, &name, Int32(name.count))
    guard used >= 0 else { return nil }
    return String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// The owner name ns_parserr already expanded ("" = the root).
private func ownerName(_ rr: ns_rr) -> String {
    withUnsafeBytes(of: rr.name) { raw in
        String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
    }
}

extension DNSName {
    /// 1–253 characters, labels 1–63, no empty label: anything else cannot exist, so it is NXDOMAIN without asking.
    static func isValidQueryName(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        guard !bytes.isEmpty, bytes.count <= 253 else { return false }
        let labels = name.split(separator: ".", omittingEmptySubsequences: false)
        return labels.allSatisfy { !$0.isEmpty && $0.utf8.count <= 63 }
    }
}
