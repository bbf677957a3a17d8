import NetAddress

extension FaultRule {
    private static let matchKeys: Set<String> = [
        "family", "client", "listener", "mx", "addr", "port", "from", "rcpt", "domain",
    ]
    private static let inboundOnlyKeys: Set<String> = ["client", "listener"]
    private static let outboundOnlyKeys: Set<String> = ["mx", "addr", "port"]
    private static let limitKeys: Set<String> = ["first", "after", "every", "probability", "seed", "until"]

    /// Parses `SIDE STAGE [MATCH ...] ACTION [ARGS] [LIMIT ...]`; the error names the first word that is wrong.
    public init(parsing text: String) throws(FaultRuleError) {
        var words = text.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        guard !words.isEmpty else { throw FaultRuleError("empty fault rule") }
        let sideWord = words.removeFirst()
        guard let side = FaultSide(rawValue: sideWord.lowercased()) else {
            throw FaultRuleError("unknown side '\(sideWord)' (expected inbound or outbound)")
        }
        guard !words.isEmpty else { throw FaultRuleError("missing stage after '\(sideWord)'") }
        let stageWord = words.removeFirst()
        let stages = side == .inbound ? FaultStage.inbound : FaultStage.outbound
        guard let stage = FaultStage(rawValue: stageWord.lowercased()), stages.contains(stage) else {
            throw FaultRuleError(
                "unknown \(side.rawValue) stage '\(stageWord)' (expected \(stages.map(\.rawValue).joined(separator: ", ")))"
            )
        }
        // Limits are the trailing key=value words with a limit key (so reply text may hold other words).
        var limitWords: [String] = []
        while let last = words.last, let key = Self.key(of: last), Self.limitKeys.contains(key) {
            limitWords.insert(words.removeLast(), at: 0)
        }
        var match = FaultMatch()
        var seen = Set<String>()
        while let word = words.first, let key = Self.key(of: word) {
            guard Self.matchKeys.contains(key) else {
                if Self.limitKeys.contains(key) {
                    throw FaultRuleError("limit '\(word)' must come after the action")
                }
                throw FaultRuleError(
                    "unknown match '\(key)=' (expected \(Self.matchKeys.sorted().joined(separator: ", ")))")
            }
            guard seen.insert(key).inserted else { throw FaultRuleError("match '\(key)=' given twice") }
            words.removeFirst()
            try Self.apply(
                match: key, value: String(word.dropFirst(key.count + 1)), side: side, stage: stage, to: &match)
        }
        guard !words.isEmpty else { throw FaultRuleError("missing action") }
        let actionWord = words.removeFirst()
        let action = try Self.action(actionWord.lowercased(), arguments: words)
        if let problem = action.allowed(side: side, stage: stage) { throw FaultRuleError(problem) }
        let limit = try Self.limits(limitWords)
        let normalized = text.split(whereSeparator: { $0 == " " || $0 == "\t" }).joined(separator: " ")
        self.init(side: side, stage: stage, match: match, action: action, limit: limit, text: normalized)
    }

    private static func key(of word: String) -> String? {
        guard let equals = word.firstIndex(of: "="), equals != word.startIndex else { return nil }
        return word[..<equals].lowercased()
    }

    private static func apply(
        match key: String, value: String, side: FaultSide, stage: FaultStage, to match: inout FaultMatch
    ) throws(FaultRuleError) {
        guard !value.isEmpty else { throw FaultRuleError("'\(key)=' needs a value") }
        if side == .outbound && inboundOnlyKeys.contains(key) {
            throw FaultRuleError("'\(key)=' is an inbound match (outbound rules match mx=, addr=, port=)")
        }
        if side == .inbound && outboundOnlyKeys.contains(key) {
            throw FaultRuleError("'\(key)=' is an outbound match (inbound rules match client=, listener=)")
        }
        if side == .inbound && key == "from" && !stage.knowsSender {
            throw FaultRuleError("'from=' cannot match at inbound \(stage.rawValue): the sender is known from mail on")
        }
        if side == .inbound && (key == "rcpt" || key == "domain") && !stage.knowsRecipients {
            throw FaultRuleError(
                "'\(key)=' cannot match at inbound \(stage.rawValue): recipients are known from rcpt on")
        }
        switch key {
        case "family":
            guard let family = AddressFamily(rawValue: value.lowercased()) else {
                throw FaultRuleError("bad family '\(value)' (expected ipv4 or ipv6)")
            }
            match.family = family
        case "client", "addr":
            guard let cidr = CIDR(value) else {
                throw FaultRuleError("bad \(key) '\(value)' (expected an address or CIDR)")
            }
            if key == "client" { match.client = cidr } else { match.addr = cidr }
        case "listener":
            match.listener = try listener(value)
        case "port":
            guard let port = Int(value), (1...65535).contains(port) else {
                throw FaultRuleError("bad port '\(value)' (expected 1-65535)")
            }
            match.port = port
        case "mx": match.mx = normalizedName(value)
        case "from": match.from = value.lowercased()
        case "rcpt": match.rcpt = value.lowercased()
        default: match.domain = normalizedName(value)
        }
    }

    private static func normalizedName(_ value: String) -> String {
        var name = value.lowercased()
        if name.hasSuffix(".") && name.count > 1 { name.removeLast() }
        return name
    }

    private static func listener(_ value: String) throws(FaultRuleError) -> FaultMatch.ListenerPattern {
        let bad = FaultRuleError("bad listener '\(value)' (expected ADDR:PORT, [IPv6]:PORT or *:PORT)")
        guard let colon = value.lastIndex(of: ":"), let port = Int(value[value.index(after: colon)...]),
            (1...65535).contains(port)
        else { throw bad }
        var host = String(value[..<colon])
        if host == "*" { return FaultMatch.ListenerPattern(address: nil, port: port) }
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard let address = IPAddress(host) else { throw bad }
        return FaultMatch.ListenerPattern(address: address, port: port)
    }

    private static func action(_ name: String, arguments: [String]) throws(FaultRuleError) -> FaultAction {
        func noArguments(_ action: FaultAction) throws(FaultRuleError) -> FaultAction {
            guard arguments.isEmpty else {
                throw FaultRuleError("'\(name)' takes no arguments (got '\(arguments.joined(separator: " "))')")
            }
            return action
        }
        func oneDuration() throws(FaultRuleError) -> Int64 {
            guard arguments.count == 1 else { throw FaultRuleError("'\(name)' needs one DURATION (like 30s or 2m)") }
            return try duration(arguments[0], for: name)
        }
        switch name {
        case "reply": return .reply(try reply(arguments))
        case "drop": return try noArguments(.drop)
        case "reset": return try noArguments(.reset)
        case "discard": return try noArguments(.discard)
        case "refuse": return try noArguments(.refuse)
        case "unreachable": return try noArguments(.unreachable)
        case "blackhole": return try noArguments(.blackhole)
        case "tls-fail": return try noArguments(.tlsFail)
        case "delay": return .delay(milliseconds: try oneDuration())
        case "greylist": return .greylist(milliseconds: try oneDuration())
        default:
            throw FaultRuleError(
                "unknown action '\(name)' (expected reply, drop, reset, delay, greylist, discard, refuse, "
                    + "unreachable, blackhole or tls-fail)")
        }
    }

    private static func reply(_ arguments: [String]) throws(FaultRuleError) -> FaultReply {
        guard let codeWord = arguments.first else { throw FaultRuleError("'reply' needs a CODE (like 451)") }
        guard codeWord.count == 3, let code = Int(codeWord), (200...599).contains(code) else {
            throw FaultRuleError("bad reply code '\(codeWord)' (expected 200-599)")
        }
        var rest = arguments.dropFirst()
        var status: (Int, Int, Int)?
        if let word = rest.first, word.first?.isNumber == true, word.contains(".") {
            let parts = word.split(separator: ".", omittingEmptySubsequences: false).map { Int($0) }
            guard parts.count == 3, let a = parts[0], let b = parts[1], let c = parts[2], (2...5).contains(a),
                a != 3, (0...999).contains(b), (0...999).contains(c)
            else { throw FaultRuleError("bad enhanced status '\(word)' (expected X.Y.Z with X 2, 4 or 5)") }
            guard a == code / 100 else {
                throw FaultRuleError("enhanced status '\(word)' does not agree with reply code \(code)")
            }
            status = (a, b, c)
            rest = rest.dropFirst()
        }
        let text = rest.joined(separator: " ")
        guard text.allSatisfy({ $0.isASCII && !$0.isNewline }) else {
            throw FaultRuleError("reply text must be printable ASCII on one line")
        }
        return FaultReply(code: code, status: status, text: text.isEmpty ? "Fault injected" : text)
    }

    private static func limits(_ words: [String]) throws(FaultRuleError) -> FaultLimit {
        var limit = FaultLimit()
        var seen = Set<String>()
        for word in words {
            guard let key = key(of: word) else { continue }
            let value = String(word.dropFirst(key.count + 1))
            guard seen.insert(key).inserted else { throw FaultRuleError("limit '\(key)=' given twice") }
            func count() throws(FaultRuleError) -> Int {
                guard let number = Int(value), number >= 1 else {
                    throw FaultRuleError("bad \(key) '\(value)' (expected a whole number of at least 1)")
                }
                return number
            }
            switch key {
            case "first": limit.first = try count()
            case "after": limit.after = try count()
            case "every": limit.every = try count()
            case "probability":
                guard let p = Double(value), p >= 0, p <= 1, value.first?.isNumber == true else {
                    throw FaultRuleError("bad probability '\(value)' (expected a number from 0 to 1)")
                }
                limit.probability = p
            case "seed":
                guard let seed = UInt64(value) else {
                    throw FaultRuleError("bad seed '\(value)' (expected a whole number)")
                }
                limit.seed = seed
            default: limit.untilMilliseconds = try duration(value, for: "until")
            }
        }
        if limit.seed != nil && limit.probability == nil {
            throw FaultRuleError("'seed=' only makes sense with 'probability='")
        }
        return limit
    }

    /// `500ms`, `30s`, `2m`, `1h`, `1d`; a bare number is seconds.
    static func duration(_ text: String, for what: String) throws(FaultRuleError) -> Int64 {
        let units: [(String, Int64)] = [("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000)]
        let lower = text.lowercased()
        for (suffix, scale) in units where lower.hasSuffix(suffix) {
            let number = lower.dropLast(suffix.count)
            // "ms" is tried before "s" and "m"; "5m" must not be read as "5" + "m" of "ms".
            if let value = Int64(number), value >= 0, number.allSatisfy(\.isNumber) { return value * scale }
        }
        if let value = Int64(lower), value >= 0 { return value * 1000 }
        throw FaultRuleError("bad \(what) duration '\(text)' (expected a number with ms, s, m, h or d)")
    }
}

extension FaultRule: CustomStringConvertible {
    public var description: String { text }
}
