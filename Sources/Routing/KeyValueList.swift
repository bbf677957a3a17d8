/// The `key=value, key=value` lists of the config file (`routes`, `smtp_tls_policy`). Entries are separated by
/// commas or white space, and white space around `=` belongs to the entry, so `d = [x]:p` is the one entry `d=[x]:p`.
public enum KeyValueList {
    /// The entries in order, each with the blanks around its `=` removed.
    public static func entries(_ text: String) -> [String] {
        var entries: [String] = []
        for part in text.split(separator: ",") {
            // Within one comma-separated part, a word starting with "=" or following a word ending in "=" joins it.
            var joined: [String] = []
            // "\r\n" is one Character in Swift: list it, or a CRLF between two words would glue them together.
            for word in part.split(whereSeparator: { [" ", "\t", "\n", "\r\n", "\r"].contains($0) }) {
                if let last = joined.last, word.hasPrefix("=") || last.hasSuffix("=") {
                    joined[joined.count - 1] = last + word
                } else {
                    joined.append(String(word))
                }
            }
            entries += joined
        }
        return entries
    }
}
