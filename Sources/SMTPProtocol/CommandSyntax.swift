/// Argument syntax of MAIL and RCPT: `FROM:<path> [SP params]` (RFC 5321 §4.1.1.2, §4.1.1.3, RFC 1870, 6152, 6531).
enum CommandSyntax {
    struct PathArgument: Equatable {
        /// The text between `<` and `>`.
        var path: Substring
        var parameters: [Substring]
    }

    enum PathArgumentError: Error, Equatable {
        /// No `FROM:`/`TO:` or no `<`: 501 5.5.4.
        case syntax
        /// An unterminated path: 501 5.1.7 / 5.1.3.
        case badPath
    }

    /// Splits `FROM:<path> params`; one or more spaces after the colon are tolerated (common client habit).
    static func splitPathArgument(_ argument: Substring, keyword: String) -> Result<PathArgument, PathArgumentError> {
        guard argument.utf8.count >= keyword.utf8.count,
            asciiUppercased(argument.prefix(keyword.count)) == keyword
        else { return .failure(.syntax) }
        var rest = argument.dropFirst(keyword.count)
        while rest.first == " " { rest = rest.dropFirst() }
        guard rest.first == "<" else { return .failure(.syntax) }
        let scalars = rest.unicodeScalars
        var index = scalars.index(after: scalars.startIndex)
        let pathStart = index
        var inQuote = false
        var closing: Substring.Index? = nil
        while index < scalars.endIndex {
            let scalar = scalars[index]
            if inQuote && scalar == "\\" {
                index = scalars.index(after: index)
                guard index < scalars.endIndex else { break }
            } else if scalar == "\"" {
                inQuote.toggle()
            } else if scalar == ">" && !inQuote {
                closing = index
                break
            }
            index = scalars.index(after: index)
        }
        guard let closing else { return .failure(.badPath) }
        let path = rest[pathStart..<closing]
        let tail = rest[rest.index(after: closing)...]
        guard tail.isEmpty || tail.first == " " else { return .failure(.syntax) }
        return .success(PathArgument(path: path, parameters: tail.split(separator: " ")))
    }

    struct MailParameters: Equatable {
        var size: Int?
        var body: BodyType?
        var smtpUTF8 = false
        /// RFC 4954 §5 `AUTH=` (xtext or `<>`): accepted when AUTH is offered, then ignored (we trust no
        /// identity a client asserts for a message; the authenticated user is what the session knows).
        var auth: Substring?
        /// RFC 3461 `RET=` and `ENVID=` (decoded).
        var dsnReturn: DSNReturn?
        var envelopeID: String?
    }

    /// RCPT parameters: RFC 3461 `NOTIFY=` and `ORCPT=` (kept as `addr-type;address`, decoded).
    struct RcptParameters: Equatable {
        var notify: DSNNotify?
        var originalRecipient: String?
    }

    /// RFC 3461 limits: ENVID at most 100 characters, ORCPT at most 500 (as sent, in xtext).
    static let maxEnvelopeIDLength = 100
    static let maxOriginalRecipientLength = 500

    /// Parses RCPT parameters. Unknown keyword → 555 5.5.4; bad syntax or duplicate → 501 5.5.4.
    static func parseRcptParameters(_ parameters: [Substring]) -> Result<RcptParameters, Reply> {
        var result = RcptParameters()
        var seen = Set<String>()
        for parameter in parameters {
            let parts = parameter.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let keyword = asciiUppercased(parts[0])
            let value = parts.count > 1 ? parts[1] : nil
            guard seen.insert(keyword).inserted else {
                return .failure(
                    Reply(501, EnhancedStatus(5, 5, 4), "Error: duplicate \(safeKeyword(keyword)) parameter"))
            }
            switch keyword {
            case "NOTIFY":
                guard let value, let notify = DSNNotify(parameter: value) else {
                    return .failure(Reply(501, EnhancedStatus(5, 5, 4), "Bad NOTIFY parameter syntax"))
                }
                result.notify = notify
            case "ORCPT":
                guard let value, let original = originalRecipient(value) else {
                    return .failure(Reply(501, EnhancedStatus(5, 5, 4), "Bad ORCPT parameter syntax"))
                }
                result.originalRecipient = original
            default:
                return .failure(Reply(555, EnhancedStatus(5, 5, 4), "Unsupported option: \(safeKeyword(keyword))"))
            }
        }
        return .success(result)
    }

    /// `addr-type ";" xtext` → `addr-type;decoded`; the addr-type is an atom (RFC 3461 §4.2), kept as given.
    static func originalRecipient(_ value: Substring) -> String? {
        guard value.utf8.count <= maxOriginalRecipientLength, let semicolon = value.firstIndex(of: ";") else {
            return nil
        }
        let type = value[..<semicolon]
        let isAtomByte = { (byte: UInt8) in isASCIIAlphanumeric(byte) || byte == UInt8(ascii: "-") }
        guard !type.isEmpty, type.utf8.allSatisfy(isAtomByte),
            let address = XText.decode(value[value.index(after: semicolon)...]), !address.isEmpty
        else { return nil }
        return "\(type);\(address)"
    }

    /// Parses MAIL parameters. Unknown keyword or value → 555 5.5.4; bad syntax or duplicate → 501 5.5.4.
    static func parseMailParameters(_ parameters: [Substring], allowAuth: Bool = false) -> Result<MailParameters, Reply>
    {
        var result = MailParameters()
        var seen = Set<String>()
        for parameter in parameters {
            let parts = parameter.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let keyword = asciiUppercased(parts[0])
            let value = parts.count > 1 ? parts[1] : nil
            guard !seen.contains(keyword) else {
                return .failure(
                    Reply(501, EnhancedStatus(5, 5, 4), "Error: duplicate \(safeKeyword(keyword)) parameter"))
            }
            seen.insert(keyword)
            switch keyword {
            case "SIZE":
                // Digits only (Int("+5") would parse); over 18 digits may not fit in Int: refused, never trapped.
                guard let value, !value.isEmpty, value.utf8.count <= 18,
                    value.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let size = Int(value)
                else { return .failure(Reply(501, EnhancedStatus(5, 5, 4), "Bad message size syntax")) }
                result.size = size
            case "BODY":
                guard let value, let body = BodyType(rawValue: asciiUppercased(value)) else {
                    return .failure(Reply(555, EnhancedStatus(5, 5, 4), "Unsupported BODY parameter value"))
                }
                result.body = body
            case "SMTPUTF8":
                guard value == nil else {
                    return .failure(Reply(501, EnhancedStatus(5, 5, 4), "Bad SMTPUTF8 parameter syntax"))
                }
                result.smtpUTF8 = true
            case "RET":
                guard let value, let ret = DSNReturn(rawValue: asciiUppercased(value)) else {
                    return .failure(Reply(501, EnhancedStatus(5, 5, 4), "Bad RET parameter syntax"))
                }
                result.dsnReturn = ret
            case "ENVID":
                guard let value, !value.isEmpty, value.utf8.count <= maxEnvelopeIDLength,
                    let envelopeID = XText.decode(value)
                else { return .failure(Reply(501, EnhancedStatus(5, 5, 4), "Bad ENVID parameter syntax")) }
                result.envelopeID = envelopeID
            case "AUTH" where allowAuth:
                guard let value, !value.isEmpty else {
                    return .failure(Reply(501, EnhancedStatus(5, 5, 4), "Bad AUTH parameter syntax"))
                }
                result.auth = value
            default:
                return .failure(Reply(555, EnhancedStatus(5, 5, 4), "Unsupported option: \(safeKeyword(keyword))"))
            }
        }
        return .success(result)
    }

    /// Echo a keyword only when it is a plain esmtp-keyword; never reflect arbitrary client bytes.
    private static func safeKeyword(_ keyword: String) -> String {
        let plain =
            keyword.utf8.count <= 20
            && keyword.utf8.allSatisfy { isASCIIAlphanumeric($0) || $0 == UInt8(ascii: "-") }
        return plain ? keyword : "MAIL"
    }
}
