import Glibc

/// Final delivery into Maildir (<root>/<domain>/<user>/{tmp,new,cur}), the qmail way: write into tmp/ under a unique
/// name, fsync, rename into new/, fsync new/. A reader never sees a partial file; a crash leaves at most a file in
/// tmp/, which `removeStaleTemporaryFiles` clears at start-up (Maildir readers clean up after 36 hours). Blocking:
/// run it on a work queue.
///
/// Directories are walked with openat(O_NOFOLLOW) from the root, so a symlink planted as a domain or user directory
/// is not followed; new directories are 0700 and their parent is fsynced so the path survives a crash.
public struct MaildirWriter: Sendable {
    public let root: String
    private let host: String

    public init(root: String) {
        self.root = root
        host = Self.hostPart()
    }

    static func hostPart() -> String {
        var name = [CChar](repeating: 0, count: 256)
        let raw =
            gethostname(&name, name.count - 1) == 0
            ? String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) : "localhost"
        // Maildir spec: "/" and ":" in the host part are written as \057 and \072.
        return raw.replacingOccurrences("/", with: "\\057").replacingOccurrences(":", with: "\\072")
    }

    /// Delivers one copy: `prefix` (e.g. "Return-Path: <a@b>\n" and "Delivered-To: ...") then the bytes of
    /// `messageFile`, both with CRLF turned into LF (the Maildir convention). Returns the path of the file in new/.
    /// `domain` and `user` must be non-empty, not "." or "..", without "/" or NUL (defence in depth: the SMTP layer
    /// already restricts local parts).
    /// - Parameter fixedName: a name that is the same every time this copy is delivered (queue id + recipient).
    ///   With it, delivery is idempotent: when new/ or cur/ already holds the file (a crash came after the rename
    ///   and before the queue noted it), nothing is written again and the existing path is returned.
    public func deliver(
        prefix: [UInt8], messageFile: String, domain: String, user: String, fixedName: String? = nil
    ) throws(SpoolError) -> String {
        try Self.checkName(domain)
        try Self.checkName(user)

        var prefixPath = ""
        var rootFD: Int32 = -1
        for component in root.split(separator: "/", omittingEmptySubsequences: true) {
            prefixPath += "/" + component
            try FileSystem.makeDirectory(root.hasPrefix("/") ? prefixPath : String(prefixPath.dropFirst()))
        }
        rootFD = try FileSystem.open(root, FileSystem.directoryFlags)
        defer { close(rootFD) }
        let domainFD = try Self.subdirectory(rootFD, domain, root)
        defer { close(domainFD) }
        let userFD = try Self.subdirectory(domainFD, user, "\(root)/\(domain)")
        defer { close(userFD) }
        let base = "\(root)/\(domain)/\(user)"
        let tmpFD = try Self.subdirectory(userFD, "tmp", base)
        defer { close(tmpFD) }
        let newFD = try Self.subdirectory(userFD, "new", base)
        defer { close(newFD) }
        let curFD = try Self.subdirectory(userFD, "cur", base)
        defer { close(curFD) }
        if let fixedName {
            try Self.checkName(fixedName)
            if let existing = Self.alreadyDelivered(fixedName, newFD: newFD, curFD: curFD, base: base) {
                return existing
            }
        }

        let sourceFD = try FileSystem.open(messageFile, FileSystem.readFlags)
        defer { close(sourceFD) }

        var name = ""
        var fileFD: Int32 = -1
        for _ in 0..<8 {
            name = fixedName.map { "\($0).\(host)" } ?? uniqueName()
            // A fixed name may have a stale tmp/ file from a crash: it is replaced, never appended to.
            if fixedName != nil { unlinkat(tmpFD, name, 0) }
            fileFD = openat(tmpFD, name, FileSystem.createFlags, 0o600)
            if fileFD >= 0 { break }
            if errno != EEXIST { throw .fromWrite("open", "\(base)/tmp/\(name)", errno) }
        }
        guard fileFD >= 0 else { throw .io(operation: "open", path: "\(base)/tmp", errno: EEXIST) }
        let temporaryPath = "\(base)/tmp/\(name)"
        do throws(SpoolError) {
            defer { close(fileFD) }
            var lineEndings = CRLFToLF()
            try FileSystem.writeAll(fileFD, lineEndings.convert(prefix), path: temporaryPath)
            try Self.copy(
                from: sourceFD, sourcePath: messageFile, to: fileFD, path: temporaryPath, lineEndings: &lineEndings)
            try FileSystem.fsync(fileFD, path: temporaryPath)
            CrashPoint.hit("maildir.tmp-written")
            if renameat(tmpFD, name, newFD, name) != 0 {
                throw SpoolError.fromWrite("rename", "\(temporaryPath) -> \(base)/new/\(name)", errno)
            }
        } catch {
            unlinkat(tmpFD, name, 0)
            throw error
        }
        try FileSystem.fsync(newFD, path: "\(base)/new")
        return "\(base)/new/\(name)"
    }

    /// How long a file may stay in a Maildir tmp/ before start-up removes it: the 36 hours Maildir readers allow a
    /// delivery in progress.
    public static let staleTemporarySeconds = 36 * 3600

    /// Start-up clean-up of every `<root>/<domain>/<user>/tmp/`, run before any delivery starts. A file of our own
    /// interrupted delivery (named `<arrival>.<queue id>.R<n>.<host>`, see `deliver`) is removed at once: nobody is
    /// writing it, and the retry writes it again from the start. Any other file is removed once it is older than
    /// `staleTemporarySeconds` (another writer's crash); a younger one may be a delivery in progress. Symlinks are
    /// not followed. Returns the paths removed; errors on one entry do not stop the others.
    public func removeStaleTemporaryFiles(now: Int64) -> [String] {
        var removed: [String] = []
        for domain in Self.subdirectories(root) {
            for user in Self.subdirectories("\(root)/\(domain)") {
                let tmp = "\(root)/\(domain)/\(user)/tmp"
                guard let status = try? FileSystem.entryStatus(tmp), FileSystem.isDirectory(status),
                    let entries = try? FileSystem.list(tmp)
                else { continue }
                for raw in entries {
                    let name = String(decoding: raw, as: UTF8.self)
                    let path = FileSystem.join(tmp, raw)
                    var entry = stat()
                    guard lstat(path, &entry) == 0, !FileSystem.isDirectory(entry) else { continue }
                    let age = now - Int64(entry.st_mtim.tv_sec)
                    guard isOwnDeliveryName(name) || age > Int64(Self.staleTemporarySeconds) else { continue }
                    if unlink(path) == 0 { removed.append("\(tmp)/\(FileSystem.printable(raw))") }
                }
            }
        }
        return removed
    }

    /// `<digits>.<queue id>.R<digits>.<our host part>`: the fixed name `deliver` gives a queued copy.
    func isOwnDeliveryName(_ name: String) -> Bool {
        let parts = name.split(separator: ".", maxSplits: 3, omittingEmptySubsequences: false)
        guard parts.count == 4, !parts[0].isEmpty, parts[0].allSatisfy(\.isASCII), parts[0].allSatisfy(\.isNumber),
            QueueID(String(parts[1])) != nil, parts[2].hasPrefix("R"), parts[2].count > 1,
            parts[2].dropFirst().allSatisfy({ $0.isASCII && $0.isNumber })
        else { return false }
        return parts[3] == host
    }

    /// Names of the real directories (not symlinks) in `path`; none when it cannot be read.
    private static func subdirectories(_ path: String) -> [String] {
        guard let entries = try? FileSystem.list(path) else { return [] }
        return entries.compactMap { raw in
            var status = stat()
            guard lstat(FileSystem.join(path, raw), &status) == 0, FileSystem.isDirectory(status) else { return nil }
            return String(decoding: raw, as: UTF8.self)
        }
    }

    /// The path of an earlier copy named `name.<host>` in new/ or (moved there by a reader, with a `:2,` flags
    /// suffix) in cur/.
    private static func alreadyDelivered(_ fixedName: String, newFD: Int32, curFD: Int32, base: String) -> String? {
        var status = stat()
        let host = MaildirWriter.hostPart()
        let name = "\(fixedName).\(host)"
        if fstatat(newFD, name, &status, AT_SYMLINK_NOFOLLOW) == 0 { return "\(base)/new/\(name)" }
        if fstatat(curFD, name, &status, AT_SYMLINK_NOFOLLOW) == 0 { return "\(base)/cur/\(name)" }
        guard let directory = fdopendir(dup(curFD)) else { return nil }
        defer { closedir(directory) }
        while let entry = readdir(directory) {
            let entryName = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if entryName.hasPrefix(name + ":") { return "\(base)/cur/\(entryName)" }
        }
        return nil
    }

    static func checkName(_ name: String) throws(SpoolError) {
        guard !name.isEmpty, name != ".", name != "..", !name.utf8.contains(UInt8(ascii: "/")),
            !name.utf8.contains(0)
        else { throw .invalidMailboxName(name) }
    }

    /// `<seconds>.M<µs>P<pid>R<random>.<host>`: unique across processes and threads (random part), O_EXCL checks.
    private func uniqueName() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        let random = String(UInt64.random(in: 0...UInt64.max), radix: 16)
        return "\(now.tv_sec).M\(now.tv_nsec / 1000)P\(getpid())R\(random).\(host)"
    }

    /// Opens (creating, 0700) a directory below `parent` without following a symlink.
    private static func subdirectory(_ parent: Int32, _ name: String, _ parentPath: String) throws(SpoolError)
        -> Int32
    {
        let path = "\(parentPath)/\(name)"
        if mkdirat(parent, name, 0o700) == 0 {
            try FileSystem.fsync(parent, path: parentPath)
        } else if errno != EEXIST {
            throw .fromWrite("mkdir", path, errno)
        }
        let fd = openat(parent, name, FileSystem.directoryFlags | O_NOFOLLOW)
        guard fd >= 0 else { throw .io(operation: "open", path: path, errno: errno) }
        return fd
    }

    private static func copy(
        from source: Int32, sourcePath: String, to target: Int32, path: String, lineEndings: inout CRLFToLF
    ) throws(SpoolError) {
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(source, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                throw .io(operation: "read", path: sourcePath, errno: errno)
            }
            if count == 0 { return try FileSystem.writeAll(target, lineEndings.finish(), path: path) }
            try FileSystem.writeAll(target, lineEndings.convert(buffer[0..<count]), path: path)
        }
    }
}

extension String {
    fileprivate func replacingOccurrences(_ target: String, with replacement: String) -> String {
        split(separator: Character(target), omittingEmptySubsequences: false).joined(separator: replacement)
    }
}
