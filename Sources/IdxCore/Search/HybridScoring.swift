import Foundation

/// Hybrid relevance: (1 − w) · cosine(query, document) + w · BM25(query, document) / best BM25
/// of that query. The BM25 side reads the full vocabulary (the model's 8,000 words miss 9% of
/// the tokens, the notebook's 2,000 a fifth) and the dense side generalises past exact words; dividing by the
/// query's best BM25 puts both on a 0…1 scale whatever the query's length.
public enum HybridScoring {
    /// Chosen on IMDB-Genres (scripts/bench-quality prints the sweep): for the default model
    /// (8,000 words, whole documents, ending with contrastive steps) genre kNN@10 peaks at 0.4
    /// (0.5 for the MLM-only models before it: the better the embeddings, the smaller BM25's share).
    public static let defaultLexicalWeight: Float = 0.4

    /// The query's BM25 scores over every document of `scorer`, divided by their maximum
    /// (all 0 when no term matches). `terms`: LexicalAnalyzer.terms of the cleaned query.
    public static func normalizedBM25(_ scorer: BM25Scorer, terms: [String]) -> [Float] {
        let q = scorer.query(terms: terms)
        var scores = [Float](repeating: 0, count: scorer.documentCount)
        guard !q.isEmpty else { return scores }
        scores.withUnsafeMutableBufferPointer { s in
            let best = scorer.score(q, into: s.baseAddress!)
            if best > 0 {
                let inv = 1 / best
                for i in 0 ..< s.count { s[i] *= inv }
            }
        }
        return scores
    }
}

/// One query's lexical side for `VectorSearcher.search`.
public struct LexicalScores {
    /// Normalised BM25 of every document in index order (HybridScoring.normalizedBM25).
    public var scores: [Float]
    /// Its share w of the hybrid score; 1 scores by BM25 alone (no usable embedding).
    public var weight: Float
    public init(scores: [Float], weight: Float) { self.scores = scores; self.weight = weight }
}
