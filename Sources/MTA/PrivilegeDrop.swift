import Glibc
import Logging

/// `run_as_user`: a daemon started as root gives up root once everything that needs it is done. The listeners are
/// bound, the TLS certificate and key are loaded and the log file is open by then; the spool (which the daemon
/// keeps writing) is handed to the user, then supplementary groups, group and user are switched, in that order
/// (setuid last: after it, setgid would no longer be allowed). When every uid leaves 0 the kernel clears the
/// permitted, effective and ambient capabilities. Started as root without `run_as_user`, it only warns.
enum PrivilegeDrop {
    struct Account: Equatable {
        let name: String
        let uid: uid_t
        let gid: gid_t
    }

    enum Failure: Error, CustomStringConvertible {
        case unknownUser(String)
        case cannotSwitch(String)
        case call(String, errno: Int32)

        var description: String {
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

    /// Drops to `user` (nil: warn when root). Called once, after binding and before serving.
    static func apply(user: String?, spoolDirectory: String, usersFile: String?, logger: Logger) throws(Failure) {
        guard let user else {
            if geteuid() == 0 {
                logger.warning(
                    "running-as-root",
                    metadata: ["reason": "run_as_user is not set: SMTP, TLS and AUTH are parsed with every privilege"])
            }
            return
        }
        guard let account = account(named: user) else { throw .unknownUser(user) }
        if geteuid() != 0 {
            // Started by a service manager as the user already (it may have granted CAP_NET_BIND_SERVICE).
            guard getuid() == account.uid && geteuid() == account.uid else {
                throw .cannotSwitch("started as uid \(geteuid()), not root: cannot become \(user)")
            }
            logger.info("privileges", metadata: ["user": "\(user)", "uid": "\(account.uid)", "note": "not root"])
            return
        }
        try chownTree(spoolDirectory, to: account)
        guard setgroups(0, nil) == 0 else { throw .call("setgroups", errno: errno) }
        guard setgid(account.gid) == 0 else { throw .call("setgid", errno: errno) }
        guard setuid(account.uid) == 0 else { throw .call("setuid", errno: errno) }
        // The switch must be complete and final: no id left at 0, and no way back.
        guard getuid() == account.uid, geteuid() == account.uid, getgid() == account.gid, getegid() == account.gid,
            account.uid == 0 || setuid(0) != 0
        else { throw .cannotSwitch("the switch to \(user) did not take") }
        logger.info(
            "privileges-dropped", metadata: ["user": "\(user)", "uid": "\(account.uid)", "gid": "\(account.gid)"])
        if let usersFile, access(usersFile, R_OK) != 0 {
            logger.warning(
                "users-file-unreadable",
                metadata: [
                    "users_file": "\(usersFile)",
                    "reason": "\(user) cannot read it: \(String(cString: strerror(errno))); AUTH will fail",
                ])
        }
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
