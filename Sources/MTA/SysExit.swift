/// The exit status of every dualmta command, from sysexits(3) — the one table (the CLI, `sendmail`, `mailq` and the
/// queue commands all use it): 0 ok, 64 usage, 65 bad data, 69 unavailable (or no such message), 75 temporary
/// failure (try again), 78 configuration error.
public enum SysExit {
    public static let ok: Int32 = 0
    public static let usage: Int32 = 64
    public static let dataError: Int32 = 65
    public static let unavailable: Int32 = 69
    public static let temporaryFailure: Int32 = 75
    public static let config: Int32 = 78
}
