#if DEBUG
    import Glibc
    import Synchronization
#endif

/// Named crash points for the crash-point harness (Tests/Integration/test_crash_points.py;
/// the windows in which a crash may duplicate a message are listed in `docs/rules.md`).
///
/// In a debug build, `DUALMTA_CRASH_AT=<point>[:<n>]` makes the process kill itself with SIGKILL at the n-th pass
/// (default 1) of the named point: no cleanup, no flush, exactly like a crash or `kill -9` at that instant. The
/// variable is read once, on the first pass of any point. A release build compiles `hit` to nothing, so the one-line
/// calls cost nothing and no environment variable can crash a production server.
///
/// Points (where the call sits; what the disk holds at that instant):
///
///     commit.envelope-written      Spool.commit   incoming/<id>.msg and incoming/<id>.env written, not yet synced
///     commit.files-synced          Spool.commit   both synced in one round (fdatasync), nothing renamed yet
///     commit.message-renamed       Spool.commit   queue/<id>.msg, incoming/<id>.env (not committed)
///     commit.envelope-renamed      Spool.commit   queue/<id>.{msg,env}: committed, queue/ not yet fsynced
///     commit.directory-fsynced     Spool.commit   committed and durable, the server has not answered yet
///     update.temp-fsynced          Spool.update   queue/<id>.<random>.tmp fsynced beside the old envelope
///     update.renamed               Spool.update   new envelope in place, queue/ not yet fsynced
///     server.committed             SessionDriver  commit returned; the 250 is not written yet
///     server.replied               SessionDriver  the 250 was handed to the socket
///     maildir.tmp-written          MaildirWriter  the copy is written and fsynced in tmp/, not yet renamed into new/
///     local.delivered              LocalDelivery  Maildir file in new/, the envelope not yet updated
///     outbound.remote-accepted     OutboundDelivery  the remote said 250 for a recipient; no update yet
///     bounce.committed             QueueRunner    a report is queued, the original is not yet marked
public enum CrashPoint {
    #if DEBUG
        /// The environment variable that arms a point.
        public static let variable = "DUALMTA_CRASH_AT"

        /// The armed point and pass number, parsed once (a Swift global/static initialiser runs exactly once).
        private static let armed: (name: String, pass: Int)? = {
            guard let raw = getenv(variable) else { return nil }
            let text = String(cString: raw)
            guard !text.isEmpty else { return nil }
            let parts = text.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
            let pass = parts.count == 2 ? Int(parts[1]) ?? 1 : 1
            return (String(parts[0]), max(pass, 1))
        }()

        private static let passes = Atomic<Int>(0)

        /// Counts a pass of `name`; SIGKILLs the process at the armed pass. A line naming the point goes to stderr
        /// first (unbuffered write(2)), so the harness can tell its own crash from an unexpected death.
        public static func hit(_ name: StaticString) {
            guard let armed, armed.name == name.description else { return }
            let pass = passes.add(1, ordering: .sequentiallyConsistent).newValue
            guard pass == armed.pass else { return }
            let line = Array("crash-point \(armed.name):\(pass) SIGKILL\n".utf8)
            _ = line.withUnsafeBufferPointer { write(2, $0.baseAddress, $0.count) }
            raise(SIGKILL)
        }
    #else
        @inline(__always)
        public static func hit(_ name: StaticString) {}
    #endif
}
