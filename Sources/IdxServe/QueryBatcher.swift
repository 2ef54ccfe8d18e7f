import Foundation
import IdxBase
import IdxSearch
import NIOCore
import NIOPosix

/// GET /search's queries, searched in batches: every waiting query of the same generation and
/// settings (up to `VectorSearcher.batchLimit`) together (SearchEngine.search(together:): one
/// forward, one read of the index a pass), so under load the queries share the weights' and the
/// codes' memory traffic. Each query's answer is the one it gets alone. Where they run:
/// - `.eventLoops` (the default): on the event loop that read the request. The queries a loop
///   read in one turn are searched as one batch once it has read them all (a task queued behind
///   their handlers), so no query crosses threads (a hand-off is two thread wake-ups a query;
///   docs/serve.md measures both ways). Off an event loop (Swift's own executor, as in tests),
///   a query is searched at once where it is.
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
    /// Where the next spread answer goes (`spreadAfter`).
    private var spreadTurn = 0

    /// Every loop of the server's group: with `.eventLoops`, a long batch's answers are handed
    /// out among them (`spreadAfter`); unused with `.threads`.
    private let loops: [EventLoop]
    /// A batch that searched this long answers its queries on the group's loops in turn instead
    /// of on its own. A query's handler goes on where it is resumed, and reads the connection's
    /// next request there if it has already come: while one loop spends every turn on a long
    /// search, the handlers it resumes find their next request waiting, never move, and the
    /// other loops idle while this one searches one query at a time (docs/serve.md measures it).
    /// A hand-off costs microseconds; a batch this long, a thousand times more.
    let spreadAfter: Duration

    init(workers: Workers = .eventLoops, scanThreads: ScanThreads = .adaptive, loops: [EventLoop] = [],
         spreadAfter: Duration = .milliseconds(2), idleSeconds: Double = 5) {
        if case .threads(let n) = workers { self.workers = .threads(max(1, n)) } else { self.workers = workers }
        self.scanThreads = scanThreads
        self.loops = loops
        self.spreadAfter = spreadAfter
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

    /// Searches `query` with `engine` (the generation the request took), in a batch.
    func search(_ query: SearchQuery, _ settings: SearchSettings, engine: SearchEngine) async -> Result<[SearchHit], IdxError> {
        if workers == .eventLoops && MultiThreadedEventLoopGroup.currentEventLoop == nil {
            return searchTogether([query], settings, engine: engine)[0]
        }
        return await withCheckedContinuation { continuation in
            enqueue(query, settings, engine: engine) { continuation.resume(returning: $0) }
        }
    }

    /// Queues `query`; `answer` is called with its result on the thread that searched it (with
    /// `.eventLoops`, the event loop this is called on, which must be one), or, after a long
    /// batch while another loop idled, on one of `loops` (`spreadAfter`).
    func enqueue(_ query: SearchQuery, _ settings: SearchSettings, engine: SearchEngine,
                 answer: @escaping @Sendable (Result<[SearchHit], IdxError>) -> Void) {
        let w = Waiting(query: query, settings: settings, engine: engine, answer: answer)
        switch workers {
        case .eventLoops:
            guard let loop = MultiThreadedEventLoopGroup.currentEventLoop else {
                preconditionFailure("QueryBatcher.enqueue with .eventLoops off an event loop")
            }
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
        let clock = ContinuousClock(), start = clock.now
        let results = searchTogether(batch.map(\.query), first.settings, engine: first.engine)
        let long = workers == .eventLoops && loops.count > 1 && clock.now - start >= spreadAfter
        let (spread, turn) = condition.withLock { () -> (Bool, Int) in
            batches += 1; batchedQueries += batch.count
            // Only while a loop is idle: when every loop is searching, each keeps its own.
            let spread = long && running < loops.count - 1
            if spread { spreadTurn += batch.count }
            return (spread, spreadTurn)
        }
        for (i, (w, result)) in zip(batch, results).enumerated() {
            if spread {
                loops[(turn + i) % loops.count].execute { w.answer(result) }
            } else {
                w.answer(result)
            }
        }
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
