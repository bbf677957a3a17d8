import Dispatch
import Foundation

/// Group commit: sessions that finish DATA at about the same time share the two device rounds of a commit; no
/// session is answered 250 before the batch that holds its message is durable (`docs/durability.md`).
///
/// There is no waiting window. One batch runs at a time on a private queue; requests that arrive while it runs wait
/// for it to end and then all go in the next batch. A lone session therefore commits at once, exactly as
/// `Spool.commit(_:envelope:)` would, and under load the batches grow by themselves with the number of sessions
/// waiting, up to `maximumBatch`. Each completion gets its own message's result, and only after the batch's
/// directory fsync: no caller can answer 250 for a message that is not yet durable.
public final class GroupCommit: @unchecked Sendable {
    public typealias Completion = @Sendable (Result<Void, SpoolError>) -> Void

    private struct Request {
        let pending: PendingCommit
        let completion: Completion
    }

    private let spool: Spool
    private let maximumBatch: Int
    private let queue: DispatchQueue
    private let lock = NSLock()
    private var waiting: [Request] = []
    private var running = false

    /// Batches run and messages committed through them (read with `counts`).
    private var batches = 0
    private var messages = 0

    /// `queue` must be serial (a test passes a suspended one to line requests up deterministically).
    public init(
        spool: Spool, maximumBatch: Int = 256, queue: DispatchQueue = DispatchQueue(label: "dualmta.group-commit")
    ) {
        self.spool = spool
        self.maximumBatch = max(1, maximumBatch)
        self.queue = queue
    }

    /// Queues a message for the next batch. `completion` runs on the commit queue: hop to your own queue in it.
    public func submit(_ message: IncomingMessage, envelope: Envelope, completion: @escaping Completion) {
        let startBatch: Bool = lock.withLock {
            waiting.append(
                Request(pending: PendingCommit(message: message, envelope: envelope), completion: completion))
            if running { return false }
            running = true
            return true
        }
        if startBatch { queue.async { self.drain() } }
    }

    /// Runs batches until nobody is waiting.
    private func drain() {
        while true {
            let batch: [Request] = lock.withLock {
                let taken = Array(waiting.prefix(maximumBatch))
                waiting.removeFirst(taken.count)
                if taken.isEmpty { running = false }
                return taken
            }
            if batch.isEmpty { return }
            let results = spool.commit(batch.map(\.pending))
            lock.withLock {
                batches += 1
                messages += batch.count
            }
            for (request, result) in zip(batch, results) {
                request.completion(result)
            }
        }
    }

    /// Batches run and messages committed through them, so far.
    public var counts: (batches: Int, messages: Int) {
        lock.withLock { (batches, messages) }
    }
}
