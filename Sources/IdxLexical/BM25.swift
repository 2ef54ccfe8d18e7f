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

    public init(segments: [LexicalSegmentReader]) {
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
        /// Each term's idf.
        var idfs: [Float]
        public var weights: [Float]
        public var isEmpty: Bool { terms.isEmpty }
    }

    /// Throws when a term's postings, checked on first read, are damaged.
    public func query(terms: [String]) throws -> Query {
        var q = Query(terms: [], locations: [], idfs: [], weights: [])
        for (bytes, count) in Self.distinct(terms) {
            guard let (where_, idf) = try lookup(bytes) else { continue }
            q.terms.append(bytes); q.locations.append(where_); q.idfs.append(idf)
            q.weights.append((1 + Foundation.log(Float(count))) * idf)
        }
        return q
    }

    /// Each distinct term as bytes, with its count, in order of first appearance.
    private static func distinct(_ terms: [String]) -> [(term: [UInt8], count: Int)] {
        var position: [String: Int] = [:]
        var out: [(term: [UInt8], count: Int)] = []
        for t in terms {
            if let i = position[t] { out[i].count += 1; continue }
            position[t] = out.count
            out.append((Array(t.utf8), 1))
        }
        return out
    }

    /// BM25's document-side weight of a term found `tf` times in a document whose
    /// k1 (1 − b + b · len / avglen) is `norm`.
    @inline(__always)
    private static func termWeight(tf: Float, norm: Float) -> Float { tf * (k1 + 1) / (tf + norm) }

    /// The term's place in every segment and its idf; nil when no document holds it. Its
    /// postings are checked (`LexicalSegmentReader.postingsChecked`) before any query reads them.
    private func lookup(_ term: [UInt8]) throws -> ([Int?], Float)? {
        let where_ = segments.map { $0.find(term) }
        var df = 0
        for (k, loc) in where_.enumerated() {
            if let loc { try segments[k].postingsChecked(loc); df += segments[k].documentFrequency(loc) }
        }
        guard df > 0 else { return nil }
        return (where_, Foundation.log(1 + (Float(documentCount) - Float(df) + 0.5) / (Float(df) + 0.5)))
    }

    /// Query expansion from pseudo-relevant documents (RM3's shape, BM25's weights): each of
    /// `documents` (index, its lexical text as indexed) gives every term its idf · BM25 term
    /// weight in that document, divided by the document's total; their mean keeps its best
    /// `terms` terms. The new query is q / (sum of q's weights) + weight · that mean, so the
    /// query and the expansion each count as a whole, whatever their lengths, and then each
    /// term's weight times its idf once more, which favours the rare words that tell films apart
    /// (chosen leave-one-out on train.csv, docs/search-quality.md). Synopses say the same thing
    /// in many words: the films a query already found bring the words it lacks.
    public func expanded(_ q: Query, documents: [(index: Int, text: String)], weight: Float, terms: Int) throws -> Query {
        guard !documents.isEmpty, weight > 0, terms > 0 else { return q }
        var mean: [[UInt8]: Float] = [:]
        // Each term's lookup, once for all the documents (nil: no document holds it).
        var located: [[UInt8]: ([Int?], Float)?] = [:]
        for (d, text) in documents {
            var weights: [([UInt8], Float)] = []
            var total: Float = 0
            for (t, count) in Self.distinct(LexicalAnalyzer.terms(text)) {
                if located[t] == nil { located[t] = .some(try lookup(t)) }
                guard let (_, idf) = located[t]! else { continue }
                let w = idf * Self.termWeight(tf: Float(count), norm: lengthNorm[d])
                weights.append((t, w)); total += w
            }
            guard total > 0 else { continue }
            for (t, w) in weights { mean[t, default: 0] += w / (total * Float(documents.count)) }
        }
        // The best `terms` (ties: the smaller term first, so the expansion is reproducible).
        let best = mean.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key.lexicographicallyPrecedes($1.key) }.prefix(terms)
        let qTotal = q.weights.reduce(0, +)
        var out = Query(terms: q.terms, locations: q.locations, idfs: q.idfs, weights: q.weights.map { qTotal > 0 ? $0 / qTotal : 0 })
        var position: [[UInt8]: Int] = [:]
        for (i, t) in out.terms.enumerated() { position[t] = i }
        for (t, m) in best {
            if let i = position[t] { out.weights[i] += weight * m; continue }
            position[t] = out.terms.count
            let (where_, idf) = located[t]!!
            out.terms.append(t); out.locations.append(where_); out.idfs.append(idf); out.weights.append(weight * m)
        }
        for i in out.weights.indices { out.weights[i] *= out.idfs[i] }
        return out
    }

    /// BM25 of every document into `scores` (documentCount floats, overwritten; 0 where no
    /// term matches). Returns the largest score (0 for an empty query).
    @discardableResult
    public func score(_ q: Query, into scores: UnsafeMutablePointer<Float>) -> Float {
        scores.update(repeating: 0, count: documentCount)
        lengthNorm.withUnsafeBufferPointer { norm in
            for (i, w) in q.weights.enumerated() {
                for (k, s) in segments.enumerated() {
                    guard let t = q.locations[i][k] else { continue }
                    let base = starts[k]
                    s.forEachPosting(t) { row, tf in
                        let d = base + row
                        scores[d] += w * Self.termWeight(tf: Float(tf), norm: norm[d])
                    }
                }
            }
        }
        // The largest, eight lanes at a time (a scalar `max` does not vectorize; scores are ≥ 0).
        let n = documentCount
        var lanes = SIMD8<Float>(repeating: 0)
        var i = 0
        while i + 8 <= n {
            let v = UnsafeRawPointer(scores + i).loadUnaligned(as: SIMD8<Float>.self)
            lanes.replace(with: v, where: v .> lanes)
            i += 8
        }
        var best = lanes.max()
        while i < n { best = max(best, scores[i]); i += 1 }
        return best
    }
}
