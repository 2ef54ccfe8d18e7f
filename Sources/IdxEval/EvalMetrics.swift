import Foundation
import IdxBase
import IdxCorpus
import IdxSearch

/// The two embedding-quality measures of `idx eval`: the seed test's cluster separation, over
/// plain row-major vectors (`n × dim` floats, normalised first: defined by cosine alone), and
/// genre kNN precision, over the neighbours the search engine found.
public enum EvalMetrics {
    /// Rows scaled to unit length (a zero row stays zero: its cosine with anything is 0).
    public static func normalizedRows(_ v: [Float], dim: Int) -> [Float] {
        precondition(dim > 0 && v.count % dim == 0, "vectors must be n × dim")
        var out = v
        UnitVectors.normalizeRows(&out, dimension: dim)
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

    public struct KNNPrecision: Codable, Equatable {
        public var k: Int
        /// Mean over queries of (neighbours with the query's label) / k.
        public var precision: Double
        public var queries: Int
        public var leaveOneOut: Bool
        /// Each query's neighbours, best first (not written to reports: a list a query).
        public var neighbours: [[Int]] = []
        enum CodingKeys: String, CodingKey { case k, precision, queries, leaveOneOut }
    }

    /// Genre kNN precision@k: for each query, the share of its k nearest base documents
    /// (`neighbours`, found by SearchEngine as idx search finds them) that share a genre with
    /// the query (a label is one genre, or a film's comma-separated genres: ingest merges a film
    /// listed under several). A list shorter than k counts its missing places as misses.
    public static func knnPrecision(neighbours: [[Int]], queryLabels: [String], baseLabels: [String], k: Int = 10,
                                    leaveOneOut: Bool = false) throws -> KNNPrecision {
        guard neighbours.count == queryLabels.count else {
            throw IdxError("kNN precision: \(neighbours.count) neighbour lists for \(queryLabels.count) queries.")
        }
        let needed = k + (leaveOneOut ? 1 : 0)
        guard baseLabels.count >= needed else {
            throw IdxError("kNN precision@\(k) needs at least \(needed) indexed documents; the index has \(baseLabels.count).")
        }
        guard !queryLabels.isEmpty else { throw IdxError("kNN precision: no query documents.") }
        var sum = 0.0
        for (i, found) in neighbours.enumerated() {
            let same = found.prefix(k).reduce(0) { $0 + (Genres.overlap(baseLabels[$1], queryLabels[i]) ? 1 : 0) }
            sum += Double(same) / Double(k)
        }
        return KNNPrecision(k: k, precision: sum / Double(neighbours.count), queries: neighbours.count, leaveOneOut: leaveOneOut,
                            neighbours: neighbours)
    }
}
