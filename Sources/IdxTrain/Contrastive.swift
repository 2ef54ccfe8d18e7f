import CSupport
import COpenBLAS
import Foundation
import IdxBase
import IdxParallel
import IdxCorpus
import IdxLexical
import IdxModel

/// Contrastive fine-tuning after MLM: two views of each document of a batch (by default a short
/// span of it and the rest; see `pairs`) should embed closer to each other than to the other documents'
/// views (InfoNCE with in-batch negatives, on the same mean-pooled embeddings idx index stores).
/// MLM alone leaves mean-pooled embeddings poor for similarity: this trains the geometry search
/// uses. Runs as the last `steps` of the run.
public struct ContrastiveOptions: Codable, Equatable, Sendable {
    public var steps = 0
    /// Documents per step (2 × views in the packed batch).
    public var batchSize = 64
    public var lr: Float = 1e-4
    /// 0.05: a span has one true context among the batch's, and a sharp softmax weighs the
    /// closest wrong ones most (the inverse-cloze runs of docs/search-quality.md all used it).
    public var temperature: Float = 0.05
    /// Shortest crop, as a share of the document's words.
    public var minCrop = 0.5
    /// Share of the crop's words deleted.
    public var deletion = 0.15
    /// The two views of each document (ContrastivePairs).
    public var pairs = ContrastivePairs.span
    public var neighbours = 5
    public init() {}

    /// Refuses options no run can train with, against a run of `totalSteps` steps.
    public func validate(totalSteps: Int) throws {
        guard steps >= 0, steps <= totalSteps, batchSize >= 2, lr > 0, lr.isFinite, temperature > 0,
              (0 ... 1).contains(minCrop), (0 ..< 1).contains(deletion) else {
            throw IdxError("contrastive options \(self): --contrastive-steps must be at most --steps, the batch at least 2, the learning rate and temperature positive.")
        }
    }
}

/// The two views of a contrastive pair.
public enum ContrastivePairs: String, Codable, CaseIterable, Sendable {
    /// The document split in two disjoint parts: a span of 40-60% of its tokens, and the tokens
    /// around it. Halves share no word by construction, so matching them takes the topic, not
    /// the wording: document ↔ document, as "more like this" asks.
    case halves
    /// Two overlapping crops of the same document, then deletions.
    case `self`
    /// A crop of the document and a crop of one of its `neighbours` nearest other documents by
    /// BM25 (the trainer needs `lexicalNeighbours`).
    case bm25
    /// The inverse cloze task (Lee et al. 2019): a short span of 2-8 tokens ↔ the rest of the
    /// document (the span left in it one time in ten). A typed query is a handful of words,
    /// often not the synopsis's own: this trains the query ↔ document shape search answers.
    case span
    /// `span` pairs whose span names something: drawn again (up to 4 times) while fewer than half
    /// of its tokens are content words (in fewer than about 10% of documents). A typed query
    /// names things ("robot", "emotions"); a span such as "and his" or "of the" names nothing,
    /// and its pair teaches only where in a synopsis function words fall.
    case contentSpan = "content-span"
    /// `span` pairs whose batch is half look-alikes: every second document is one of the
    /// previous document's BM25 `neighbours`, so that each span meets a near miss among its
    /// negatives (hard negatives mined by BM25; the trainer needs `lexicalNeighbours`).
    case spanNeighbours = "span-neighbours"
    /// Half of each batch `span` pairs, the other half `halves`.
    case mixed
    /// A few of the document's rarest words (2-6 of its 12 highest-idf distinct tokens, in
    /// document order) ↔ the document, those words taken out of it one time in two: the shape of
    /// a query that names what a film is about in words the synopsis may not share.
    case keywords
}

/// For every document of a corpus, its nearest other documents by BM25 (the document's own
/// words as the query), best first: the positives of `pairs = "bm25"`.
public enum LexicalNeighbours {
    public static func compute(descriptions: [String], count k: Int, threads: Int) throws -> [[Int32]] {
        let segment = try LexicalSegmentReader(bytes: LexicalSegmentBuilder.encode(descriptions), source: "the corpus's BM25 neighbours")
        let scorer = BM25Scorer(segments: [segment])
        let n = descriptions.count, w = max(1, threads)
        var out = [[Int32]](repeating: [], count: n)
        // Scoring only reads the scorer (immutable, over memory-mapped segments).
        let shared = SharedWithWorkers(scorer)
        let failure = FirstError()  // (none expected: the segment was checked whole when opened)
        out.withUnsafeMutableBufferPointer { o in
            // Thread t writes only the rows i ≡ t (mod w).
            let o = SharedWithWorkers(o)
            DispatchQueue.concurrentPerform(iterations: w) { t in
                let scorer = shared.value
                var scores = [Float](repeating: 0, count: n)
                do {
                    for i in stride(from: t, to: n, by: w) {
                        var top = TopK(capacity: k + 1)
                        let q = try scorer.query(terms: LexicalAnalyzer.terms(descriptions[i]))
                        scores.withUnsafeMutableBufferPointer { s in
                            scorer.score(q, into: s.baseAddress!)
                            for j in 0 ..< n where j != i && s[j] > top.threshold { top.push(s[j], j) }
                        }
                        o.value[i] = top.ranked().prefix(k).map { Int32($0) }
                    }
                } catch {
                    failure.record(error)
                }
            }
        }
        try failure.rethrow()
        return out
    }
}

/// InfoNCE over B pairs of pooled embeddings, symmetric (view a → b and b → a), cosine / τ.
enum ContrastiveLoss {
    /// z: 2B × C (rows 0..<B the first views, B..<2B the second). Returns the loss (mean of the
    /// two directions' mean cross-entropies) and writes ∂loss/∂z into dz (2B × C).
    static func forwardBackward(_ z: UnsafePointer<Float>, _ dz: UnsafeMutablePointer<Float>, pairs b: Int, dim c: Int,
                                temperature tau: Float) -> Double {
        // B, C: unit rows u = z / |z|
        var u = [Float](repeating: 0, count: 2 * b * c), r = [Float](repeating: 0, count: 2 * b)
        for i in 0 ..< 2 * b {
            var s: Float = 0
            for k in 0 ..< c { s += z[i * c + k] * z[i * c + k] }
            r[i] = max(s.squareRoot(), 1e-12)
            for k in 0 ..< c { u[i * c + k] = z[i * c + k] / r[i] }
        }
        // S = Ua Ubᵀ / τ  (B × B)
        var sim = [Float](repeating: 0, count: b * b)
        u.withUnsafeBufferPointer { up in
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(b), Int32(b), Int32(c), 1 / tau,
                        up.baseAddress!, Int32(c), up.baseAddress! + b * c, Int32(c), 0, &sim, Int32(b))
        }
        // dS = (softmax by rows − I + softmax by columns − I) / 2B
        var dS = [Float](repeating: 0, count: b * b)
        var loss = 0.0
        for pass in 0 ..< 2 {
            for i in 0 ..< b {
                @inline(__always) func at(_ j: Int) -> Int { pass == 0 ? i * b + j : j * b + i }
                var mx = -Double.infinity
                for j in 0 ..< b { mx = max(mx, Double(sim[at(j)])) }
                var sum = 0.0
                for j in 0 ..< b { sum += Foundation.exp(Double(sim[at(j)]) - mx) }
                loss += (mx + Foundation.log(sum) - Double(sim[at(i)])) / Double(2 * b)
                for j in 0 ..< b {
                    let p = Foundation.exp(Double(sim[at(j)]) - mx) / sum
                    dS[at(j)] += Float((p - (i == j ? 1 : 0)) / Double(2 * b))
                }
            }
        }
        // dUa = dS Ub / τ, dUb = dSᵀ Ua / τ, then through the normalisation.
        var du = [Float](repeating: 0, count: 2 * b * c)
        u.withUnsafeBufferPointer { up in
            du.withUnsafeMutableBufferPointer { dp in
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(b), Int32(c), Int32(b), 1 / tau,
                            dS, Int32(b), up.baseAddress! + b * c, Int32(c), 0, dp.baseAddress!, Int32(c))
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(b), Int32(c), Int32(b), 1 / tau,
                            dS, Int32(b), up.baseAddress!, Int32(c), 0, dp.baseAddress! + b * c, Int32(c))
            }
        }
        for i in 0 ..< 2 * b {
            var dot: Float = 0
            for k in 0 ..< c { dot += du[i * c + k] * u[i * c + k] }
            for k in 0 ..< c { dz[i * c + k] = (du[i * c + k] - dot * u[i * c + k]) / r[i] }
        }
        return loss
    }
}

extension Trainer {
    var contrastive: ContrastiveOptions { options.contrastive ?? ContrastiveOptions() }

    /// Whether step `step` (1-based) is one of the contrastive steps at the end of the run.
    public func isContrastive(step: Int) -> Bool {
        let k = contrastive.steps
        return k > 0 && step > options.steps - k
    }

    /// A view of `slot`'s document at `step`: a random crop, then random deletions, wrapped
    /// [BOS] … [EOS] and cut like a training document. A pure function of (seed, step, slot, view).
    func contrastiveView(step: Int, slot: Int, view: Int) -> [Int32] {
        var doc = document(step: step, slot: slot)
        var g = SplitMix64(state: SplitMix64.derive([options.seed, UInt64(step), UInt64(slot)], .contrastiveView(view)))
        let o = contrastive
        if o.pairs == .spanNeighbours, slot % 2 == 1, let near = lexicalNeighbours?[document(step: step, slot: slot - 1)], !near.isEmpty {
            // Both views of this slot come from the same look-alike: the choice depends on the slot, not the view.
            doc = Int(near[Int(SplitMix64.derive([options.seed, UInt64(step), UInt64(slot)], .lookAlike) % UInt64(near.count))])
        }
        if view == 1, o.pairs == .bm25, let near = lexicalNeighbours?[doc], !near.isEmpty {
            doc = Int(near[Int(g.next() % UInt64(near.count))])
        }
        let ids = Array(corpus.document(doc))
        if o.pairs == .keywords && ids.count >= 3 {
            let (words, dropFromContext) = keywordView(ids, seed: SplitMix64.derive([options.seed, UInt64(step), UInt64(slot)], .keywords))
            let part = view == 0 ? ids.filter { words.contains($0) }.reduce(into: [Int32]()) { if !$0.contains($1) { $0.append($1) } }
                : dropFromContext ? ids.filter { !words.contains($0) } : ids
            return wrapDocument((part.isEmpty ? ids : part)[...], maxTokens: options.maxLen)
        }
        let spanPair = o.pairs == .span || o.pairs == .contentSpan || o.pairs == .spanNeighbours || (o.pairs == .mixed && slot % 2 == 1)
        if spanPair && ids.count >= 3 {
            let pairSeed = SplitMix64.derive([options.seed, UInt64(step), UInt64(slot)], .spanSplit)
            let (start, end, keepInContext) = o.pairs == .contentSpan ? contentSpanSplit(ids, seed: pairSeed)
                : Self.spanSplit(count: ids.count, seed: pairSeed)
            let part = view == 0 ? Array(ids[start ..< end]) : keepInContext ? ids : Array(ids[..<start] + ids[end...])
            return wrapDocument(part[...], maxTokens: options.maxLen)
        }
        if (o.pairs == .halves || o.pairs == .mixed) && ids.count >= 2 {
            let (start, end) = Self.halvesSplit(count: ids.count, seed: SplitMix64.derive([options.seed, UInt64(step), UInt64(slot)], .halvesSplit))
            let part = view == 0 ? Array(ids[start ..< end]) : Array(ids[..<start] + ids[end...])
            return wrapDocument(part[...], maxTokens: options.maxLen)
        }
        var crop = ids[...]
        if ids.count > 4 {
            let shortest = max(2, Int((Double(ids.count) * o.minCrop).rounded(.up)))
            let n = shortest + Int(g.next() % UInt64(ids.count - shortest + 1))
            let start = Int(g.next() % UInt64(ids.count - n + 1))
            crop = ids[start ..< start + n]
        }
        var kept = crop.filter { _ in g.nextDouble() >= o.deletion }
        if kept.isEmpty { kept = Array(crop) }
        return wrapDocument(kept[...], maxTokens: options.maxLen)
    }

    /// The span [start, end) of a `count`-token document that is the first of its two halves
    /// (40-60% of the tokens, at least one, never all): the second half is the rest. A pure
    /// function of the seed, which both views share.
    static func halvesSplit(count: Int, seed: UInt64) -> (start: Int, end: Int) {
        var g = SplitMix64(state: seed)
        let n = min(count - 1, max(1, Int(Double(count) * (0.4 + 0.2 * g.nextDouble()))))
        let start = Int(g.next() % UInt64(count - n + 1))
        return (start, start + n)
    }

    /// The span [start, end) of a `count`-token document (at least 3) that is the query side of
    /// an inverse-cloze pair: 2-8 tokens, at most a third of the document, and whether the
    /// context keeps it (one time in ten, so that word overlap still counts for something).
    /// A pure function of the seed, which both views share.
    static func spanSplit(count: Int, seed: UInt64) -> (start: Int, end: Int, keepInContext: Bool) {
        var g = SplitMix64(state: seed)
        let n = min(max(1, count / 3), 2 + Int(g.next() % 7))
        let start = Int(g.next() % UInt64(count - n + 1))
        return (start, start + n, g.nextDouble() < 0.1)
    }

    /// Tokens whose idf is above this are content words for `content-span` (idf 2.3: in fewer
    /// than about 10% of documents).
    static let contentIDF: Float = 2.3

    /// The span of a `content-span` pair: `spanSplit`'s, drawn again from the pair's redraw
    /// stream while fewer than half of its tokens are content words, at most 4 times (the last
    /// draw is kept whatever it holds). A pure function of the document and the seed.
    func contentSpanSplit(_ ids: [Int32], seed: UInt64) -> (start: Int, end: Int, keepInContext: Bool) {
        let idf = tokenIDF
        var split = Self.spanSplit(count: ids.count, seed: seed)
        var redraws = SplitMix64(state: seed ^ RandomStream.contentSpanRedraw.rawValue)
        for _ in 0 ..< 4 {
            let content = ids[split.start ..< split.end].filter { $0 >= 0 && Int($0) < idf.count && idf[Int($0)] > Self.contentIDF }.count
            if 2 * content >= split.end - split.start { break }
            split = Self.spanSplit(count: ids.count, seed: redraws.next())
        }
        return split
    }

    /// The keywords of a `keywords` pair: 2-6 tokens drawn from the document's 12 highest-idf
    /// distinct tokens (specials and [UNK] never), and whether the context loses them. A pure
    /// function of the document and the seed, which both views share.
    func keywordView(_ ids: [Int32], seed: UInt64) -> (Set<Int32>, Bool) {
        var g = SplitMix64(state: seed)
        let idf = tokenIDF
        let distinct = Array(Set(ids.filter { Int($0) >= SpecialToken.names.count && Int($0) < idf.count }))
            .sorted { idf[Int($0)] != idf[Int($1)] ? idf[Int($0)] > idf[Int($1)] : $0 < $1 }
        var pool = Array(distinct.prefix(12))
        let n = min(pool.count, 2 + Int(g.next() % 5))
        var words = Set<Int32>()
        while words.count < n { words.insert(pool.remove(at: Int(g.next() % UInt64(pool.count)))) }
        return (words, g.nextDouble() < 0.5)
    }

    /// One contrastive step on this process: `computeContrastiveGradients`, then clipped AdamW
    /// at `contrastive.lr`. Returns the loss and the tokens processed.
    public func contrastiveStep() throws -> (loss: Double, tokens: Int) {
        let r = try computeContrastiveGradients(step: step + 1)
        applyUpdate(lr: contrastive.lr)
        return r
    }

    /// Zeroes the gradients, then: both views of `contrastive.batchSize` documents of `step`,
    /// forward with dropout, InfoNCE on the pooled embeddings, backward into `gradients`.
    /// With several ranks, each computes the views `views` of the 2B only: `gather` must then
    /// fill in the other ranks' rows of the pooled embeddings (2B × C, the others' rows zero on
    /// entry), so that every rank computes the same loss and backpropagates its own rows.
    func computeContrastiveGradients(step s: Int, views: Range<Int>? = nil,
                                     gather: (inout [Float]) throws -> Void = { _ in }) throws -> (loss: Double, tokens: Int) {
        let b = contrastive.batchSize, c = config.dModel
        guard b >= 2 else { throw IdxError("--contrastive-batch \(b): at least 2 documents are needed (the others are the negatives).") }
        // Documents 0..<B are the first views, B..<2B the second; each worker takes a contiguous part.
        let docs = (0 ..< 2 * b).map { (slot: $0 % b, view: $0 / b) }
        let mine = views ?? 0 ..< 2 * b
        let w = max(1, min(workers.count, mine.count))
        if w > 1 && !Trainer.blasSingleThreaded { openblas_set_num_threads(1); Trainer.blasSingleThreaded = true }
        let parts = (0 ..< w).map { i in mine.lowerBound + mine.count * i / w ..< mine.lowerBound + mine.count * (i + 1) / w }
        let batches: [PackedBatch] = parts.map { part in
            var batch = PackedBatch()
            for d in part {
                batch.append(document: contrastiveView(step: s, slot: docs[d].slot, view: docs[d].view))
                batch.dropoutSeeds.append(SplitMix64.derive([options.seed, UInt64(s), UInt64(d)], .contrastiveDropout))
            }
            return batch
        }
        // Worker i uses only workers[i] (its own gradients and activations; the parameters they
        // share are only read).
        let nets = SharedWithWorkers(workers)
        var pooled = [Float](repeating: 0, count: 2 * b * c)
        pooled.withUnsafeMutableBufferPointer { zp in
            // Worker i writes only the rows of its own documents, parts[i].
            let zp = SharedWithWorkers(zp.baseAddress!)
            DispatchQueue.concurrentPerform(iterations: w) { i in
                idx_flush_denormals()
                let workers = nets.value
                workers[i].grads.zero(workers[i].parameterCount)
                workers[i].forward(batches[i], training: true)
                let z = meanPool(workers[i].output, docStart: batches[i].docStart, c: c)
                z.withUnsafeBufferPointer { (zp.value + parts[i].lowerBound * c).update(from: $0.baseAddress!, count: z.count) }
            }
        }
        try gather(&pooled)
        var dz = [Float](repeating: 0, count: 2 * b * c)
        let loss = pooled.withUnsafeBufferPointer { zp in
            dz.withUnsafeMutableBufferPointer { ContrastiveLoss.forwardBackward(zp.baseAddress!, $0.baseAddress!, pairs: b, dim: c, temperature: contrastive.temperature) }
        }
        guard loss.isFinite else {
            throw IdxError("step \(s): the contrastive loss is \(loss); training diverged. Lower --contrastive-lr; the last checkpoint is kept.")
        }
        dz.withUnsafeBufferPointer { dzp in
            let dzp = SharedWithWorkers(dzp.baseAddress!)  // only read
            DispatchQueue.concurrentPerform(iterations: w) { i in
                idx_flush_denormals()
                // The mean pool spreads a document's gradient evenly over its rows.
                let batch = batches[i]
                var dHidden = [Float](repeating: 0, count: batch.rowCount * c)
                for d in 0 ..< batch.docCount {
                    let rows = batch.docStart[d] ..< batch.docStart[d + 1]
                    let g = dzp.value + (parts[i].lowerBound + d) * c
                    let inv = 1 / Float(rows.count)
                    for r in rows { for k in 0 ..< c { dHidden[r * c + k] = g[k] * inv } }
                }
                dHidden.withUnsafeBufferPointer { nets.value[i].backward(batch, hiddenGradient: $0.baseAddress!) }
            }
        }
        sumWorkerGradients(w)
        return (loss, batches.reduce(0) { $0 + $1.rowCount })
    }
}
