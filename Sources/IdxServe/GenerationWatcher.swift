import Foundation
import Logging
import ServiceLifecycle
import IdxBase
import IdxProjection

/// The generation requests are answered from. A request takes the current one once and
/// uses it to the end, so a switch never changes an answer half-way; the old generation is
/// released when its last request finishes (its files are memory-mapped, so a publish that
/// deletes them does not disturb it).
public final class GenerationHolder: @unchecked Sendable {
    private let lock = NSLock()
    private var served: ServedGeneration

    public init(_ generation: ServedGeneration) { served = generation }

    public var current: ServedGeneration { lock.withLock { served } }

    func replace(with generation: ServedGeneration) { lock.withLock { served = generation } }
}

/// Follows `CURRENT`: when it names another generation (or a projection is attached to
/// the served one), opens it off the request path and switches to it. A generation that
/// fails to open is logged and retried at the next check; the old one keeps serving.
public struct GenerationWatcher: Service {
    let index: String
    let holder: GenerationHolder
    let interval: Duration
    let metrics: ServeMetrics
    let logger: Logger

    public func run() async throws {
        var lastFailure: String?
        for await _ in AsyncTimerTicks(interval: interval).cancelOnGracefulShutdown() {
            let served = holder.current
            guard let named = try? String(contentsOfFile: index + "/CURRENT", encoding: .utf8)
                .trimmingCharacters(in: .whitespacesAndNewlines) else { continue }
            let stamp = FileStamp(path: index + "/" + named + "/" + AttachedProjection.fileName)
            if named == served.generation && stamp == served.projectionStamp { continue }
            do {
                let next = try await Self.open(index)
                holder.replace(with: next)
                metrics.servedGeneration(next)
                metrics.reloads.increment()
                lastFailure = nil
                logger.info("serving \(next.generation) (\(next.reader.count) documents, map: \(next.map.method.rawValue), \(next.map.source.rawValue))")
                if let w = next.mapWarning { logger.warning("map: \(w)") }
            } catch {
                metrics.reloadFailures.increment()
                let message = (error as? IdxError)?.message ?? "\(error)"
                if message != lastFailure { logger.error("reload of \(named) failed, still serving \(served.generation): \(message)") }
                lastFailure = message
            }
        }
    }

    /// Opens a generation on a thread of its own: loading reads every id and may compute a
    /// PCA, seconds at a million documents, which must not hold a request thread.
    static func open(_ index: String) async throws -> ServedGeneration {
        try await withCheckedThrowingContinuation { continuation in
            Thread.detachNewThread {
                continuation.resume(with: Result { try ServedGeneration(index: index) })
            }
        }
    }
}

/// Ticks every `interval` until cancelled.
struct AsyncTimerTicks: AsyncSequence, Sendable {
    typealias Element = Void
    let interval: Duration
    struct AsyncIterator: AsyncIteratorProtocol {
        let interval: Duration
        mutating func next() async -> Void? {
            do { try await Task.sleep(for: interval) } catch { return nil }
            return ()
        }
    }
    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(interval: interval) }
}
