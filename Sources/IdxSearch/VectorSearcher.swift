import Foundation
import COpenBLAS
import CSupport
import IdxBase
import IdxCorpus
import IdxStore

public struct SearchHit: Equatable {
    public var index: Int      // global document index in the index
    public var score: Float    // cosine, or the hybrid score when searched with lexical scores
    public var dense: Float    // the cosine part
    public var lexical: Float  // the normalised BM25 part (0 without lexical scores)
    public init(index: Int, score: Float, dense: Float? = nil, lexical: Float = 0) {
        self.index = index; self.score = score; self.dense = dense ?? score; self.lexical = lexical
    }
}

/// Cosine top-k over an index: an int8 scan of every vector (query quantized
/// to int8 too, SIMD integer dot products), then the best
/// `rerank` candidates re-scored in float against their decoded vectors.
public struct VectorSearcher {
    public let reader: VectorIndexReader
    public init(_ reader: VectorIndexReader) { self.reader = reader }

    /// Rows per parallel task.
    static let taskRows = 32768

    /// The int8 dot-product code this CPU runs: "avx512bw", "avx2" or "portable".
    public static var dotKernel: String { String(cString: idx_int8_dots_path()) }

    /// Rows whose int8 dot products are computed in one call (the Int32 results stay in L1).
    static let dotBlock = 1024

    /// The approximate scan of `rows` of one segment into `top`.
    /// With `lexical`, a row scores (1 − w) · cosine + w · lexical[base + row] (w = lexicalWeight).
    /// The int8 dot products run in C (`idx_int8_dots`: AVX-512BW or AVX2 when the CPU has
    /// them, chosen at run time; Swift alone builds for the 128-bit SSE2 baseline).
    static func scan(_ s: SegmentReader, rows: Range<Int>, q8: UnsafePointer<Int8>, qScale: Float, qCentroids: [Float],
                     allowed: [Bool]?, excluded: Int, base: Int, lexical: UnsafePointer<Float>?, lexicalWeight w: Float,
                     into top: inout TopK) {
        let d = s.dimension
        var dots = [Int32](repeating: 0, count: min(dotBlock, rows.count))
        s.scales.withUnsafeBufferPointer { scales in
            s.norms.withUnsafeBufferPointer { norms in
                s.genreIds.withUnsafeBufferPointer { genres in s.centroidIds.withUnsafeBufferPointer { cids in qCentroids.withUnsafeBufferPointer { qc in
                    dots.withUnsafeMutableBufferPointer { dots in
                        var threshold = top.threshold
                        for start in stride(from: rows.lowerBound, to: rows.upperBound, by: dotBlock) {
                            let n = min(dotBlock, rows.upperBound - start)
                            idx_int8_dots(s.codes + start * d, n, d, q8, dots.baseAddress!)
                            for r in 0 ..< n {
                                let i = start + r
                                var score = norms[i] * (qc[Int(cids[i])] + scales[i] * qScale * Float(dots[r]))
                                if let lexical { score = (1 - w) * score + w * lexical[base + i] }
                                if score > threshold {
                                    if let allowed, !allowed[Int(genres[i])] { continue }
                                    if base + i == excluded { continue }
                                    top.push(score, base + i)
                                    threshold = top.threshold
                                }
                            }
                        }
                    }
                } } }
            }
        }
    }

    /// The `k` best documents for a unit query (already `prepareQuery`'d).
    /// `genre` keeps documents of that genre only (case-insensitive); `excluding` is a document
    /// no pass returns (leave-one-out). `lexical`: hybrid
    /// scoring with these per-document BM25 scores (see HybridScoring). `feedback`: a second
    /// pass with the query moved toward its first pass's best hits (RelevanceFeedback); the
    /// hits' `dense` is then the cosine with that moved query, and their `lexical` the BM25 of
    /// the expanded query when `lexical.expanded` is given.
    public func search(_ query: [Float], k: Int, genre: String? = nil, excluding: Int? = nil, threads: Int = 0,
                       rerank: Int? = nil, lexical: LexicalScores? = nil,
                       feedback: RelevanceFeedback? = nil, fusion: Fusion = .blend) throws -> [SearchHit] {
        let filter = SearchFilter(genre: genre, excluding: excluding)
        func pass(_ q: [Float], k: Int, lexical: LexicalScores?) throws -> [SearchHit] {
            if fusion == .reciprocalRank, let lexical, lexical.weight > 0, lexical.weight < 1 {
                return try reciprocalRankFusion(q, k: k, filter: filter, threads: threads, rerank: rerank, lexical: lexical)
            }
            return try scanAndRerank(q, k: k, filter: filter, threads: threads, rerank: rerank, lexical: lexical)
        }
        // BM25 alone (w = 1) has no dense side to move.
        guard let feedback, feedback.isActive, (lexical?.weight ?? 0) < 1 else {
            return try pass(query, k: k, lexical: lexical)
        }
        let d = reader.dimension
        let first = try pass(query, k: max(k, feedback.documents), lexical: lexical).prefix(feedback.documents)
        var rows = [Float](repeating: 0, count: first.count * d)
        let moved = rows.withUnsafeMutableBufferPointer { p -> [Float] in
            for (i, h) in first.enumerated() { reconstruct(h.index, into: p.baseAddress! + i * d) }
            return feedback.expanded(query, rows: p.baseAddress!, count: first.count, dim: d)
        }
        var second = lexical
        if let expand = lexical?.expanded, feedback.isLexical { second!.scores = expand(first.map(\.index)) }
        return try pass(moved, k: k, lexical: second)
    }

    /// How the dense and BM25 sides combine.
    public enum Fusion: String, Codable, CaseIterable, Sendable {
        /// (1 − w) · cosine + w · BM25 / best BM25 (HybridScoring).
        case blend
        /// Reciprocal-rank fusion (Cormack et al. 2009): (1 − w) / (60 + dense rank) + w / (60 + BM25 rank),
        /// over each side's best `reciprocalRankDepth`; scores' scales no longer matter, only orders.
        case reciprocalRank = "rrf"

        /// idx's default: on typed queries the two sides' scores are on scales that blending
        /// cannot line up (a short query's best cosine and its best BM25 mean different things), ranks are
        /// (docs/search-quality.md).
        public static let standard = Fusion.reciprocalRank
    }

    /// Each side's candidates in reciprocal-rank fusion, and its rank constant.
    public static let reciprocalRankDepth = 1000, reciprocalRankConstant: Float = 60

    /// Reciprocal-rank fusion of two rankings (best first): each document's
    /// (1 − w) / (60 + dense rank) + w / (60 + lexical rank), ranks from 1, a side it is absent from adding 0.
    public static func reciprocalRankScores(dense: [Int], lexical: [Int], lexicalWeight w: Float) -> [Int: Float] {
        let c = reciprocalRankConstant
        var fused: [Int: Float] = [:]
        fused.reserveCapacity(dense.count + lexical.count)
        for (r, i) in dense.enumerated() { fused[i, default: 0] += (1 - w) / (c + Float(r + 1)) }
        for (r, i) in lexical.enumerated() { fused[i, default: 0] += w / (c + Float(r + 1)) }
        return fused
    }

    /// One pass of reciprocal-rank fusion; hits carry the fused score, their cosine and normalised BM25.
    func reciprocalRankFusion(_ query: [Float], k: Int, filter: SearchFilter, threads: Int, rerank: Int?,
                              lexical: LexicalScores) throws -> [SearchHit] {
        let depth = min(reader.count, max(k, Self.reciprocalRankDepth))
        // The int8 scan's best `depth` re-ranked exactly, no more: a rank near the bottom adds
        // about 1/1060 whichever it is, so a wider exact re-rank would buy nothing.
        let dense = try scanAndRerank(query, k: depth, filter: filter, threads: threads, rerank: rerank ?? depth, lexical: nil)
        let excluded = filter.excluding ?? -1
        let genreIds = filter.genre.map { genre in reader.segments.map { Set($0.genreIds(holding: genre)) } }
        var top = TopK(capacity: depth)
        lexical.scores.withUnsafeBufferPointer { scores in
            // One pass over every document: a plain loop, the filter only for the few that pass the threshold.
            var threshold = max(0, top.threshold)
            for i in 0 ..< scores.count where scores[i] > threshold {
                if i == excluded { continue }
                if let genreIds {
                    let (s, r) = reader.locate(i)
                    if !genreIds[s].contains(Int(reader.segments[s].genreIds[r])) { continue }
                }
                top.push(scores[i], i)
                threshold = max(0, top.threshold)
            }
        }
        let fused = Self.reciprocalRankScores(dense: dense.map(\.index), lexical: top.ranked(), lexicalWeight: lexical.weight)
        var best = TopK(capacity: k)
        for (i, score) in fused { best.push(score, i) }  // (ties at the cut: push decides by index)
        // The cosine a hit reports: the dense side's, or computed for the few that only BM25 found.
        var v = [Float](repeating: 0, count: reader.dimension)
        return best.rankedPairs().map { i, score -> SearchHit in
            let cos = dense.first(where: { $0.index == i })?.dense ?? v.withUnsafeMutableBufferPointer { p -> Float in
                reconstruct(i, into: p.baseAddress!)
                return zip(p, query).reduce(0) { $0 + $1.0 * $1.1 }
            }
            return SearchHit(index: i, score: score, dense: cos, lexical: lexical.scores[i])
        }
    }

    /// One pass: the int8 scan of every segment, then the exact re-rank of its best candidates.
    func scanAndRerank(_ query: [Float], k: Int, filter: SearchFilter, threads: Int,
                       rerank: Int?, lexical: LexicalScores?) throws -> [SearchHit] {
        let d = reader.dimension
        precondition(query.count == d, "query has \(query.count) dimensions, the index \(d)")
        precondition(lexical.map { $0.scores.count == reader.count } ?? true, "lexical scores do not cover the index")
        let w = lexical?.weight ?? 0
        guard k > 0, reader.count > 0 else { return [] }
        let candidates = max(k, rerank ?? max(8 * k, 100))

        var maxAbs: Float = 0
        for x in query { maxAbs = max(maxAbs, abs(x)) }
        let qScale = maxAbs > 0 ? maxAbs / 127 : 1
        let q8 = query.map { Int8(max(-127, min(127, ($0 / qScale).rounded()))) }

        var allowedBySegment: [[Bool]?] = Array(repeating: nil, count: reader.segments.count)
        if let genre = filter.genre {
            var any = false
            for (k, s) in reader.segments.enumerated() {
                var allowed = [Bool](repeating: false, count: s.genreNames.count)
                for g in s.genreIds(holding: genre) { allowed[g] = true; any = true }
                allowedBySegment[k] = allowed
            }
            if !any {
                let all = Set(reader.segments.flatMap(\.genreNames).flatMap(Genres.names)).sorted()
                throw IdxError("--genre \(genre): no document in \(reader.directory) has that genre; genres: \(all.joined(separator: ", ")).")
            }
        }

        // Tasks: (segment, row range), scanned in parallel, one heap per task.
        var tasks: [(Int, Range<Int>)] = []
        for (k, s) in reader.segments.enumerated() {
            var start = 0
            while start < s.count {
                tasks.append((k, start ..< min(s.count, start + Self.taskRows)))
                start += Self.taskRows
            }
        }
        // query · centroid for every centroid of every segment.
        let qCentroids = query.withUnsafeBufferPointer { q in
            reader.segments.map { s -> [Float] in
                s.centroids.withUnsafeBufferPointer { cs in
                    (0 ..< s.centroidCount).map { c in
                        var acc: Float = 0
                        for j in 0 ..< d { acc += q[j] * cs[c * d + j] }
                        return acc
                    }
                }
            }
        }
        let workers = threads > 0 ? threads : ProcessInfo.processInfo.activeProcessorCount
        let excluded = filter.excluding ?? -1
        var heaps = [TopK](repeating: TopK(capacity: candidates), count: min(workers, tasks.count))
        let lexicalScores = lexical?.scores ?? []
        q8.withUnsafeBufferPointer { q in lexicalScores.withUnsafeBufferPointer { lx in
            let q = q.baseAddress!
            let lex: UnsafePointer<Float>? = lexical == nil ? nil : lx.baseAddress
            if heaps.count <= 1 {
                for (k, rows) in tasks {
                    Self.scan(reader.segments[k], rows: rows, q8: q, qScale: qScale, qCentroids: qCentroids[k],
                              allowed: allowedBySegment[k], excluded: excluded, base: reader.segmentStarts[k], lexical: lex, lexicalWeight: w,
                              into: &heaps[0])
                }
            } else {
                let n = heaps.count
                let lexicalWeight = w
                let tasks = tasks, allowedBySegment = allowedBySegment
                // The index, the query and the BM25 scores are only read.
                let shared = SharedWithWorkers((reader: reader, q8: q, lexical: lex))
                heaps.withUnsafeMutableBufferPointer { h in
                    // Worker `worker` pushes only into its own heap, h[worker].
                    let h = SharedWithWorkers(h)
                    DispatchQueue.concurrentPerform(iterations: n) { worker in
                        let (reader, q, lex) = shared.value
                        var t = worker
                        while t < tasks.count {
                            let (k, rows) = tasks[t]
                            Self.scan(reader.segments[k], rows: rows, q8: q, qScale: qScale, qCentroids: qCentroids[k],
                                      allowed: allowedBySegment[k], excluded: excluded, base: reader.segmentStarts[k], lexical: lex,
                                      lexicalWeight: lexicalWeight, into: &h.value[worker])
                            t += n
                        }
                    }
                }
            }
        } }

        // Exact re-rank of the candidates against their decoded float vectors (one matrix-vector
        // product), in index order so that a hit's position breaks ties as its index would.
        let ids = heaps.flatMap { $0.keptIndices() }.sorted()
        var decoded = [Float](repeating: 0, count: ids.count * d)
        var exact = [Float](repeating: 0, count: ids.count)
        decoded.withUnsafeMutableBufferPointer { m in
            for (row, id) in ids.enumerated() {
                let (k, r) = reader.locate(id)
                reader.segments[k].decode(r, into: m.baseAddress! + row * d)
            }
            cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(ids.count), Int32(d), 1, m.baseAddress!, Int32(d), query, 1, 0, &exact, 1)
        }
        let hits = zip(ids, exact).map { id, score -> SearchHit in
            guard let lexical else { return SearchHit(index: id, score: score) }
            let l = lexical.scores[id]
            return SearchHit(index: id, score: (1 - w) * score + w * l, dense: score, lexical: l)
        }
        // Best first, ties by lower index (as TopK ranks).
        let order = hits.indices.map { TopK.rankKey(hits[$0].score, $0) }.sorted()
        return order.prefix(k).map { hits[TopK.index($0)] }
    }
}

/// Exact float32 cosine top-k (the reference for recall), and tie-aware recall.
public enum ExactSearch {
    /// All scores `vectors · query` (rows of unit vectors).
    public static func scores(_ vectors: UnsafeBufferPointer<Float>, dimension d: Int, query: [Float]) -> [Float] {
        let n = vectors.count / d
        var out = [Float](repeating: 0, count: n)
        for i in 0 ..< n {
            var acc: Float = 0
            for j in 0 ..< d { acc += vectors[i * d + j] * query[j] }
            out[i] = acc
        }
        return out
    }

    /// The `k`-th best score (ties included).
    public static func kthScore(_ scores: [Float], k: Int) -> Float {
        var top = TopK(capacity: k)
        for (i, s) in scores.enumerated() { top.push(s, i) }
        return top.scores.min() ?? -.infinity
    }

    /// Tie-aware recall@k: a returned document counts when its exact score is at
    /// least the exact k-th best score (so duplicates of a vector are interchangeable).
    public static func recall(returned: [Int], exactScores: [Float], k: Int, tolerance: Float = 1e-6) -> Double {
        let kth = kthScore(exactScores, k: k)
        let good = returned.prefix(k).filter { exactScores[$0] >= kth - tolerance }.count
        return Double(good) / Double(min(k, exactScores.count))
    }
}
