import Dispatch
import Glibc

// Spool — dualmta's durable queue (and, in MaildirWriter.swift, its local delivery). It knows files, not sockets.
//
// Layout under the spool directory (all 0700, files 0600; names are queue ids, never envelope data):
//
//     incoming/   messages being received; emptied at start-up
//     queue/      committed messages: <id>.msg (the bytes) + <id>.env (the envelope, EnvelopeCodec.swift)
//     corrupt/    entries that failed validation, never delivered, with <id>.reason
//     mailboxes/  Maildir for local domains        state/  transport cache, TLS key (used by others)
//
// Queue states (like qmail's INTERNALS): which files exist, and what start-up recovery does with them.
//
//     state                    incoming/            queue/                          recover()
//     ----------------------   ------------------   -----------------------------   ---------------------------
//     1 receiving              <id>.msg (flocked)   -                               delete (never acknowledged)
//     2 envelope written       <id>.msg, <id>.env   -                               delete both
//       (and synced: round 1)
//     3 data moved             <id>.env             <id>.msg                        delete both
//     4 committed              -                    <id>.msg, <id>.env              validate; bad → corrupt/
//       (durable: round 2)
//     4L committed, locked     -                    <id>.msg (flocked), <id>.env    as 4 (the lock died with its owner)
//     5 envelope update        -                    <id>.msg, <id>.env, <id>.R.tmp  delete the .tmp (old env wins)
//     6 removing               -                    <id>.msg                        delete (as in state 3)
//
// A commit waits for the device twice (docs/durability.md): round 1 syncs the data file and the envelope together
// (state 2, both issued at once), round 2 fsyncs queue/ after the renames (state 4). Nothing is renamed into queue/
// before round 1 has ended, so every name in queue/ points at synced bytes and recovery needs no content check.
//
// The message lock (4L, MessageLock.swift) is `flock(LOCK_EX)` on `queue/<id>.msg`, the one file that stays put from
// commit to removal. A delivery run holds it from its first envelope read to its last write (5 and 6 happen under
// it); a queue command (hold, bounce, delete, ...) holds it around its read-modify-write. The lock lives on the
// open file, so a process that dies drops it; start-up recovery never waits for it.
//
// The commit point is the one rename `incoming/<id>.env → queue/<id>.env` (3 → 4): a `queue/<id>.env` exists only
// for a message whose data and envelope are both synced, and `.env` without `.msg` is corrupt. `commit` then fsyncs
// `queue/` and only after that may the server answer `250`. Envelope updates are write-temp + fsync + rename,
// so a reader sees the old or the new envelope, never a mix; `remove` unlinks the envelope first (4 → 6).
//
// Every call here blocks (fsync, rename, directory scans): callers run them on a work queue, never on a connection's
// event queue. Spool is safe to use from many threads at once: it keeps no mutable state except the id generator
// (lock-protected), and all coordination happens in the file system (O_EXCL names, atomic renames, flock), so
// `dualmta send` may write into the spool of a running daemon. Only the daemon calls `recover()`, once, at start-up.

/// What `recover()` did, for one log line per entry.
public struct RecoveryReport: Sendable, Equatable {
    /// Files deleted from incoming/ (interrupted receptions; the client never got 250).
    public var removedIncoming: [String] = []
    /// queue/<id>.msg without an envelope: interrupted commits, never acknowledged.
    public var removedUncommitted: [QueueID] = []
    /// Leftover envelope temporary files from interrupted updates.
    public var removedTemporary: [String] = []
    /// Entries moved to corrupt/, with the reason.
    public var quarantined: [Quarantined] = []
    /// Files skipped because another process holds their lock (a `dualmta send` still writing).
    public var busy: [String] = []
    /// Errors that did not stop recovery (e.g. EIO on one file).
    public var problems: [String] = []
    /// Committed messages that passed validation.
    public var valid: [QueueID] = []

    public struct Quarantined: Sendable, Equatable {
        /// The queue id, or the escaped file name for something that is not one of ours.
        public var name: String
        public var reason: String
    }

    public init() {}
}

/// The durable queue. See the state table above.
public final class Spool: Sendable {
    /// Absolute path of the spool directory.
    public let directory: String
    let incomingDirectory: String
    let queueDirectory: String
    let corruptDirectory: String
    public let mailboxDirectory: String
    public let stateDirectory: String
    private let ids: QueueIDGenerator
    /// The other threads of a commit's file round (`syncTogether`): serial queues of their own, so each gets a
    /// thread even when every shared worker is busy. With the commit thread, up to `syncLanes.count + 1` syncs are
    /// in flight at once.
    private let syncLanes = (1..<8).map { DispatchQueue(label: "dualmta.spool.sync-lane-\($0)") }

    /// Opens (creating when missing) the spool and its subdirectories, mode 0700. A relative path is made absolute
    /// now, so a later chdir cannot move the spool.
    public init(directory: String) throws(SpoolError) {
        var path = directory
        if !path.hasPrefix("/") {
            guard let cwd = getcwd(nil, 0) else { throw .io(operation: "getcwd", path: directory, errno: errno) }
            defer { free(cwd) }
            path = String(cString: cwd) + "/" + path
        }
        while path.count > 1 && path.hasSuffix("/") { path.removeLast() }
        self.directory = path
        incomingDirectory = path + "/incoming"
        queueDirectory = path + "/queue"
        corruptDirectory = path + "/corrupt"
        mailboxDirectory = path + "/mailboxes"
        stateDirectory = path + "/state"
        ids = QueueIDGenerator()

        var prefix = ""
        for component in path.split(separator: "/") {
            prefix += "/" + component
            try FileSystem.makeDirectory(prefix)
        }
        for subdirectory in [incomingDirectory, queueDirectory, corruptDirectory, mailboxDirectory, stateDirectory] {
            try FileSystem.makeDirectory(subdirectory)
        }
    }

    // MARK: Paths (ids only, so no path can be steered by envelope data)

    public func messagePath(_ id: QueueID) -> String { "\(queueDirectory)/\(id.rawValue).msg" }
    func envelopePath(_ id: QueueID) -> String { "\(queueDirectory)/\(id.rawValue).env" }

    // MARK: Receiving and committing

    /// Starts a message: creates `incoming/<id>.msg` with O_EXCL (a name taken by another thread or process makes
    /// it try the next id) and locks it.
    public func begin() throws(SpoolError) -> IncomingMessage {
        var lastError = SpoolError.io(operation: "open", path: incomingDirectory, errno: EEXIST)
        for _ in 0..<64 {
            let id = ids.next()
            let path = "\(incomingDirectory)/\(id.rawValue).msg"
            let fd: Int32
            do {
                fd = try FileSystem.open(path, FileSystem.createFlags)
            } catch {
                if case .io(_, _, EEXIST) = error {
                    lastError = error
                    continue
                }
                throw error
            }
            // Lost to a concurrent recover(), or the id is still in the queue (clock stepped back): next id.
            if flock(fd, LOCK_EX | LOCK_NB) != 0
                || FileSystem.exists(envelopePath(id)) || FileSystem.exists(messagePath(id))
            {
                Glibc.unlink(path)
                close(fd)
                continue
            }
            return IncomingMessage(id: id, path: path, fd: fd)
        }
        throw lastError
    }

    /// Commits a received message (`docs/durability.md`): a batch of one (see `commit(_:)` below). Only when this returns may
    /// the server send 250. On failure everything it wrote is removed, the message is closed, and the error thrown;
    /// the caller replies 451 4.3.0 (452 4.3.1 when the disk is full). `envelope.messageSize` is set from the data.
    public func commit(_ message: IncomingMessage, envelope: Envelope) throws(SpoolError) {
        try commit([PendingCommit(message: message, envelope: envelope)])[0].get()
    }

    /// Commits several received messages (group commit; GroupCommit.swift batches the sessions' requests) in two
    /// device rounds, however many messages the batch holds. Per message: flush the data, write
    /// `incoming/<id>.env`, start the write-back of both (sync_file_range). Round one: fdatasync every file of the
    /// batch, all issued at once from up to eight threads (`syncTogether`). Then rename each data file and after it its
    /// envelope into queue/ (the envelope's rename is the commit point), and round two: fsync queue/ once for the
    /// whole batch. A message whose own step fails is cleaned up alone; if the directory fsync fails, every message
    /// of the batch is uncommitted. Returns one result per message, in order; a message may be answered 250 only
    /// when its result is success.
    public func commit(_ batch: [PendingCommit]) -> [Result<Void, SpoolError>] {
        var work = batch.map { CommitWork(pending: $0, incomingEnvelope: "") }
        for index in work.indices {
            let message = work[index].pending.message
            var envelope = work[index].pending.envelope
            let path = "\(incomingDirectory)/\(message.id.rawValue).env"
            var envelopeFD: Int32 = -1
            work[index].incomingEnvelope = path
            work[index].run { stage throws(SpoolError) in
                guard message.fd >= 0 else { throw .messageClosed(message.id) }
                guard envelope.id == message.id else {
                    throw SpoolError.invalidEnvelope("envelope id \(envelope.id) != \(message.id)")
                }
                envelope.messageSize = message.size
                let bytes = try EnvelopeCodec.encode(envelope)
                try message.flush()
                envelopeFD = try FileSystem.open(path, FileSystem.createFlags)
                stage = 1
                try FileSystem.writeAll(envelopeFD, bytes, path: path)
                CrashPoint.hit("commit.envelope-written")
            }
            work[index].envelopeFD = envelopeFD
        }
        // Round one. Write-back starts for every file before any wait; the syncs are then issued together, so their
        // writes and device flushes overlap instead of queueing one behind another.
        var files: [(fd: Int32, path: String, owner: Int)] = []
        for (index, item) in work.enumerated() where item.failure == nil {
            FileSystem.startWriteBack(item.pending.message.fd)
            FileSystem.startWriteBack(item.envelopeFD)
            files.append((item.pending.message.fd, item.pending.message.path, index))
            files.append((item.envelopeFD, item.incomingEnvelope, index))
        }
        for (file, error) in zip(files, syncTogether(files.map { ($0.fd, $0.path) })) {
            if let error, work[file.owner].failure == nil { work[file.owner].failure = error }
        }
        for item in work where item.failure == nil {
            CrashPoint.hit("commit.files-synced")
        }
        for index in work.indices {
            let message = work[index].pending.message
            let path = work[index].incomingEnvelope
            work[index].run { stage throws(SpoolError) in
                try FileSystem.rename(message.path, messagePath(message.id))
                stage = 2
                CrashPoint.hit("commit.message-renamed")
                try FileSystem.rename(path, envelopePath(message.id))
                stage = 3
                CrashPoint.hit("commit.envelope-renamed")
            }
        }
        if work.contains(where: { $0.failure == nil }) {
            do throws(SpoolError) {
                try FileSystem.fsyncDirectory(queueDirectory)
                CrashPoint.hit("commit.directory-fsynced")
            } catch {
                for index in work.indices where work[index].failure == nil {
                    work[index].failure = error
                }
            }
        }
        return work.map { item in
            if item.envelopeFD >= 0 { close(item.envelopeFD) }
            let message = item.pending.message
            guard let error = item.failure else {
                message.close()
                return .success(())
            }
            removeUncommitted(message, incomingEnvelope: item.incomingEnvelope, stage: item.stage)
            message.markFailed(error)
            message.close()
            return .failure(error)
        }
    }

    /// fdatasyncs the files at once: file i on lane i mod 8 (lane 0 is this thread), so a lone message's data and
    /// envelope are in flight together, and a batch's syncs mostly are. Each sync waits for its own writes and a
    /// device flush; queued behind each other, a batch's syncs would add those waits up. Returns one error (nil:
    /// durable) per file, in order.
    func syncTogether(_ files: [(fd: Int32, path: String)]) -> [SpoolError?] {
        let width = syncLanes.count + 1
        let lanes = syncLanes.indices.prefix(max(0, files.count - 1)).map { lane in
            let indices = Array(stride(from: lane + 1, to: files.count, by: width))
            return (indices, LaneSync(indices.map { files[$0] }, on: syncLanes[lane]))
        }
        var errors = [SpoolError?](repeating: nil, count: files.count)
        for index in stride(from: 0, to: files.count, by: width) {
            errors[index] = Self.dataSync(files[index])
        }
        for (indices, lane) in lanes {
            for (index, error) in zip(indices, lane.wait()) { errors[index] = error }
        }
        return errors
    }

    fileprivate static func dataSync(_ file: (fd: Int32, path: String)) -> SpoolError? {
        do throws(SpoolError) {
            try FileSystem.dataSync(file.fd, path: file.path)
            return nil
        } catch {
            return error
        }
    }

    /// Undoes what a failed commit wrote, by how far it got (the `stage` of CommitWork).
    private func removeUncommitted(_ message: IncomingMessage, incomingEnvelope: String, stage: Int) {
        let id = message.id
        switch stage {
        case 0:
            FileSystem.unlinkIfPresent(message.path)
        case 1:
            FileSystem.unlinkIfPresent(incomingEnvelope)
            FileSystem.unlinkIfPresent(message.path)
        case 2:
            FileSystem.unlinkIfPresent(incomingEnvelope)
            FileSystem.unlinkIfPresent(messagePath(id))
        default:
            // Committed but maybe not durable: uncommit (envelope first). The queue runner may already have seen
            // it, so the client's retry can give a duplicate; never a loss.
            FileSystem.unlinkIfPresent(envelopePath(id))
            FileSystem.unlinkIfPresent(messagePath(id))
        }
    }

    /// Drops a message being received (RSET, lost connection, size exceeded). Never throws; idempotent; does
    /// nothing after a successful commit.
    public func abort(_ message: IncomingMessage) {
        guard message.fd >= 0 else { return }
        FileSystem.unlinkIfPresent(message.path)
        message.close()
    }

    // MARK: The queue

    /// Ids of committed messages (those with a `queue/<id>.env`), oldest first.
    public func queuedIDs() throws(SpoolError) -> [QueueID] {
        var result: [QueueID] = []
        for name in try FileSystem.list(queueDirectory) {
            if case .envelope(let id) = QueueEntryName(name) { result.append(id) }
        }
        return result.sorted()
    }

    /// Reads and validates an envelope: magic, END record, checksum, every field, the owner and mode of both files,
    /// and that `queue/<id>.msg` is a regular file of the recorded size. Anything wrong → `.corrupt`.
    public func envelope(_ id: QueueID) throws(SpoolError) -> Envelope {
        let path = envelopePath(id)
        let fd = try openQueueFile(path, id: id, missing: .notFound(id))
        defer { close(fd) }
        let status = try checkedStatus(fd, path: path, id: id, what: "envelope")
        guard status.st_size <= EnvelopeCodec.maximumFileSize else {
            throw .corrupt(id, reason: "envelope file too large (\(status.st_size) bytes)")
        }
        guard
            let bytes = try FileSystem.readAll(
                fd, sizeHint: Int(status.st_size), limit: EnvelopeCodec.maximumFileSize, path: path)
        else { throw .corrupt(id, reason: "envelope file too large") }
        let envelope: Envelope
        do {
            envelope = try EnvelopeCodec.decode(bytes, expectedID: id)
        } catch {
            throw .corrupt(id, reason: error.reason)
        }

        let messagePath = messagePath(id)
        let messageFD: Int32
        do {
            messageFD = try openQueueFile(messagePath, id: id, missing: .corrupt(id, reason: "message file missing"))
        } catch {
            // remove() unlinks the envelope, then the message: a missing message with a vanished envelope is a race.
            if case .corrupt = error, !FileSystem.exists(path) { throw .notFound(id) }
            throw error
        }
        defer { close(messageFD) }
        let messageStatus = try checkedStatus(messageFD, path: messagePath, id: id, what: "message")
        guard Int64(messageStatus.st_size) == envelope.messageSize else {
            throw .corrupt(id, reason: "message size \(messageStatus.st_size) != recorded \(envelope.messageSize)")
        }
        return envelope
    }

    /// Replaces an envelope atomically: write `queue/<id>.<random>.tmp`, fdatasync, rename over `<id>.env`, fsync
    /// queue/ (two device rounds, both needed: the rename must not reach the disk before the new bytes do).
    /// A concurrent reader sees the old or the new file, never a partial one. Fails with `.notFound` when the message
    /// was removed, so an update cannot resurrect it.
    public func update(_ envelope: Envelope) throws(SpoolError) {
        let id = envelope.id
        let bytes = try EnvelopeCodec.encode(envelope)
        guard let messageStatus = try FileSystem.entryStatus(messagePath(id)), FileSystem.exists(envelopePath(id))
        else { throw .notFound(id) }
        guard FileSystem.isRegular(messageStatus), Int64(messageStatus.st_size) == envelope.messageSize else {
            throw .invalidEnvelope("message size \(messageStatus.st_size) != envelope \(envelope.messageSize)")
        }
        let temporary = "\(queueDirectory)/\(id.rawValue).\(FileSystem.randomToken(8)).tmp"
        do {
            let fd = try FileSystem.open(temporary, FileSystem.createFlags)
            defer { close(fd) }
            try FileSystem.writeAll(fd, bytes, path: temporary)
            try FileSystem.dataSync(fd, path: temporary)
            CrashPoint.hit("update.temp-fsynced")
        } catch {
            FileSystem.unlinkIfPresent(temporary)
            throw error
        }
        // The message may have been removed meanwhile; checking again narrows, not closes, that window.
        guard FileSystem.exists(envelopePath(id)) else {
            FileSystem.unlinkIfPresent(temporary)
            throw .notFound(id)
        }
        do {
            try FileSystem.rename(temporary, envelopePath(id))
        } catch {
            FileSystem.unlinkIfPresent(temporary)
            throw error
        }
        CrashPoint.hit("update.renamed")
        try FileSystem.fsyncDirectory(queueDirectory)
    }

    /// The message bytes as received (our Received header first). For large messages, stream `messagePath(_:)`.
    public func readMessage(_ id: QueueID) throws(SpoolError) -> [UInt8] {
        let path = messagePath(id)
        let fd = try openQueueFile(path, id: id, missing: .notFound(id))
        defer { close(fd) }
        let status = try checkedStatus(fd, path: path, id: id, what: "message")
        let size = Int(status.st_size)
        guard let bytes = try FileSystem.readAll(fd, sizeHint: size, limit: size, path: path) else {
            throw .corrupt(id, reason: "message file grew while reading")
        }
        return bytes
    }

    /// Removes a message: the envelope first (uncommit), then the data. `.notFound` when neither exists.
    public func remove(_ id: QueueID) throws(SpoolError) {
        var removed = false
        for path in [envelopePath(id), messagePath(id)] {
            if Glibc.unlink(path) == 0 {
                removed = true
            } else if errno != ENOENT {
                throw .io(operation: "unlink", path: path, errno: errno)
            }
        }
        if !removed { throw .notFound(id) }
    }

    /// Moves a message to corrupt/ (envelope first, so it stops being queued), with `<id>.reason` beside it.
    public func quarantine(_ id: QueueID, reason: String) throws(SpoolError) {
        var moved = false
        for (path, suffix) in [(envelopePath(id), ".env"), (messagePath(id), ".msg")] {
            guard FileSystem.exists(path) else { continue }
            try FileSystem.rename(path, corruptDestination(id.rawValue + suffix))
            moved = true
        }
        guard moved else { throw .notFound(id) }
        writeReason(id.rawValue, reason)
    }

    /// Free space for unprivileged writers (`f_bavail * f_frsize`; never f_bfree, which includes root's reserve).
    public func availableBytes() -> UInt64? {
        var info = statvfs()
        guard statvfs(directory, &info) == 0 else { return nil }
        return UInt64(info.f_bavail).multipliedReportingOverflow(by: UInt64(info.f_frsize)).partialValue
    }

    // MARK: Start-up recovery

    /// Run once at start-up, before accepting mail or delivering: empties incoming/, deletes uncommitted data and
    /// stale temporary files, validates every envelope and moves bad entries (and foreign files) to corrupt/.
    /// Files locked by a live writer in another process are skipped.
    public func recover() throws(SpoolError) -> RecoveryReport {
        var report = RecoveryReport()

        for name in try FileSystem.list(incomingDirectory) {
            let printable = FileSystem.printable(name)
            switch removeUnlessLocked(directory: incomingDirectory, name: name) {
            case .removed: report.removedIncoming.append(printable)
            case .locked: report.busy.append(printable)
            case .kept: break
            case .notAFile:
                moveForeign(directory: incomingDirectory, name: name, reason: "directory in incoming/", &report)
            case .failed(let code): report.problems.append("unlink incoming/\(printable): errno \(code)")
            }
        }

        var envelopes: Set<QueueID> = []
        var messages: [QueueID] = []
        for name in try FileSystem.list(queueDirectory) {
            switch QueueEntryName(name) {
            case .envelope(let id): envelopes.insert(id)
            case .message(let id): messages.append(id)
            case .temporary:
                if Glibc.unlink(FileSystem.join(queueDirectory, name)) == 0 {
                    report.removedTemporary.append(FileSystem.printable(name))
                }
            case .foreign:
                moveForeign(directory: queueDirectory, name: name, reason: "unknown file in queue/", &report)
            }
        }

        for id in messages.sorted() where !envelopes.contains(id) {
            let name = Array("\(id.rawValue).msg".utf8)
            // The lock is held by a writer until after its envelope rename, so once we hold it, check again.
            switch removeUnlessLocked(directory: queueDirectory, name: name, unless: { self.hasEnvelope(id) }) {
            case .removed: report.removedUncommitted.append(id)
            case .locked: report.busy.append(id.rawValue + ".msg")
            case .kept: envelopes.insert(id)
            case .notAFile: moveForeign(directory: queueDirectory, name: name, reason: "not a file", &report)
            case .failed(let code): report.problems.append("unlink \(messagePath(id)): errno \(code)")
            }
        }

        for id in envelopes.sorted() {
            do {
                _ = try envelope(id)
                report.valid.append(id)
            } catch {
                switch error {
                case .corrupt(_, let reason):
                    do {
                        try quarantine(id, reason: reason)
                        report.quarantined.append(.init(name: id.rawValue, reason: reason))
                    } catch {
                        report.problems.append("quarantine \(id): \(error)")
                    }
                case .notFound:
                    continue
                default:
                    report.problems.append("\(id): \(error)")
                }
            }
        }
        return report
    }

    // MARK: Helpers

    private func hasEnvelope(_ id: QueueID) -> Bool { FileSystem.exists(envelopePath(id)) }

    /// Opens a queue file for reading without following symlinks: a symlink is corrupt, a missing file
    /// is `missing`.
    private func openQueueFile(_ path: String, id: QueueID, missing: SpoolError) throws(SpoolError) -> Int32 {
        do {
            return try FileSystem.open(path, FileSystem.readFlags)
        } catch {
            if case .io(_, _, let code) = error {
                if code == ENOENT { throw missing }
                if code == ELOOP { throw .corrupt(id, reason: "symbolic link") }
            }
            throw error
        }
    }

    /// A regular file, owned by us, not writable by group or others (anything else may have been tampered with).
    private func checkedStatus(_ fd: Int32, path: String, id: QueueID, what: String) throws(SpoolError) -> stat {
        let status = try FileSystem.fileStatus(fd, path: path)
        guard FileSystem.isRegular(status) else { throw .corrupt(id, reason: "\(what) is not a regular file") }
        guard status.st_uid == geteuid() else { throw .corrupt(id, reason: "\(what) has a foreign owner") }
        guard status.st_mode & 0o022 == 0 else { throw .corrupt(id, reason: "\(what) is group/world writable") }
        return status
    }

    private enum RemoveOutcome { case removed, locked, kept, notAFile, failed(Int32) }

    /// Unlinks a file unless a live process holds its flock (or `unless` becomes true once we hold it).
    /// Symlinks, FIFOs and sockets are unlinked without opening them.
    private func removeUnlessLocked(
        directory: String, name: [UInt8], unless: () -> Bool = { false }
    ) -> RemoveOutcome {
        let path = FileSystem.join(directory, name)
        var status = stat()
        guard lstat(path, &status) == 0 else { return .failed(errno) }
        if FileSystem.isDirectory(status) { return .notAFile }
        if FileSystem.isRegular(status) {
            let fd = Glibc.open(path, FileSystem.readFlags)
            if fd >= 0 {
                defer { close(fd) }
                if flock(fd, LOCK_EX | LOCK_NB) != 0 { return .locked }
                if unless() { return .kept }
                return Glibc.unlink(path) == 0 ? .removed : .failed(errno)
            }
        }
        return Glibc.unlink(path) == 0 ? .removed : .failed(errno)
    }

    private func moveForeign(directory: String, name: [UInt8], reason: String, _ report: inout RecoveryReport) {
        let printable = FileSystem.printable(name)
        let destination = corruptDestination("foreign." + printable)
        if Glibc.rename(FileSystem.join(directory, name), destination) == 0 {
            report.quarantined.append(.init(name: printable, reason: reason))
        } else {
            report.problems.append("move \(printable) to corrupt/: errno \(errno)")
        }
    }

    /// A free name in corrupt/: `base`, or `base.<random>` when taken.
    private func corruptDestination(_ base: String) -> String {
        let plain = "\(corruptDirectory)/\(base)"
        if !FileSystem.exists(plain) { return plain }
        return "\(corruptDirectory)/\(base).\(FileSystem.randomToken(6))"
    }

    /// Best effort: the reason helps the operator; failing to write it must not undo the quarantine.
    private func writeReason(_ base: String, _ reason: String) {
        let path = corruptDestination(base + ".reason")
        guard let fd = try? FileSystem.open(path, FileSystem.createFlags) else { return }
        defer { close(fd) }
        try? FileSystem.writeAll(fd, Array((reason + "\n").utf8), path: path)
    }
}

/// What a name in queue/ is. Only these three shapes are ours; anything else is foreign and goes to corrupt/.
enum QueueEntryName: Equatable {
    case envelope(QueueID)
    case message(QueueID)
    /// `<id>.<8 alnum>.tmp`, an envelope update in progress or interrupted.
    case temporary
    case foreign

    init(_ name: [UInt8]) {
        let parts = name.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        guard parts.count >= 2, parts[0].count == QueueID.length, parts[0].allSatisfy(QueueID.isIDByte),
            let id = QueueID(String(decoding: parts[0], as: UTF8.self))
        else {
            self = .foreign
            return
        }
        switch (parts.count, String(decoding: parts[parts.count - 1], as: UTF8.self)) {
        case (2, "env"): self = .envelope(id)
        case (2, "msg"): self = .message(id)
        case (3, "tmp") where parts[1].count == 8 && parts[1].allSatisfy(QueueID.isIDByte): self = .temporary
        default: self = .foreign
        }
    }
}

/// A received message waiting to be committed, with its envelope.
public struct PendingCommit: @unchecked Sendable {
    public let message: IncomingMessage
    public let envelope: Envelope

    public init(message: IncomingMessage, envelope: Envelope) {
        self.message = message
        self.envelope = envelope
    }
}

/// One lane's share of `Spool.syncTogether`, started at once. Its results can only be read through `wait()`, which
/// returns after the last of its syncs did: no caller can go on to rename a file whose sync is still running.
private final class LaneSync: @unchecked Sendable {
    private let done = DispatchGroup()
    /// Written on the lane before `done` is left; read only after waiting for `done`.
    private var errors: [SpoolError?] = []

    init(_ files: [(fd: Int32, path: String)], on lane: DispatchQueue) {
        guard !files.isEmpty else { return }
        lane.async(group: done) {
            self.errors = files.map(Spool.dataSync)
        }
    }

    func wait() -> [SpoolError?] {
        done.wait()
        return errors
    }
}

/// One message's progress through `Spool.commit(_:)`: once a step fails, the later steps skip it.
private struct CommitWork {
    let pending: PendingCommit
    var incomingEnvelope: String
    var envelopeFD: Int32 = -1
    /// 0: only incoming/<id>.msg exists; 1: incoming/<id>.env too; 2: the data is in queue/; 3: committed.
    var stage = 0
    var failure: SpoolError?

    init(pending: PendingCommit, incomingEnvelope: String) {
        self.pending = pending
        self.incomingEnvelope = incomingEnvelope
    }

    mutating func run(_ step: (inout Int) throws(SpoolError) -> Void) {
        guard failure == nil else { return }
        do throws(SpoolError) {
            try step(&stage)
        } catch {
            failure = error
        }
    }
}
