import COpenBLAS
import Foundation
import IdxBase
import IdxCorpus
import Synchronization

/// The one corpus embedder: mean-pooled embeddings of documents `range` of a corpus, on
/// worker threads. `idx index` (each rank of `--procs N` on its share) and nightly's index
/// stage both call it.
///
/// One model per worker thread (an EncoderModel is not thread-safe; workers share the
/// weights), single-threaded BLAS in each, blocks of documents taken in turn; each block lands
/// at its own offset. A block is a whole number of batches, so the batches, and therefore the
/// vectors, are the same whatever the number of threads.
public struct CorpusEmbedder {
    /// Worker threads; 0: the cores, divided between `ranks`.
    public var threads = 0
    /// Documents per inference batch.
    public var batchSize = 32
    /// Tokens per document, [BOS]/[EOS] included; nil: the length the model was trained on.
    public var maxTokens: Int?
    /// Processes sharing this machine's cores (the ranks of `idx index --procs N`).
    public var ranks = 1
    /// Who embeds, for the progress line and the summary ("index:", "index: rank 1"); nil: silent.
    public var progressLabel: String?

    public init(threads: Int = 0, batchSize: Int = 32, maxTokens: Int? = nil, ranks: Int = 1, progressLabel: String? = nil) {
        self.threads = threads; self.batchSize = batchSize; self.maxTokens = maxTokens
        self.ranks = ranks; self.progressLabel = progressLabel
    }

    /// range.count × dModel floats, row-major, and the seconds it took.
    public func embed(_ model: EncoderModel, _ tokens: TokenizedCorpus, range: Range<Int>) -> (vectors: [Float], seconds: Double) {
        let n = range.count, d = model.config.dModel, first = range.lowerBound
        let maxTokens = self.maxTokens ?? model.trainedMaxTokens
        let progress = Progress((progressLabel ?? "") + " embedding", unit: "docs", total: Double(n), enabled: progressLabel != nil)
        let cores = max(1, Cores.available / ranks)
        let workers = max(1, min(threads > 0 ? threads : cores, n / 256 + 1))
        if workers > 1 || ranks > 1 || threads == 1 { openblas_set_num_threads(1) }
        // Worker w uses only models[w] (its own buffers; the weights they share are only read).
        let models = SharedWithWorkers([model] + (1 ..< workers).map { _ in model.worker() })
        let batchSize = self.batchSize
        let step = max(batchSize * 8, 256)
        let blocks = (n + step - 1) / step
        var out = [Float](repeating: 0, count: n * d)
        // Documents embedded so far, counted once a block; the progress line is drawn only
        // while `done` is held.
        let done = Mutex(0)
        let line = SharedWithWorkers(progress)
        out.withUnsafeMutableBufferPointer { o in
            // Each block writes only its own rows.
            let o = SharedWithWorkers(o.baseAddress!)
            DispatchQueue.concurrentPerform(iterations: workers) { w in
                var b = w
                while b < blocks {
                    let block = b * step ..< min(n, (b + 1) * step)
                    models.value[w].embed(tokens, range: first + block.lowerBound ..< first + block.upperBound, maxTokens: maxTokens,
                                          batchSize: batchSize, into: o.value + block.lowerBound * d)
                    done.withLock { $0 += block.count; line.value.update(Double($0)) }
                    b += workers
                }
            }
        }
        let seconds = progress.elapsed
        if let label = progressLabel {
            progress.finish(String(format: "%@ embedded %d documents in %.2fs (%.0f docs/s)", label, n, seconds, Double(n) / max(seconds, 1e-9)))
        }
        return (out, seconds)
    }
}
