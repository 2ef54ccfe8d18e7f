import Foundation
import IdxBase
import IdxSearch

/// GET /search's queries, searched in batches on threads of their own. A request hands its
/// query over and waits; a search thread takes every waiting query of the same generation and
/// settings (up to `VectorSearcher.batchLimit`) and searches them together
/// (SearchEngine.search(together:): one forward, one read of the index a pass), so under load
/// the queries share the weights' and the codes' memory traffic. The event loops meanwhile
/// keep reading requests, which is what lets a batch form; alone, a request is a batch of one
/// at once (nothing waits for a timer). Each query's answer is the one it gets alone.
/// A search thread ends after `idleSeconds` without work and is started again when needed.
final class QueryBatcher: @unchecked Sendable {
    private struct Waiting {
        let query: SearchQuery
        let settings: SearchSettings
        let engine: SearchEngine
        let answer: CheckedContinuation<Result<[SearchHit], IdxError>, Never>
    }

    private let condition = NSCondition()
    private var waiting: [Waiting] = []
    private var threads = 0, idle = 0
    /// Search threads at most: one a core (a batch's scan runs on one thread).
    let maxThreads: Int
    let idleSeconds: Double

    init(maxThreads: Int = ProcessInfo.processInfo.activeProcessorCount, idleSeconds: Double = 5) {
        self.maxThreads = max(1, maxThreads)
        self.idleSeconds = idleSeconds
    }

    /// Searches `query` with `engine` (the generation the request took), in a batch.
    func search(_ query: SearchQuery, _ settings: SearchSettings, engine: SearchEngine) async -> Result<[SearchHit], IdxError> {
        await withCheckedContinuation { answer in
            condition.lock()
            waiting.append(Waiting(query: query, settings: settings, engine: engine, answer: answer))
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
            let batch = takeBatch()
            condition.unlock()
            let first = batch[0]
            let results = first.engine.search(together: batch.map(\.query), first.settings)
            for (w, result) in zip(batch, results) { w.answer.resume(returning: result) }
            condition.lock()
        }
    }

    /// The oldest waiting query and every other one that can share its batch (under the lock).
    private func takeBatch() -> [Waiting] {
        let first = waiting[0]
        var taken: [Waiting] = [], rest: [Waiting] = []
        for w in waiting {
            if taken.count < VectorSearcher.batchLimit && w.engine === first.engine && w.settings == first.settings {
                taken.append(w)
            } else {
                rest.append(w)
            }
        }
        waiting = rest
        return taken
    }
}
