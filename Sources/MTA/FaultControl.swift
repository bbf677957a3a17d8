import Faults

/// `dualmta fault list | add RULE | delete ID | clear`: the fault rules of a running daemon, changed without a
/// restart through the control socket (only the spool's owner and root can reach it). The daemon answers each
/// command with one text reply: `ok` or `error: WHY` on the first line, then what the command shows.
public enum FaultControlCommand: Hashable, Sendable {
    case list
    case add(String)
    case delete(String)
    case clear

    /// Parses the words after `fault` on the control socket.
    init?(words: [Substring]) {
        switch (words.first, words.count) {
        case ("list", 1): self = .list
        case ("clear", 1): self = .clear
        case ("delete", 2): self = .delete(String(words[1]))
        case ("add", 2...): self = .add(words.dropFirst().joined(separator: " "))
        default: return nil
        }
    }

    public var text: String {
        switch self {
        case .list: return "fault list"
        case .add(let rule): return "fault add \(rule)"
        case .delete(let id): return "fault delete \(id)"
        case .clear: return "fault clear"
        }
    }

    /// Applies the command to the daemon's rules and returns the reply text. A rule that does not parse changes
    /// nothing.
    func execute(on book: FaultBook) -> String {
        switch self {
        case .list:
            return (["ok"] + book.entries.map(Self.line)).joined(separator: "\n") + "\n"
        case .add(let text):
            do throws(FaultRuleError) {
                return "ok\n\(try book.add(text))\n"
            } catch {
                return "error: \(error.message)\n"
            }
        case .delete(let id):
            return book.remove(id) ? "ok\n" : "error: no fault rule \(id)\n"
        case .clear:
            book.removeAll()
            return "ok\n"
        }
    }

    /// `F2 config matched=3 fired=2 inbound rcpt ...`
    static func line(_ entry: FaultEntry) -> String {
        "\(entry.id) \(entry.configured ? "config" : "added") matched=\(entry.matches) fired=\(entry.fired) "
            + entry.rule.text
    }
}
