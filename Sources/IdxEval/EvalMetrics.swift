import COpenBLAS
import Foundation
import IdxBase
import IdxCorpus
import IdxSearch

/// The two embedding-quality measures of `idx eval`, over plain row-major
/// vectors (`n × dim` floats). Vectors need not be unit length: both measures
/// normalise rows first, so they are defined by cosine alone.
public enum EvalMetrics {
    /// Rows scaled to unit length (a zero row stays zero: its cosine with anything is 0).
    public static func normalizedRows(_ v: [Float], dim: Int) -> [Float] {
        precondition(dim > 0 && v.count % dim == 0, "vectors must be n × dim")
        var out = v
        let n = v.count / dim
        out.withUnsafeMutableBufferPointer { p in
            for i in 0 ..< n {
                var s: Float = 0
                for j in 0 ..< dim { s += p[i * dim + j] * p[i * dim + j] }
                if s > 0 {
                    let inv = 1 / s.squareRoot()
                    for j in 0 ..< dim { p[i * dim + j] *= inv }
                }
            }
        }
        return out
    }

    public struct ClusterSeparation: Codable, Equatable {
        /// Mean cosine distance (1 − cos) over pairs of sentences with the same label.
        public var intra: Double
        /// Mean cosine distance over pairs with different labels.
        public var inter: Double
        /// inter / intra: above 1, same-label sentences sit closer together than different-label ones.
        public var ratio: Double
        public var intraPairs: Int
        public var interPairs: Int
    }

    /// The notebook's seed test: mean intra- and inter-cluster cosine distances and their ratio.
    public static func clusterSeparation(_ vectors: [Float], dim: Int, labels: [String]) throws -> ClusterSeparation {
        let n = labels.count
        guard n * dim == vectors.count else {
            throw IdxError("cluster separation: \(labels.count) labels for \(vectors.count / max(dim, 1)) vectors.")
        }
        let u = normalizedRows(vectors, dim: dim)
        var intra = 0.0, inter = 0.0
        var nIntra = 0, nInter = 0
        for i in 0 ..< n {
            for j in (i + 1) ..< n {
                var dot: Float = 0
                for d in 0 ..< dim { dot += u[i * dim + d] * u[j * dim + d] }
                let dist = 1 - Double(dot)
                if labels[i] == labels[j] { intra += dist; nIntra += 1 } else { inter += dist; nInter += 1 }
            }
        }
        guard nIntra > 0, nInter > 0 else {
            throw IdxError("cluster separation needs at least two labels with two sentences each (got labels \(Set(labels).sorted())).")
        }
        intra /= Double(nIntra)
        inter /= Double(nInter)
        return ClusterSeparation(intra: intra, inter: inter, ratio: intra > 0 ? inter / intra : .infinity,
                                 intraPairs: nIntra, interPairs: nInter)
    }

    /// The `k` nearest base rows of every query row by cosine, best first
    /// (ties: lower base index first). With `excludeSelf`, queries are the base
    /// itself and row i never counts as its own neighbour (leave-one-out).
    /// Products run through sgemm in blocks of queries.
    /// `blend(query, row)`, when given, rewrites query `query`'s row of nb cosine scores in
    /// place before the top-k (hybrid scoring adds its BM25 part there). With `feedback`, each
    /// query is scored twice, as VectorSearcher.search does: the second time moved toward
    /// its first `feedback.documents` neighbours (blended again).
    public static func nearestNeighbours(queries: [Float], base: [Float], dim: Int, k: Int,
                                         excludeSelf: Bool = false,
                                         blend: ((Int, [Int]?, UnsafeMutablePointer<Float>) -> Void)? = nil,
                                         feedback: RelevanceFeedback? = nil) -> [[Int]] {
        let q = normalizedRows(queries, dim: dim)
        let b = normalizedRows(base, dim: dim)
        let nq = q.count / dim, nb = b.count / dim
        let kk = min(k, nb - (excludeSelf ? 1 : 0))
        guard kk > 0, nq > 0 else { return Array(repeating: [], count: nq) }
        let feedback = feedback.flatMap { $0.isActive ? $0 : nil }
        let keep = max(kk, min(feedback?.documents ?? 0, nb - (excludeSelf ? 1 : 0)))
        let block = max(1, min(nq, (1 << 24) / max(nb, 1)))
        var scores = [Float](repeating: 0, count: block * nb)
        var result = [[Int]]()
        result.reserveCapacity(nq)
        var topScore = [Float](repeating: 0, count: keep)
        var topIndex = [Int](repeating: 0, count: keep)
        var feedbackRows = [Float](repeating: 0, count: (feedback?.documents ?? 0) * dim)
        /// The `count` best of `row` (nb scores) into topIndex, best first; returns how many.
        func selectTop(_ row: UnsafeMutablePointer<Float>, _ count: Int, skipping selfIndex: Int) -> Int {
            var filled = 0
            for j in 0 ..< nb where j != selfIndex {
                let s = row[j]
                if filled == count && s <= topScore[count - 1] { continue }
                // Insertion into the sorted top list; strict > keeps the lower index first on ties.
                var pos = filled == count ? count - 1 : filled
                if filled < count { filled += 1 }
                while pos > 0 && topScore[pos - 1] < s {
                    topScore[pos] = topScore[pos - 1]
                    topIndex[pos] = topIndex[pos - 1]
                    pos -= 1
                }
                topScore[pos] = s
                topIndex[pos] = j
            }
            return filled
        }
        var start = 0
        while start < nq {
            let rows = min(block, nq - start)
            q.withUnsafeBufferPointer { qp in
                b.withUnsafeBufferPointer { bp in
                    scores.withUnsafeMutableBufferPointer { sp in
                        // scores[rows, nb] = q[start..<start+rows, dim] · b[nb, dim]ᵀ
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(rows), Int32(nb), Int32(dim),
                                    1, qp.baseAddress! + start * dim, Int32(dim), bp.baseAddress!, Int32(dim),
                                    0, sp.baseAddress!, Int32(nb))
                    }
                }
            }
            scores.withUnsafeMutableBufferPointer { sp in b.withUnsafeBufferPointer { bp in
                for r in 0 ..< rows {
                    let row = sp.baseAddress! + r * nb
                    blend?(start + r, nil, row)
                    let selfIndex = excludeSelf ? start + r : -1
                    if let feedback {
                        let m = selectTop(row, min(feedback.documents, keep), skipping: selfIndex)
                        let moved = feedbackRows.withUnsafeMutableBufferPointer { f -> [Float] in
                            for i in 0 ..< m { (f.baseAddress! + i * dim).update(from: bp.baseAddress! + topIndex[i] * dim, count: dim) }
                            return feedback.expanded(Array(q[(start + r) * dim ..< (start + r + 1) * dim]), rows: f.baseAddress!, count: m, dim: dim)
                        }
                        // row[nb] = b[nb, dim] · moved
                        cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(nb), Int32(dim), 1, bp.baseAddress!, Int32(dim),
                                    moved, 1, 0, row, 1)
                        blend?(start + r, Array(topIndex[0 ..< m]), row)
                    }
                    let filled = selectTop(row, kk, skipping: selfIndex)
                    result.append(Array(topIndex[0 ..< filled]))
                }
            } }
            start += rows
        }
        return result
    }

    public struct KNNPrecision: Codable, Equatable {
        public var k: Int
        /// Mean over queries of (neighbours with the query's label) / k.
        public var precision: Double
        public var queries: Int
        public var leaveOneOut: Bool
    }

    /// Genre kNN precision@k: for each query, the share of its k nearest base
    /// documents that share a genre with the query (a label is one genre, or a film's
    /// comma-separated genres: ingest merges a film listed under several). Nothing else is excluded
    /// (with `leaveOneOut`, only the query itself).
    public static func knnPrecision(queries: [Float], queryLabels: [String], base: [Float], baseLabels: [String],
                                    dim: Int, k: Int = 10, leaveOneOut: Bool = false,
                                    blend: ((Int, [Int]?, UnsafeMutablePointer<Float>) -> Void)? = nil,
                                    feedback: RelevanceFeedback? = nil) throws -> KNNPrecision {
        guard queryLabels.count * dim == queries.count, baseLabels.count * dim == base.count else {
            throw IdxError("kNN precision: labels and vectors do not line up.")
        }
        let needed = k + (leaveOneOut ? 1 : 0)
        guard baseLabels.count >= needed else {
            throw IdxError("kNN precision@\(k) needs at least \(needed) indexed documents; the index has \(baseLabels.count).")
        }
        guard !queryLabels.isEmpty else { throw IdxError("kNN precision: no query documents.") }
        let nn = nearestNeighbours(queries: queries, base: base, dim: dim, k: k, excludeSelf: leaveOneOut, blend: blend, feedback: feedback)
        var sum = 0.0
        for (i, neighbours) in nn.enumerated() {
            let same = neighbours.reduce(0) { $0 + (Genres.overlap(baseLabels[$1], queryLabels[i]) ? 1 : 0) }
            sum += Double(same) / Double(k)
        }
        return KNNPrecision(k: k, precision: sum / Double(nn.count), queries: nn.count, leaveOneOut: leaveOneOut)
    }
}
