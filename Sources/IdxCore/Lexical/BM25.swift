import Foundation

/// Okapi BM25 over the lexical segments of one index generation, with document
/// frequencies and the mean document length summed over every live segment (so an
/// appended segment shifts the statistics exactly as one big segment would).
///
/// Query term weight (1 + ln qtf) · idf, idf = ln(1 + (N − df + 0.5) / (df + 0.5)),
/// document weight tf (k1 + 1) / (tf + k1 (1 − b + b · len / avglen)), k1 1.2, b 0.75.
/// The query side's sublinear tf lets a whole document serve as a query ("more like
/// this", and idx eval's validation documents): measured on IMDB-Genres validation vs
/// train, genre kNN precision@10 0.319 against plain TF-IDF's 0.305.
public struct BM25Scorer {
    public static let k1: Float = 1.2
    public static let b: Float = 0.75

    let segments: [LexicalSegmentReader]
    let starts: [Int]
    /// k1 (1 − b + b · len / avglen) of every document, in index order.
    private let lengthNorm: [Float]
    public var documentCount: Int { starts.last ?? 0 }

    init(segments: [LexicalSegmentReader]) {
        self.segments = segments
        var starts = [0]
        var total = 0
        for s in segments { starts.append(starts.last! + s.documentCount); total += s.totalLength }
        self.starts = starts
        let n = starts.last!
        let avg = n > 0 ? max(Float(total) / Float(n), 1e-6) : 1
        var norm = [Float](repeating: 0, count: n)
        for (k, s) in segments.enumerated() {
            for r in 0 ..< s.documentCount {
                norm[starts[k] + r] = Self.k1 * (1 - Self.b + Self.b * Float(s.length(r)) / avg)
            }
        }
        lengthNorm = norm
    }

    /// A query's distinct terms with their weights; terms no document holds are dropped.
    public struct Query {
        public var terms: [[UInt8]]
        /// (segment, term index in it) for each term, nil where the segment lacks it.
        var locations: [[Int?]]
        public var weights: [Float]
        public var isEmpty: Bool { terms.isEmpty }
    }

    public func query(terms: [String]) -> Query {
        var counts: [String: Int] = [:]
        var order: [String] = []
        for t in terms {
            if counts[t] == nil { order.append(t) }
            counts[t, default: 0] += 1
        }
        let n = Float(documentCount)
        var q = Query(terms: [], locations: [], weights: [])
        for t in order {
            let bytes = Array(t.utf8)
            let where_ = segments.map { $0.find(bytes) }
            var df = 0
            for (k, loc) in where_.enumerated() { if let loc { df += segments[k].documentFrequency(loc) } }
            guard df > 0 else { continue }
            let idf = Foundation.log(1 + (n - Float(df) + 0.5) / (Float(df) + 0.5))
            q.terms.append(bytes); q.locations.append(where_)
            q.weights.append((1 + Foundation.log(Float(counts[t]!))) * idf)
        }
        return q
    }

    /// BM25 of every document into `scores` (documentCount floats, overwritten; 0 where no
    /// term matches). Returns the largest score (0 for an empty query).
    @discardableResult
    public func score(_ q: Query, into scores: UnsafeMutablePointer<Float>) -> Float {
        scores.update(repeating: 0, count: documentCount)
        let k1p1 = Self.k1 + 1
        lengthNorm.withUnsafeBufferPointer { norm in
            for (i, w) in q.weights.enumerated() {
                for (k, s) in segments.enumerated() {
                    guard let t = q.locations[i][k] else { continue }
                    let base = starts[k]
                    s.forEachPosting(t) { row, tf in
                        let f = Float(tf), d = base + row
                        scores[d] += w * f * k1p1 / (f + norm[d])
                    }
                }
            }
        }
        var best: Float = 0
        for i in 0 ..< documentCount { best = max(best, scores[i]) }
        return best
    }
}
