import Foundation

public struct SearchHit: Equatable {
    public var index: Int      // global document index in the index
    public var score: Float    // cosine, or the hybrid score when searched with lexical scores
    public var dense: Float    // the cosine part
    public var lexical: Float  // the normalised BM25 part (0 without lexical scores)
    public init(index: Int, score: Float, dense: Float? = nil, lexical: Float = 0) {
        self.index = index; self.score = score; self.dense = dense ?? score; self.lexical = lexical
    }
}

/// A bounded min-heap of the best `capacity` (score, index) pairs.
struct TopK {
    private(set) var scores: [Float] = []
    private(set) var ids: [Int] = []
    let capacity: Int
    init(capacity: Int) {
        self.capacity = capacity
        scores.reserveCapacity(capacity); ids.reserveCapacity(capacity)
    }
    /// The score a newcomer must beat.
    var threshold: Float { scores.count < capacity ? -.infinity : scores[0] }

    mutating func push(_ score: Float, _ id: Int) {
        if scores.count < capacity {
            scores.append(score); ids.append(id)
            var i = scores.count - 1
            while i > 0 {
                let p = (i - 1) / 2
                if scores[p] <= scores[i] { break }
                scores.swapAt(p, i); ids.swapAt(p, i); i = p
            }
        } else if score > scores[0] {
            scores[0] = score; ids[0] = id
            var i = 0
            let n = scores.count
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < n && scores[l] < scores[m] { m = l }
                if r < n && scores[r] < scores[m] { m = r }
                if m == i { break }
                scores.swapAt(m, i); ids.swapAt(m, i); i = m
            }
        }
    }
}

/// Cosine top-k over an index: an int8 scan of every vector (query quantized
/// to int8 too, integer dot products the compiler vectorises), then the best
/// `rerank` candidates re-scored in float against their decoded vectors.
public struct VectorSearcher {
    public let reader: VectorIndexReader
    public init(_ reader: VectorIndexReader) { self.reader = reader }

    /// Rows per parallel task.
    static let taskRows = 32768

    /// int8 · int8 over `d` lanes, accumulated in Int32 (pmaddwd on x86).
    @inline(__always)
    static func dot(_ a: UnsafePointer<Int8>, _ b: UnsafePointer<Int8>, _ d: Int) -> Int32 {
        var acc: Int32 = 0
        for j in 0 ..< d { acc &+= Int32(a[j]) &* Int32(b[j]) }
        return acc
    }

    /// The same dot product over whole 16-byte blocks with SIMD shifts and
    /// Int16 multiplies only (the x86 baseline has no pmovsx/pmaddwd, and
    /// Swift's generic SIMD widenings are not specialised). A block read as
    /// 8 × Int16 holds byte pairs: (x << 8) >> 8 is the even byte sign-extended,
    /// x >> 8 the odd one. `q` holds the query pre-split per block into its even
    /// and odd lanes (8 × Int16 each). Codes and query are within ±127, so
    /// even·qe + odd·qo fits Int16 (≤ 32258); the pair sums are then widened the
    /// same way, read as 4 × Int32.
    @inline(__always)
    static func dot16(_ q: UnsafeRawPointer, _ v: UnsafeRawPointer, blocks: Int) -> Int32 {
        var acc = SIMD4<Int32>()
        for b in 0 ..< blocks {
            let x = v.loadUnaligned(fromByteOffset: 16 * b, as: SIMD8<Int16>.self)
            let even = (x &<< 8) &>> 8, odd = x &>> 8
            let qe = q.loadUnaligned(fromByteOffset: 32 * b, as: SIMD8<Int16>.self)
            let qo = q.loadUnaligned(fromByteOffset: 32 * b + 16, as: SIMD8<Int16>.self)
            let pairs = unsafeBitCast(even &* qe &+ odd &* qo, to: SIMD4<Int32>.self)
            acc &+= ((pairs &<< 16) &>> 16) &+ (pairs &>> 16)
        }
        return acc.wrappedSum()
    }

    /// The query laid out for `dot16`: per 16-lane block, its even lanes then its odd lanes, as Int16.
    static func splitQuery(_ q8: [Int8]) -> [Int16] {
        var out: [Int16] = []
        for b in 0 ..< q8.count / 16 {
            for k in 0 ..< 8 { out.append(Int16(q8[16 * b + 2 * k])) }
            for k in 0 ..< 8 { out.append(Int16(q8[16 * b + 2 * k + 1])) }
        }
        return out
    }

    /// The approximate scan of `rows` of one segment into `top`.
    /// With `lexical`, a row scores (1 − w) · cosine + w · lexical[base + row] (w = lexicalWeight).
    static func scan(_ s: SegmentReader, rows: Range<Int>, q8: UnsafePointer<Int8>, q16: UnsafeRawPointer, qScale: Float, qCentroids: [Float],
                     allowed: [Bool]?, base: Int, lexical: UnsafePointer<Float>?, lexicalWeight w: Float, into top: inout TopK) {
        let d = s.dimension
        do { let codes = UnsafeBufferPointer(start: s.codes, count: s.count * d)
            s.scales.withUnsafeBufferPointer { scales in
                s.norms.withUnsafeBufferPointer { norms in
                    s.genreIds.withUnsafeBufferPointer { genres in s.centroidIds.withUnsafeBufferPointer { cids in qCentroids.withUnsafeBufferPointer { qc in
                        let c = codes.baseAddress!
                        var threshold = top.threshold
                        let blocks = d / 16, tail = blocks * 16
                        for i in rows {
                            let row = c + i * d
                            var dot = Self.dot16(q16, row, blocks: blocks)
                            if tail < d { dot &+= Self.dot(q8 + tail, row + tail, d - tail) }
                            var score = norms[i] * (qc[Int(cids[i])] + scales[i] * qScale * Float(dot))
                            if let lexical { score = (1 - w) * score + w * lexical[base + i] }
                            if score > threshold {
                                if let allowed, !allowed[Int(genres[i])] { continue }
                                top.push(score, base + i)
                                threshold = top.threshold
                            }
                        }
                    } } }
                }
            }
        }
    }

    /// The `k` best documents for a unit query (already `prepareQuery`'d).
    /// `genre` keeps documents of that genre only (case-insensitive). `lexical`: hybrid
    /// scoring with these per-document BM25 scores (see HybridScoring).
    public func search(_ query: [Float], k: Int, genre: String? = nil, threads: Int = 0,
                       rerank: Int? = nil, lexical: LexicalScores? = nil) throws -> [SearchHit] {
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
        if let genre {
            var any = false
            for (k, s) in reader.segments.enumerated() {
                var allowed = [Bool](repeating: false, count: s.genreNames.count)
                if let g = s.genreId(named: genre) { allowed[g] = true; any = true }
                allowedBySegment[k] = allowed
            }
            if !any {
                let all = Set(reader.segments.flatMap(\.genreNames)).sorted()
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
        let qCentroids = reader.segments.map { s -> [Float] in
            (0 ..< s.centroidCount).map { c in
                var acc: Float = 0
                for j in 0 ..< d { acc += query[j] * s.centroids[c * d + j] }
                return acc
            }
        }
        let workers = threads > 0 ? threads : ProcessInfo.processInfo.activeProcessorCount
        var heaps = [TopK](repeating: TopK(capacity: candidates), count: min(workers, tasks.count))
        let q16w = Self.splitQuery(q8)
        let lexicalScores = lexical?.scores ?? []
        q8.withUnsafeBufferPointer { q in q16w.withUnsafeBytes { q16 in lexicalScores.withUnsafeBufferPointer { lx in
            let q = q.baseAddress!, q16 = q16.baseAddress!
            let lex: UnsafePointer<Float>? = lexical == nil ? nil : lx.baseAddress
            if heaps.count <= 1 {
                for (k, rows) in tasks {
                    Self.scan(reader.segments[k], rows: rows, q8: q, q16: q16, qScale: qScale, qCentroids: qCentroids[k],
                              allowed: allowedBySegment[k], base: reader.segmentStarts[k], lexical: lex, lexicalWeight: w,
                              into: &heaps[0])
                }
            } else {
                let n = heaps.count
                let lexicalWeight = w
                heaps.withUnsafeMutableBufferPointer { h in
                    let h = h
                    DispatchQueue.concurrentPerform(iterations: n) { worker in
                        var t = worker
                        while t < tasks.count {
                            let (k, rows) = tasks[t]
                            Self.scan(reader.segments[k], rows: rows, q8: q, q16: q16, qScale: qScale, qCentroids: qCentroids[k],
                                      allowed: allowedBySegment[k], base: reader.segmentStarts[k], lexical: lex,
                                      lexicalWeight: lexicalWeight, into: &h[worker])
                            t += n
                        }
                    }
                }
            }
        } } }

        // Exact re-rank of the candidates against their decoded float vectors.
        var hits: [SearchHit] = []
        var v = [Float](repeating: 0, count: d)
        for h in heaps {
            for id in h.ids {
                let (k, r) = reader.locate(id)
                v.withUnsafeMutableBufferPointer { reader.segments[k].decode(r, into: $0.baseAddress!) }
                var score: Float = 0
                for j in 0 ..< d { score += v[j] * query[j] }
                if let lexical {
                    let l = lexical.scores[id]
                    hits.append(SearchHit(index: id, score: (1 - w) * score + w * l, dense: score, lexical: l))
                } else {
                    hits.append(SearchHit(index: id, score: score))
                }
            }
        }
        hits.sort { $0.score != $1.score ? $0.score > $1.score : $0.index < $1.index }
        return Array(hits.prefix(k))
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
