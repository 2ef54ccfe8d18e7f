import Foundation
import IdxBase
import IdxSearch
import NIOCore

/// GET /search's queries, searched in batches: every waiting query of the same generation and
/// settings (up to `VectorSearcher.batchLimit`) together (SearchEngine.search(together:): one
/// forward, one read of the index a pass), so under load the queries share the weights' and the
/// codes' memory traffic. Each query's answer is the one it gets alone. Where they run:
/// - `.eventLoops` (the default): on the event loop of the query's connection. The queries a
///   loop read in one turn are searched as one batch once it has read them all (a task queued
///   behind their handlers), and each answer resumes its handler on that loop, which then writes
///   the response and reads the next request there: no query crosses threads (a hand-off is two
///   thread wake-ups a query; docs/serve.md measures both ways). The connection's loop is the
///   handler's own once ConnectionLoopMiddleware has moved it there (why: its doc); a query
///   queued from another thread hops to it. Without a loop (tests), a query is searched at once
///   where it is.
/// - `.threads(n)`: on up to `n` threads of their own, which keeps the event loops free to read
///   requests (and answer /healthz) while long searches run. A thread ends after `idleSeconds`
///   without work and is started again when needed; alone, a request is a batch of one at once.
final class QueryBatcher: @unchecked Sendable {
    enum Workers: Equatable, Sendable {
        case eventLoops
        case threads(Int)
    }

    private struct Waiting {
        let query: SearchQuery
        let settings: SearchSettings
        let engine: SearchEngine
        let answer: @Sendable (Result<[SearchHit], IdxError>) -> Void
    }

    /// One event loop's waiting queries; touched only on that loop's thread.
    private final class LoopQueue: @unchecked Sendable {
        var waiting: [Waiting] = []
        var scheduled = false
    }

    let workers: Workers
    let scanThreads: ScanThreads
    let idleSeconds: Double
    /// Batches searched, and the queries in them (read by tests).
    private(set) var batches = 0, batchedQueries = 0

    private let condition = NSCondition()
    private var waiting: [Waiting] = []
    private var threads = 0, idle = 0
    private var loopQueues: [ObjectIdentifier: LoopQueue] = [:]
    /// Searches running now, on any thread (`scanning`).
    private var running = 0
    init(workers: Workers = .eventLoops, scanThreads: ScanThreads = .adaptive, idleSeconds: Double = 5) {
        if case .threads(let n) = workers { self.workers = .threads(max(1, n)) } else { self.workers = workers }
        self.scanThreads = scanThreads
        self.idleSeconds = idleSeconds
    }

    /// Runs one search of the server (a batch, a POST's queries, a "more like this") with the
    /// scan threads `scanThreads` gives it now (SearchSettings.threads: 0 is every core).
    func scanning<R>(_ body: (_ threads: Int) throws -> R) rethrows -> R {
        let threads = condition.withLock { () -> Int in
            running += 1
            switch scanThreads {
            case .fixed(let n): return n
            case .adaptive: return running == 1 ? 0 : 1
            }
        }
        defer { condition.withLock { running -= 1 } }
        return try body(threads)
    }

    /// `engine.search(together:)` under `scanning`.
    private func searchTogether(_ queries: [SearchQuery], _ settings: SearchSettings, engine: SearchEngine) -> [Result<[SearchHit], IdxError>] {
        scanning { threads in
            var s = settings
            s.threads = threads
            return engine.search(together: queries, s)
        }
    }

    /// Searches `query` with `engine` (the generation the request took), in a batch; `loop` is
    /// the event loop of the request's connection (nil: with `.eventLoops`, searched at once).
    func search(_ query: SearchQuery, _ settings: SearchSettings, engine: SearchEngine, loop: EventLoop?) async -> Result<[SearchHit], IdxError> {
        if workers == .eventLoops && loop == nil {
            return searchTogether([query], settings, engine: engine)[0]
        }
        return await withCheckedContinuation { continuation in
            enqueue(query, settings, engine: engine, loop: loop) { continuation.resume(returning: $0) }
        }
    }

    /// Queues `query` (from any thread); `answer` is called with its result on the thread that
    /// searched it: with `.eventLoops`, `loop`, the connection's (required there).
    func enqueue(_ query: SearchQuery, _ settings: SearchSettings, engine: SearchEngine, loop: EventLoop?,
                 answer: @escaping @Sendable (Result<[SearchHit], IdxError>) -> Void) {
        let w = Waiting(query: query, settings: settings, engine: engine, answer: answer)
        switch workers {
        case .eventLoops:
            guard let loop else { preconditionFailure("QueryBatcher.enqueue with .eventLoops and no loop") }
            if loop.inEventLoop {
                enqueue(w, on: loop)
            } else {
                loop.execute { [self] in enqueue(w, on: loop) }
            }
        case .threads(let maxThreads):
            condition.lock()
            waiting.append(w)
            if idle > 0 {
                condition.signal()
            } else if threads < maxThreads {
                threads += 1
                // Named from inside: Foundation on Linux names only the current thread.
                Thread { [self] in Thread.current.name = "idx-search"; work() }.start()
            }
            condition.unlock()
        }
    }

    /// Queues `w` on `loop`'s queue (on `loop`), and the batch that will search it.
    private func enqueue(_ w: Waiting, on loop: EventLoop) {
        let queue = condition.withLock { () -> LoopQueue in
            if let q = loopQueues[ObjectIdentifier(loop)] { return q }
            let q = LoopQueue()
            loopQueues[ObjectIdentifier(loop)] = q
            return q
        }
        queue.waiting.append(w)
        guard !queue.scheduled else { return }
        queue.scheduled = true
        loop.execute { [self] in
            queue.scheduled = false
            while !queue.waiting.isEmpty {
                let (batch, rest) = Self.batch(from: queue.waiting)
                queue.waiting = rest
                search(batch)
            }
        }
    }

    /// A search thread: batches while there are queries, then waits; ends when idle too long.
    private func work() {
        condition.lock()
        while true {
            while waiting.isEmpty {
                idle += 1
                let signalled = condition.wait(until: Date(timeIntervalSinceNow: idleSeconds))
                idle -= 1
                if !signalled && waiting.isEmpty {
                    threads -= 1
                    condition.unlock()
                    return
                }
            }
            let (batch, rest) = Self.batch(from: waiting)
            waiting = rest
            condition.unlock()
            search(batch)
            condition.lock()
        }
    }

    private func search(_ batch: [Waiting]) {
        let first = batch[0]
        let results = searchTogether(batch.map(\.query), first.settings, engine: first.engine)
        condition.withLock { batches += 1; batchedQueries += batch.count }
        for (w, result) in zip(batch, results) { w.answer(result) }
    }

    /// The oldest waiting query and every other one that can share its batch, and the rest.
    private static func batch(from waiting: [Waiting]) -> (batch: [Waiting], rest: [Waiting]) {
        let first = waiting[0]
        var taken: [Waiting] = [], rest: [Waiting] = []
        for w in waiting {
            if taken.count < VectorSearcher.batchLimit && w.engine === first.engine && w.settings == first.settings {
                taken.append(w)
            } else {
                rest.append(w)
            }
        }
        return (taken, rest)
    }
}
