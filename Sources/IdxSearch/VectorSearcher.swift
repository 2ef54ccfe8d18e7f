import Foundation
import COpenBLAS
import CSupport
import IdxBase
import IdxCorpus
import IdxStore

public struct SearchHit: Equatable, Sendable {
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

    /// Rows whose int8 dot products are computed in one call: 16 KB of codes, which stay in
    /// the L1 cache while every query of a batch reads them (the Int32 results stay there too).
    static func dotBlock(dimension d: Int) -> Int { max(16, 16_384 / max(d, 1)) }

    /// Queries at most this many are scanned as one batch.
    public static let batchLimit = 32

    /// A batch of `n` queries cut into parts to run in parallel: as many as there are cores,
    /// more when a part would exceed `batchLimit`.
    public static func batchParts(_ n: Int) -> [Range<Int>] {
        let cores = Cores.available
        let size = max(1, min(batchLimit, (n + cores - 1) / cores))
        return stride(from: 0, to: n, by: size).map { $0 ..< min(n, $0 + size) }
    }

    /// One query of a batched scan: what scores a row for it (its int8 codes are row b of the batch's q8).
    struct ScanQuery {
        var qScale: Float
        /// Query · centroid, per segment.
        var qCentroids: [[Float]]
        /// Hybrid scoring's BM25 share (0: cosine alone) and the document it never returns.
        var lexicalWeight: Float, excluded: Int
    }

    /// The approximate scan of `rows` of one segment for every query of a batch, query `b`'s
    /// hits into `tops[b]`. A row scores norm · (q·centroid + scale · qScale · (q8 · code)),
    /// then with lexical scores (1 − w) · that + w · lexical[base + row].
    /// The int8 dot products and the scores run in C (`idx_int8_dots`, `idx_scan_scores`:
    /// AVX-512 or AVX2 code when the CPU has it, chosen at run time; Swift alone builds for the
    /// 128-bit SSE2 baseline), a block of rows for every query in turn, so that a batch reads
    /// the codes from memory once.
    static func scan(_ s: SegmentReader, segment k: Int, rows: Range<Int>, queries: [ScanQuery], q8: UnsafePointer<Int8>,
                     lexical: [UnsafePointer<Float>?], allowed: [Bool]?, base: Int, into tops: UnsafeMutablePointer<TopK>) {
        let d = s.dimension
        let block = dotBlock(dimension: d)
        var dots = [Int32](repeating: 0, count: min(block, rows.count))
        var scores = [Float](repeating: 0, count: min(block, rows.count))
        var above = [UInt32](repeating: 0, count: min(block, rows.count))
        s.scales.withUnsafeBufferPointer { scales in
            s.norms.withUnsafeBufferPointer { norms in
                s.genreIds.withUnsafeBufferPointer { genres in s.centroidIds.withUnsafeBufferPointer { cids in
                    dots.withUnsafeMutableBufferPointer { dots in scores.withUnsafeMutableBufferPointer { scores in
                    above.withUnsafeMutableBufferPointer { above in
                        for start in stride(from: rows.lowerBound, to: rows.upperBound, by: block) {
                            let n = min(block, rows.upperBound - start)
                            for (b, query) in queries.enumerated() {
                                idx_int8_dots(s.codes + start * d, n, d, q8 + b * d, dots.baseAddress!)
                                // The rows above the block's starting threshold; each is tested again
                                // against the threshold as pushes raise it.
                                let count = query.qCentroids[k].withUnsafeBufferPointer { qc in
                                    idx_scan_scores(n, dots.baseAddress!, query.qScale, norms.baseAddress! + start, scales.baseAddress! + start,
                                                    cids.baseAddress! + start, qc.baseAddress!, lexical[b].map { $0 + base + start },
                                                    query.lexicalWeight, tops[b].threshold, scores.baseAddress!, above.baseAddress!)
                                }
                                let excluded = query.excluded
                                var threshold = tops[b].threshold
                                for j in 0 ..< count {
                                    let r = Int(above[j])
                                    guard scores[r] > threshold else { continue }
                                    let i = start + r
                                    if let allowed, !allowed[Int(genres[i])] { continue }
                                    if base + i == excluded { continue }
                                    tops[b].push(scores[r], base + i)
                                    threshold = tops[b].threshold
                                }
                            }
                        }
                    } } }
                } }
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
        try search([query], k: k, genre: genre, excluding: [excluding], threads: threads, rerank: rerank, lexical: [lexical],
                   feedback: feedback, fusion: fusion)[0]
    }

    /// `search` for a batch of queries at once (each with its own `excluding` and `lexical`):
    /// every pass scans the index once for the whole batch. Each query's answer is the one it
    /// gets alone.
    public func search(_ queries: [[Float]], k: Int, genre: String? = nil, excluding: [Int?], threads: Int = 0,
                       rerank: Int? = nil, lexical: [LexicalScores?],
                       feedback: RelevanceFeedback? = nil, fusion: Fusion = .blend) throws -> [[SearchHit]] {
        precondition(excluding.count == queries.count && lexical.count == queries.count, "one exclusion and one lexical side a query")
        guard !queries.isEmpty else { return [] }
        let filters = excluding.map { SearchFilter(genre: genre, excluding: $0) }
        func pass(_ qs: [[Float]], k: Int, lexical: [LexicalScores?]) throws -> [[SearchHit]] {
            // A query fused by reciprocal rank scans by cosine alone (its dense side), to the fusion's
            // depth; the others scan with BM25 blended in (or none), to k.
            let fused = lexical.map { l in fusion == .reciprocalRank && l.map { $0.weight > 0 && $0.weight < 1 } ?? false }
            let depth = min(reader.count, max(k, Self.reciprocalRankDepth))
            // The int8 scan's best `depth` re-ranked exactly, no more: a rank near the bottom adds
            // about 1/1060 whichever it is, so a wider exact re-rank would buy nothing.
            let scanned = try scanAndRerank(qs, k: fused.map { $0 ? depth : k }, filters: filters, threads: threads,
                                            rerank: fused.map { $0 ? rerank ?? depth : rerank },
                                            lexical: zip(fused, lexical).map { $0 ? nil : $1 })
            return try qs.indices.map { b in
                guard fused[b], let l = lexical[b] else { return scanned[b] }
                return try reciprocalRankFusion(qs[b], dense: scanned[b], k: k, filter: filters[b], lexical: l)
            }
        }
        // BM25 alone (w = 1) has no dense side to move.
        guard let feedback, feedback.isActive else { return try pass(queries, k: k, lexical: lexical) }
        let moving = lexical.map { ($0?.weight ?? 0) < 1 }
        let d = reader.dimension
        let firsts = try pass(queries, k: max(k, feedback.documents), lexical: lexical)
        var moved = queries, second = lexical
        for b in queries.indices where moving[b] {
            let first = firsts[b].prefix(feedback.documents)
            var rows = [Float](repeating: 0, count: first.count * d)
            moved[b] = rows.withUnsafeMutableBufferPointer { p -> [Float] in
                for (i, h) in first.enumerated() { reconstruct(h.index, into: p.baseAddress! + i * d) }
                return feedback.expanded(queries[b], rows: p.baseAddress!, count: first.count, dim: d)
            }
            if let expand = lexical[b]?.expanded, feedback.isLexical { second[b]!.scores = try expand(first.map(\.index)) }
        }
        let seconds = try pass(moved, k: k, lexical: second)
        // A query that did not move keeps its one pass, cut to k.
        return queries.indices.map { b in moving[b] ? seconds[b] : Array(firsts[b].prefix(k)) }
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
    public static func reciprocalRankScores(dense: [Int], lexical: [Int], lexicalWeight w: Float) -> FusedScores {
        let c = reciprocalRankConstant
        var fused = FusedScores(capacity: dense.count + lexical.count)
        for (r, i) in dense.enumerated() { fused.add((1 - w) / (c + Float(r + 1)), to: i, denseRank: r) }
        for (r, i) in lexical.enumerated() { fused.add(w / (c + Float(r + 1)), to: i) }
        return fused
    }

    /// One pass of reciprocal-rank fusion over the dense side's ranking `dense` (the scan's best,
    /// re-ranked exactly); hits carry the fused score, their cosine and normalised BM25.
    func reciprocalRankFusion(_ query: [Float], dense: [SearchHit], k: Int, filter: SearchFilter,
                              lexical: LexicalScores) throws -> [SearchHit] {
        let depth = min(reader.count, max(k, Self.reciprocalRankDepth))
        let excluded = filter.excluding ?? -1
        let genreIds = filter.genre.map { genre in reader.segments.map { Set($0.genreIds(holding: genre)) } }
        var top = TopK(capacity: depth)
        lexical.scores.withUnsafeBufferPointer { scores in
            // One pass over every document, a block at a time: the ones above the block's starting
            // threshold listed in C, each tested again as pushes raise it; the filter only for those.
            let block = 4096
            var above = [UInt32](repeating: 0, count: min(block, scores.count))
            var threshold = max(0, top.threshold)
            for start in stride(from: 0, to: scores.count, by: block) {
                let count = idx_list_above(min(block, scores.count - start), scores.baseAddress! + start, threshold, &above)
                for j in 0 ..< count {
                    let i = start + Int(above[j])
                    guard scores[i] > threshold, i != excluded else { continue }
                    if let genreIds {
                        let (s, r) = reader.locate(i)
                        if !genreIds[s].contains(Int(reader.segments[s].genreIds[r])) { continue }
                    }
                    top.push(scores[i], i)
                    threshold = max(0, top.threshold)
                }
            }
        }
        let fused = Self.reciprocalRankScores(dense: dense.map(\.index), lexical: top.ranked(), lexicalWeight: lexical.weight)
        var best = TopK(capacity: k)
        fused.forEach { i, score in best.push(score, i) }  // (ties at the cut: push decides by index)
        // The cosine a hit reports: the dense side's, or computed for the few that only BM25 found.
        var v = [Float](repeating: 0, count: reader.dimension)
        return best.rankedPairs().map { i, score -> SearchHit in
            let cos = fused.denseRank(of: i).map { dense[$0].dense } ?? v.withUnsafeMutableBufferPointer { p -> Float in
                reconstruct(i, into: p.baseAddress!)
                return zip(p, query).reduce(0) { $0 + $1.0 * $1.1 }
            }
            return SearchHit(index: i, score: score, dense: cos, lexical: lexical.scores[i])
        }
    }

    /// One pass for one query: the int8 scan of every segment, then the exact re-rank of its best candidates.
    func scanAndRerank(_ query: [Float], k: Int, filter: SearchFilter, threads: Int,
                       rerank: Int?, lexical: LexicalScores?) throws -> [SearchHit] {
        try scanAndRerank([query], k: [k], filters: [filter], threads: threads, rerank: [rerank], lexical: [lexical])[0]
    }

    /// One pass for a batch (every filter of one genre): one int8 scan of every segment for all
    /// the queries, then each query's exact re-rank of its best candidates.
    func scanAndRerank(_ queries: [[Float]], k ks: [Int], filters: [SearchFilter], threads: Int,
                       rerank: [Int?], lexical: [LexicalScores?]) throws -> [[SearchHit]] {
        let d = reader.dimension, batch = queries.count
        for (query, l) in zip(queries, lexical) {
            precondition(query.count == d, "query has \(query.count) dimensions, the index \(d)")
            precondition(l.map { $0.scores.count == reader.count } ?? true, "lexical scores do not cover the index")
        }
        guard batch > 0 else { return [] }
        guard reader.count > 0 else { return Array(repeating: [], count: batch) }
        let candidates = zip(ks, rerank).map { k, r in max(k, r ?? max(8 * k, 100), 1) }

        var q8 = [Int8](repeating: 0, count: batch * d)
        var scanQueries: [ScanQuery] = []
        for (b, query) in queries.enumerated() {
            var maxAbs: Float = 0
            for x in query { maxAbs = max(maxAbs, abs(x)) }
            let qScale = maxAbs > 0 ? maxAbs / 127 : 1
            for j in 0 ..< d { q8[b * d + j] = Int8(max(-127, min(127, (query[j] / qScale).rounded()))) }
            // query · centroid for every centroid of every segment.
            let qCentroids = query.withUnsafeBufferPointer { q in reader.segments.map { $0.centroidDots(q.baseAddress!) } }
            scanQueries.append(ScanQuery(qScale: qScale, qCentroids: qCentroids, lexicalWeight: lexical[b]?.weight ?? 0,
                                         excluded: filters[b].excluding ?? -1))
        }

        var allowedBySegment: [[Bool]?] = Array(repeating: nil, count: reader.segments.count)
        if let genre = filters[0].genre {
            precondition(filters.allSatisfy { $0.genre == genre }, "one genre filter a batch")
            var any = false
            for (k, s) in reader.segments.enumerated() {
                var allowed = [Bool](repeating: false, count: s.genreNames.count)
                for g in s.genreIds(holding: genre) { allowed[g] = true; any = true }
                allowedBySegment[k] = allowed
            }
            if !any {
                throw IdxError("--genre \(genre): no document in \(reader.directory) has that genre; genres: \(reader.genreNames().joined(separator: ", ")).")
            }
        }

        // Tasks: (segment, row range), scanned in parallel, one heap a query per worker.
        var tasks: [(Int, Range<Int>)] = []
        for (k, s) in reader.segments.enumerated() {
            var start = 0
            while start < s.count {
                tasks.append((k, start ..< min(s.count, start + Self.taskRows)))
                start += Self.taskRows
            }
        }
        let workers = min(threads > 0 ? threads : Cores.available, tasks.count)
        var heaps = (0 ..< workers).flatMap { _ in candidates.map { TopK(capacity: $0) } }
        withPointers(to: lexical.map { $0?.scores }) { lex in
            q8.withUnsafeBufferPointer { q8 in
                let q8 = q8.baseAddress!
                if workers <= 1 {
                    heaps.withUnsafeMutableBufferPointer { h in
                        for (k, rows) in tasks {
                            Self.scan(reader.segments[k], segment: k, rows: rows, queries: scanQueries, q8: q8, lexical: lex,
                                      allowed: allowedBySegment[k], base: reader.segmentStarts[k], into: h.baseAddress!)
                        }
                    }
                } else {
                    let tasks = tasks, allowedBySegment = allowedBySegment, scanQueries = scanQueries
                    // The index, the queries and the BM25 scores are only read.
                    let shared = SharedWithWorkers((reader: reader, q8: q8, lexical: lex))
                    heaps.withUnsafeMutableBufferPointer { h in
                        // Worker `worker` pushes only into its own heaps, h[worker * batch ..< (worker + 1) * batch].
                        let h = SharedWithWorkers(h)
                        DispatchQueue.concurrentPerform(iterations: workers) { worker in
                            let (reader, q8, lex) = shared.value
                            var t = worker
                            while t < tasks.count {
                                let (k, rows) = tasks[t]
                                Self.scan(reader.segments[k], segment: k, rows: rows, queries: scanQueries, q8: q8, lexical: lex,
                                          allowed: allowedBySegment[k], base: reader.segmentStarts[k],
                                          into: h.value.baseAddress! + worker * batch)
                                t += workers
                            }
                        }
                    }
                }
            }
        }

        return (0 ..< batch).map { b in
            // Exact re-rank of the candidates against their decoded float vectors (one matrix-vector
            // product), in index order so that a hit's position breaks ties as its index would.
            // The candidates are the best of the whole index, whatever the number of workers:
            // a union of each worker's best would re-rank more the more threads scanned.
            var candidates = heaps[b]
            for worker in 1 ..< workers { candidates.merge(heaps[worker * batch + b]) }
            let ids = RadixSort.sorted(candidates.keptIndices())
            var exact = [Float](repeating: 0, count: ids.count)
            let decoded = [Float](unsafeUninitializedCapacity: ids.count * d) { m, initialized in
                if let p = m.baseAddress { reader.decode(ascending: ids, into: p) }
                initialized = ids.count * d
            }
            if !ids.isEmpty { decoded.withUnsafeBufferPointer { m in
                cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(ids.count), Int32(d), 1, m.baseAddress!, Int32(d), queries[b], 1, 0, &exact, 1)
            } }
            let w = lexical[b]?.weight ?? 0
            let hits = zip(ids, exact).map { id, score -> SearchHit in
                guard let l = lexical[b] else { return SearchHit(index: id, score: score) }
                let x = l.scores[id]
                return SearchHit(index: id, score: (1 - w) * score + w * x, dense: score, lexical: x)
            }
            // Best first, ties by lower index (as TopK ranks).
            var order = hits.indices.map { TopK.rankKey(hits[$0].score, $0) }
            RadixSort.sort(&order)
            return order.prefix(ks[b]).map { hits[TopK.index($0)] }
        }
    }
}

/// Pointers to each array's elements (nil for nil) while `body` runs.
func withPointers<R>(to arrays: [[Float]?], _ body: ([UnsafePointer<Float>?]) throws -> R) rethrows -> R {
    var pointers: [UnsafePointer<Float>?] = []
    pointers.reserveCapacity(arrays.count)
    func nest(_ i: Int) throws -> R {
        guard i < arrays.count else { return try body(pointers) }
        guard let a = arrays[i] else { pointers.append(nil); return try nest(i + 1) }
        return try a.withUnsafeBufferPointer { p in pointers.append(p.baseAddress); return try nest(i + 1) }
    }
    return try nest(0)
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

/// Reciprocal-rank fusion's sums by document, with each document's dense rank: an open-addressing
/// table sized for both sides' lists (a Dictionary's SipHash cost more than the fusion's arithmetic).
public struct FusedScores {
    private var keys: [Int]          // -1: an empty slot
    private var sums: [Float]
    private var denseRanks: [Int32]  // -1: not on the dense side
    private let mask: Int

    public init(capacity n: Int) {
        var size = 16
        while size < 2 * n { size *= 2 }
        keys = [Int](repeating: -1, count: size)
        sums = [Float](repeating: 0, count: size)
        denseRanks = [Int32](repeating: -1, count: size)
        mask = size - 1
    }

    /// Document `i`'s slot, or the empty one where it would go (Fibonacci hashing, linear probing).
    private func slot(_ i: Int) -> Int {
        var s = Int(truncatingIfNeeded: (UInt64(i) &* 0x9E37_79B9_7F4A_7C15) >> 32) & mask
        while keys[s] != -1 && keys[s] != i { s = (s + 1) & mask }
        return s
    }

    /// Adds `x` to document `i`'s sum (from 0, in the order of the calls, as the fusion's formula reads).
    public mutating func add(_ x: Float, to i: Int, denseRank: Int? = nil) {
        let s = slot(i)
        keys[s] = i
        sums[s] += x
        if let denseRank { denseRanks[s] = Int32(denseRank) }
    }

    public func denseRank(of i: Int) -> Int? {
        let s = slot(i)
        return keys[s] == i && denseRanks[s] >= 0 ? Int(denseRanks[s]) : nil
    }

    /// Every document added, with its sum, in no particular order.
    public func forEach(_ body: (Int, Float) -> Void) {
        for s in keys.indices where keys[s] >= 0 { body(keys[s], sums[s]) }
    }
}
