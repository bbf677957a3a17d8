import Glibc
import Logging

/// `run_as_user`: a daemon started as root gives up root once everything that needs it is done. The TLS certificate
/// and key are loaded and the log file is open by then; the spool (which the daemon keeps writing) is handed to the
/// user and recovered as the user, the listeners are bound as root, then supplementary groups, group and user are
/// switched, in that order (setuid last: after it, setgid would no longer be allowed). When every uid leaves 0 the
/// kernel clears the permitted, effective and ambient capabilities. Started as root without `run_as_user`, it only
/// warns.
public enum PrivilegeDrop {
    struct Account: Equatable {
        let name: String
        let uid: uid_t
        let gid: gid_t
    }

    public enum Failure: Error, CustomStringConvertible {
        case unknownUser(String)
        case cannotSwitch(String)
        case call(String, errno: Int32)

        public var description: String {
            switch self {
            case .unknownUser(let name): "run_as_user: no such user \"\(name)\""
            case .cannotSwitch(let reason): "run_as_user: \(reason)"
            case .call(let call, let code): "run_as_user: \(call): \(String(cString: strerror(code)))"
            }
        }
    }

    /// The passwd entry of `name` (getpwnam_r: no static buffer shared with other threads).
    static func account(named name: String) -> Account? {
        var entry = passwd()
        var result: UnsafeMutablePointer<passwd>? = nil
        var buffer = [CChar](repeating: 0, count: 16 * 1024)
        let code = getpwnam_r(name, &entry, &buffer, buffer.count, &result)
        guard code == 0, result != nil else { return nil }
        return Account(name: name, uid: entry.pw_uid, gid: entry.pw_gid)
    }

    /// Runs the start-up phases with the right identity. Without `run_as_user` (or when not root) both simply run,
    /// and root only gets a warning. With it: the spool is handed to the user, `recover` runs with the user's
    /// effective ids (the spool checks that queue files are owned by whoever reads them, and files it creates must
    /// belong to the user), `bind` runs as root again, and then root is given up for good.
    static func run(
        user: String?, spoolDirectory: String, usersFile: String?, logger: Logger,
        asSpoolOwner recover: () throws(StartupError) -> Void, asRoot bind: () throws(StartupError) -> Void
    ) throws(StartupError) {
        guard let account = try startup({ () throws(Failure) in try target(user, logger: logger) }) else {
            try recover()
            try bind()
            return
        }
        try startup { () throws(Failure) in
            try chownTree(spoolDirectory, to: account)
            try setEffectiveIDs(uid: account.uid, gid: account.gid)
        }
        do throws(StartupError) {
            try recover()
        } catch {
            try startup { () throws(Failure) in try setEffectiveIDs(uid: 0, gid: 0) }
            throw error
        }
        try startup { () throws(Failure) in try setEffectiveIDs(uid: 0, gid: 0) }
        try bind()
        try startup { () throws(Failure) in try switchForGood(to: account, usersFile: usersFile, logger: logger) }
    }

    /// A privilege step as a start-up error.
    private static func startup<T>(_ step: () throws(Failure) -> T) throws(StartupError) -> T {
        do throws(Failure) {
            return try step()
        } catch {
            throw .privileges("\(error)")
        }
    }

    /// The account to switch to: nil when there is nothing to switch (no `run_as_user`, or already that user).
    static func target(_ user: String?, logger: Logger) throws(Failure) -> Account? {
        guard let user else {
            if geteuid() == 0 {
                logger.warning(
                    "running-as-root",
                    metadata: ["reason": "run_as_user is not set: SMTP, TLS and AUTH are parsed with every privilege"])
            }
            return nil
        }
        guard let account = account(named: user) else { throw .unknownUser(user) }
        if geteuid() == 0 { return account }
        // Started by a service manager as the user already (it may have granted CAP_NET_BIND_SERVICE).
        guard getuid() == account.uid && geteuid() == account.uid else {
            throw .cannotSwitch("started as uid \(geteuid()), not root: cannot become \(user)")
        }
        logger.info("privileges", metadata: ["user": "\(user)", "uid": "\(account.uid)", "note": "not root"])
        return nil
    }

    /// Effective ids only (root can switch back): group first, since a non-root effective uid may not change it.
    static func setEffectiveIDs(uid: uid_t, gid: gid_t) throws(Failure) {
        if uid == 0 {
            guard seteuid(0) == 0 else { throw .call("seteuid", errno: errno) }
            guard setegid(gid) == 0 else { throw .call("setegid", errno: errno) }
        } else {
            guard setegid(gid) == 0 else { throw .call("setegid", errno: errno) }
            guard seteuid(uid) == 0 else { throw .call("seteuid", errno: errno) }
        }
    }

    /// Supplementary groups, group, user; then checks that no id is left at 0 and there is no way back.
    static func switchForGood(to account: Account, usersFile: String?, logger: Logger) throws(Failure) {
        guard setgroups(0, nil) == 0 else { throw .call("setgroups", errno: errno) }
        guard setgid(account.gid) == 0 else { throw .call("setgid", errno: errno) }
        guard setuid(account.uid) == 0 else { throw .call("setuid", errno: errno) }
        guard getuid() == account.uid, geteuid() == account.uid, getgid() == account.gid, getegid() == account.gid,
            account.uid == 0 || setuid(0) != 0
        else { throw .cannotSwitch("the switch to \(account.name) did not take") }
        logger.info(
            "privileges-dropped",
            metadata: ["user": "\(account.name)", "uid": "\(account.uid)", "gid": "\(account.gid)"])
        if let usersFile, access(usersFile, R_OK) != 0 {
            logger.warning(
                "users-file-unreadable",
                metadata: [
                    "users_file": "\(usersFile)",
                    "reason": "\(account.name) cannot read it: \(String(cString: strerror(errno))); AUTH will fail",
                ])
        }
    }

    /// For the command-line tools that write the spool (`dualmta queue ...`): run as root against a spool that a
    /// `run_as_user` daemon owns, they take on the spool owner's identity first, so the files they write stay
    /// readable and replaceable by the daemon. Otherwise (not root, or a root-owned spool) nothing changes.
    public static func becomeSpoolOwner(_ spoolDirectory: String) throws(Failure) {
        var info = stat()
        guard geteuid() == 0, stat(spoolDirectory, &info) == 0, info.st_uid != 0 else { return }
        guard setgroups(0, nil) == 0 else { throw .call("setgroups", errno: errno) }
        guard setgid(info.st_gid) == 0 else { throw .call("setgid", errno: errno) }
        guard setuid(info.st_uid) == 0 else { throw .call("setuid", errno: errno) }
    }

    /// Makes `path` and everything below it owned by the account, without following symbolic links (a link in the
    /// spool must not hand an outside file to the user). Entries already owned are left alone.
    static func chownTree(_ path: String, to account: Account) throws(Failure) {
        var info = stat()
        guard lstat(path, &info) == 0 else { throw .call("lstat \(path)", errno: errno) }
        if info.st_uid != account.uid || info.st_gid != account.gid {
            guard lchown(path, account.uid, account.gid) == 0 else { throw .call("lchown \(path)", errno: errno) }
        }
        guard info.st_mode & S_IFMT == S_IFDIR else { return }
        guard let directory = opendir(path) else { throw .call("opendir \(path)", errno: errno) }
        defer { closedir(directory) }
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if name == "." || name == ".." { continue }
            try chownTree(path + "/" + name, to: account)
        }
    }
}
