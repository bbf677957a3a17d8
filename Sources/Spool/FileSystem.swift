import Glibc

/// Thin, typed wrappers over the POSIX calls the spool needs. Every call retries EINTR and reports errno as
/// `SpoolError`. Nothing here decides policy; Spool and MaildirWriter do.
enum FileSystem {
    static let createFlags: Int32 = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC
    /// O_NONBLOCK so a FIFO planted in the queue cannot hang the reader; regular files ignore it.
    static let readFlags: Int32 = O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK
    static let directoryFlags: Int32 = O_RDONLY | O_DIRECTORY | O_CLOEXEC

    static func open(_ path: String, _ flags: Int32, mode: mode_t = 0o600) throws(SpoolError) -> Int32 {
        while true {
            let fd = Glibc.open(path, flags, mode)
            if fd >= 0 { return fd }
            if errno == EINTR { continue }
            let code = errno
            throw flags & O_CREAT != 0
                ? .fromWrite("open", path, code) : .io(operation: "open", path: path, errno: code)
        }
    }

    static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, path: String) throws(SpoolError) {
        var offset = 0
        while offset < bytes.count {
            let count = Glibc.write(fd, bytes.baseAddress.map { $0 + offset }, bytes.count - offset)
            if count < 0 {
                if errno == EINTR { continue }
                throw .fromWrite("write", path, errno)
            }
            offset += count
        }
    }

    static func writeAll(_ fd: Int32, _ bytes: [UInt8], path: String) throws(SpoolError) {
        let result: Result<Void, SpoolError> = bytes.withUnsafeBytes { buffer in
            do throws(SpoolError) {
                try writeAll(fd, buffer, path: path)
                return .success(())
            } catch {
                return .failure(error)
            }
        }
        try result.get()
    }

    static func fsync(_ fd: Int32, path: String) throws(SpoolError) {
        while Glibc.fsync(fd) != 0 {
            if errno == EINTR { continue }
            throw .fromWrite("fsync", path, errno)
        }
    }

    /// fdatasync(2): the file's data and the metadata needed to read it back (its size, its block map), without
    /// the timestamps. For a file just written that is everything recovery depends on; its name is made durable
    /// separately, by fsyncing the directory that holds it.
    static func dataSync(_ fd: Int32, path: String) throws(SpoolError) {
        while Glibc.fdatasync(fd) != 0 {
            if errno == EINTR { continue }
            throw .fromWrite("fdatasync", path, errno)
        }
    }

    /// Starts writing a file's dirty pages to the device without waiting (a hint; the fsync that follows is what
    /// makes the data durable). Errors are ignored here: that fsync reports them.
    static func startWriteBack(_ fd: Int32) {
        guard fd >= 0, let syncFileRange = syncFileRange else { return }
        _ = syncFileRange(fd, 0, 0, syncFileRangeWrite)
    }

    /// glibc's sync_file_range(2), looked up at run time: Swift's Glibc module is built without _GNU_SOURCE, which
    /// hides the declaration. Missing (another libc), write-back simply starts at the fsync.
    private typealias SyncFileRange = @convention(c) (Int32, Int64, Int64, UInt32) -> Int32
    private static let syncFileRange: SyncFileRange? = {
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "sync_file_range") else { return nil }
        return unsafeBitCast(symbol, to: SyncFileRange.self)
    }()
    /// SYNC_FILE_RANGE_WRITE from <fcntl.h>: start write-out of dirty pages, do not wait.
    private static let syncFileRangeWrite: UInt32 = 2

    /// Makes renames and unlinks in a directory durable.
    static func fsyncDirectory(_ path: String) throws(SpoolError) {
        let fd = try open(path, directoryFlags)
        defer { close(fd) }
        try fsync(fd, path: path)
    }

    static func rename(_ from: String, _ to: String) throws(SpoolError) {
        if Glibc.rename(from, to) != 0 { throw .fromWrite("rename", "\(from) -> \(to)", errno) }
    }

    /// Removes a file; a missing file is fine.
    @discardableResult
    static func unlinkIfPresent(_ path: String) -> Bool {
        Glibc.unlink(path) == 0
    }

    /// lstat: the entry itself, never what a symlink points to.
    static func entryStatus(_ path: String) throws(SpoolError) -> stat? {
        var status = stat()
        if lstat(path, &status) == 0 { return status }
        if errno == ENOENT { return nil }
        throw .io(operation: "lstat", path: path, errno: errno)
    }

    static func exists(_ path: String) -> Bool {
        var status = stat()
        return lstat(path, &status) == 0
    }

    static func isRegular(_ status: stat) -> Bool { status.st_mode & S_IFMT == S_IFREG }
    static func isDirectory(_ status: stat) -> Bool { status.st_mode & S_IFMT == S_IFDIR }

    static func fileStatus(_ fd: Int32, path: String) throws(SpoolError) -> stat {
        var status = stat()
        if fstat(fd, &status) != 0 { throw .io(operation: "fstat", path: path, errno: errno) }
        return status
    }

    /// Reads exactly the bytes up to end of file, refusing more than `limit` (a file that grows past it is an error).
    static func readAll(_ fd: Int32, sizeHint: Int, limit: Int, path: String) throws(SpoolError) -> [UInt8]? {
        var bytes = [UInt8](repeating: 0, count: min(max(sizeHint, 0), limit) + 1)
        var filled = 0
        while true {
            if filled == bytes.count {
                if bytes.count > limit { return nil }
                bytes.append(contentsOf: [UInt8](repeating: 0, count: min(bytes.count, limit + 1 - bytes.count)))
            }
            let count = bytes.withUnsafeMutableBytes { buffer in
                Glibc.read(fd, buffer.baseAddress.map { $0 + filled }, buffer.count - filled)
            }
            if count < 0 {
                if errno == EINTR { continue }
                throw .io(operation: "read", path: path, errno: errno)
            }
            if count == 0 { break }
            filled += count
        }
        bytes.removeSubrange(filled...)
        return bytes
    }

    /// Creates a directory with mode 0700; an existing directory is fine, anything else there is an error.
    /// Returns true when it was created (the caller then fsyncs the parent).
    @discardableResult
    static func makeDirectory(_ path: String) throws(SpoolError) -> Bool {
        if mkdir(path, 0o700) == 0 { return true }
        let code = errno
        guard code == EEXIST else { throw .fromWrite("mkdir", path, code) }
        var status = stat()
        guard stat(path, &status) == 0, isDirectory(status) else {
            throw .io(operation: "mkdir", path: path, errno: ENOTDIR)
        }
        return false
    }

    /// The raw names in a directory, without "." and "..". Raw bytes, because a planted name need not be UTF-8.
    static func list(_ path: String) throws(SpoolError) -> [[UInt8]] {
        guard let directory = opendir(path) else { throw .io(operation: "opendir", path: path, errno: errno) }
        defer { closedir(directory) }
        var names: [[UInt8]] = []
        while true {
            errno = 0
            guard let entry = readdir(directory) else {
                if errno != 0 { throw .io(operation: "readdir", path: path, errno: errno) }
                break
            }
            let name = withUnsafeBytes(of: &entry.pointee.d_name) { raw in
                Array(raw.prefix { $0 != 0 })
            }
            if name == [0x2E] || name == [0x2E, 0x2E] { continue }
            names.append(name)
        }
        return names
    }

    static func join(_ directory: String, _ name: [UInt8]) -> [CChar] {
        var path = Array(directory.utf8).map { CChar(bitPattern: $0) }
        path.append(CChar(bitPattern: UInt8(ascii: "/")))
        path.append(contentsOf: name.map { CChar(bitPattern: $0) })
        path.append(0)
        return path
    }

    /// Printable form of a raw name for reports and logs.
    static func printable(_ name: [UInt8]) -> String {
        EnvelopeCodec.escape(String(decoding: name, as: UTF8.self))
    }

    static func randomToken(_ count: Int) -> String {
        let alphabet = Array("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ".utf8)
        var generator = SystemRandomNumberGenerator()
        return String(decoding: (0..<count).map { _ in alphabet[Int(generator.next() % 36)] }, as: UTF8.self)
    }
}
