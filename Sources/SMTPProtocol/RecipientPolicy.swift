import NetAddress

/// Relay control and local-recipient checks, as pure functions over configuration values.
///
/// Recipients in `localDomains` (plus the hostname) or at one of our own address literals are local;
/// `relayDomains` are accepted for forwarding; any other domain only when the client may relay, else
/// `554 5.7.1 <addr>: Relay access denied`. Postmaster (`<Postmaster>`, `postmaster@` a local domain or own literal)
/// is always accepted. Domains match exactly: no suffix match, no `%` or `!` routing.
public struct RecipientPolicy: Sendable {
    public var hostname: String
    public var localDomains: Set<String>
    public var ownAddresses: Set<IPAddress>
    public var localRecipients: Set<String>?
    public var relayDomains: Set<String>
    public var relayRecipients: Set<String>?

    /// - Parameters:
    ///   - hostname: our name; always a local domain, and the Maildir domain for `<Postmaster>` and literals.
    ///   - localDomains: domains delivered to local Maildirs (case-insensitive).
    ///   - ownAddresses: our addresses; `user@[addr]` for these is local.
    ///   - localRecipients: when non-nil, the only local users: `user` (any local domain) or `user@domain`.
    ///   - relayDomains: domains accepted from anyone for forwarding.
    ///   - relayRecipients: when non-nil, the only accepted `user` / `user@domain` in `relayDomains`.
    public init(
        hostname: String, localDomains: Set<String>, ownAddresses: Set<IPAddress>, localRecipients: Set<String>?,
        relayDomains: Set<String>, relayRecipients: Set<String>?
    ) {
        self.hostname = normalizeDomain(hostname)
        self.localDomains = Set(localDomains.map(normalizeDomain)).union([self.hostname])
        self.ownAddresses = Set(ownAddresses.map(\.unmapped))
        self.localRecipients = localRecipients.map { Set($0.map(foldLocalPart)) }
        self.relayDomains = Set(relayDomains.map(normalizeDomain))
        self.relayRecipients = relayRecipients.map { Set($0.map(foldLocalPart)) }
    }

    /// Decides one RCPT.
    /// - Returns: the disposition, or the rejection reply (550 5.1.1 unknown/unsafe user, 554 5.7.1 relay denied).
    public func evaluate(_ path: ForwardPath, clientMayRelay: Bool) -> Result<RecipientDisposition, Reply> {
        guard case .mailbox(let mailbox) = path else {
            return .success(.local(domain: hostname, user: "postmaster"))
        }
        let localDomain: String?
        var domainName: String? = nil
        switch mailbox.domain.kind {
        case .name(let name):
            domainName = name
            localDomain = localDomains.contains(name) ? name : nil
        case .literal(let address):
            localDomain = ownAddresses.contains(address.unmapped) ? hostname : nil
        }
        let user = foldLocalPart(mailbox.decodedLocalPart)
        if let localDomain {
            if user == "postmaster" { return .success(.local(domain: localDomain, user: user)) }
            guard Self.isSafeMaildirName(user) else {
                return .failure(unknownUser(mailbox, table: "local"))
            }
            if let localRecipients, !localRecipients.contains(user),
                !localRecipients.contains("\(user)@\(domainName ?? localDomain)")
            {
                return .failure(unknownUser(mailbox, table: "local"))
            }
            return .success(.local(domain: localDomain, user: user))
        }
        if let domainName, relayDomains.contains(domainName) {
            if let relayRecipients, !relayRecipients.contains(user), !relayRecipients.contains("\(user)@\(domainName)")
            {
                return .failure(unknownUser(mailbox, table: "relay"))
            }
            return .success(.relay)
        }
        if clientMayRelay { return .success(.relay) }
        return .failure(Reply(554, EnhancedStatus(5, 7, 1), "<\(mailbox)>: Relay access denied"))
    }

    /// The whole relay decision for one RCPT, from everything it depends on: the recipient, the client's address
    /// and whether the client authenticated. The server makes it in two steps (the address at connect time, AUTH
    /// later in the session) through `RelayRights`; this puts them together so it can be table-tested.
    public func decide(_ path: ForwardPath, client: IPAddress, relayNetworks: [CIDR], authenticated: Bool)
        -> Result<RecipientDisposition, Reply>
    {
        let rights = RelayRights(client: client, relayNetworks: relayNetworks, authenticated: authenticated)
        return evaluate(path, clientMayRelay: rights.mayRelay)
    }

    /// A local part becomes a directory name: refuse anything that could leave `mailboxes/<domain>/` or that looks
    /// like routing (`%`, `!`, `@`), and control characters. Public so the Maildir writer can check again.
    public static func isSafeMaildirName(_ user: String) -> Bool {
        guard !user.isEmpty, user != ".", user != "..", !user.hasPrefix(".") else { return false }
        // C1 controls (U+0080...U+009F) and the line and paragraph separators are as unprintable as ASCII controls.
        for scalar in user.unicodeScalars
        where (0x80...0x9F).contains(scalar.value) || scalar.value == 0x2028
            || scalar.value == 0x2029
        {
            return false
        }
        for byte in user.utf8 {
            switch byte {
            case 0..<0x20, 0x7F, UInt8(ascii: "/"), UInt8(ascii: "@"), UInt8(ascii: "%"), UInt8(ascii: "!"):
                return false
            default:
                continue
            }
        }
        return true
    }

    private func unknownUser(_ mailbox: Mailbox, table: String) -> Reply {
        Reply(
            550, EnhancedStatus(5, 1, 1),
            "<\(mailbox)>: Recipient address rejected: User unknown in \(table) recipient table")
    }
}

/// Why a client may relay to any domain: its address is inside `relay_networks`, or it authenticated (a submission
/// client proves who it is instead of where it is). Neither: only local and relay domains.
public struct RelayRights: Sendable, Equatable {
    public var inRelayNetworks: Bool
    public var authenticated: Bool

    public init(inRelayNetworks: Bool, authenticated: Bool) {
        self.inRelayNetworks = inRelayNetworks
        self.authenticated = authenticated
    }

    /// An IPv4 client seen on an IPv6 socket (`::ffff:a.b.c.d`) is matched as IPv4 (CIDR.contains folds it).
    public init(client: IPAddress, relayNetworks: [CIDR], authenticated: Bool = false) {
        self.init(
            inRelayNetworks: relayNetworks.contains { $0.contains(client) }, authenticated: authenticated)
    }

    public var mayRelay: Bool { inRelayNetworks || authenticated }
}

/// Local parts compare case-insensitively in ASCII only: Unicode case mapping would send KELVIN SIGN (U+212A) "Kelvin"
/// to the Maildir of "kelvin", so two different addresses would share a mailbox.
func foldLocalPart(_ text: String) -> String {
    asciiLowercased(Substring(text))
}

private func normalizeDomain(_ name: String) -> String {
    var lowered = name.lowercased()
    while lowered.hasSuffix(".") { lowered.removeLast() }
    return lowered
}
