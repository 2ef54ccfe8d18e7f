import Foundation
import IdxLexical
import IdxStore

/// Hybrid relevance: (1 − w) · cosine(query, document) + w · BM25(query, document) / best BM25
/// of that query. The BM25 side reads the full vocabulary (the model's 8,000 words miss 9% of
/// the tokens, the notebook's 2,000 a fifth) and the dense side generalises past exact words; dividing by the
/// query's best BM25 puts both on a 0…1 scale whatever the query's length.
public enum HybridScoring {
    /// The share a new index records by default (declared by the store, which writes it).
    public static let defaultLexicalWeight: Float = VectorIndexWriter.defaultLexicalWeight

    /// Under blending, queries the model reads as at most this many tokens ("alien robot")
    /// score with at least `shortQueryLexicalWeight` when the index's share is used: a model
    /// trained on halves of synopses (`--contrastive-pairs halves`) puts a two-word query's
    /// embedding among the shortest, emptiest documents ("The plot is undisclosed."), and a
    /// blended cosine then outweighs BM25. Reciprocal-rank fusion compares ranks, not scores,
    /// and keeps the index's share.
    public static let shortQueryTokens = 6
    public static let shortQueryLexicalWeight: Float = 0.7

    /// The BM25 share for a query of `queryTokens` model tokens under the index's share `w`
    /// (0 stays 0: an index written for cosine alone).
    public static func weight(_ w: Float, queryTokens: Int, fusion: VectorSearcher.Fusion) -> Float {
        fusion == .blend && w > 0 && queryTokens <= shortQueryTokens ? max(w, shortQueryLexicalWeight) : w
    }

    /// The query's BM25 scores over every document of `scorer`, divided by their maximum
    /// (all 0 when no term matches). `terms`: LexicalAnalyzer.terms of the cleaned query.
    public static func normalizedBM25(_ scorer: BM25Scorer, terms: [String]) throws -> [Float] {
        normalizedBM25(scorer, query: try scorer.query(terms: terms))
    }

    public static func normalizedBM25(_ scorer: BM25Scorer, query q: BM25Scorer.Query) -> [Float] {
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

    /// A query's lexical side for `VectorSearcher.search`: its normalised BM25 at share `weight`,
    /// and, when `feedback` expands BM25 queries, the second pass's scores from the first's best
    /// documents (`documentText`: a document's lexical text, as indexed). nil when no term matches.
    public static func lexicalScores(_ scorer: BM25Scorer, terms: [String], weight: Float, feedback: RelevanceFeedback?,
                                     documentText: @escaping (Int) -> String) throws -> LexicalScores? {
        let q = try scorer.query(terms: terms)
        let scores = normalizedBM25(scorer, query: q)
        guard scores.contains(where: { $0 > 0 }) else { return nil }
        var lexical = LexicalScores(scores: scores, weight: weight)
        if let feedback, feedback.isLexical {
            lexical.expanded = { ids in
                normalizedBM25(scorer, query: try scorer.expanded(q, documents: ids.map { ($0, documentText($0)) },
                                                             weight: feedback.lexicalWeight, terms: feedback.lexicalTerms))
            }
        }
        return lexical
    }
}

/// One query's lexical side for `VectorSearcher.search`.
public struct LexicalScores {
    /// Normalised BM25 of every document in index order (HybridScoring.normalizedBM25).
    public var scores: [Float]
    /// Its share w of the hybrid score; 1 scores by BM25 alone (no usable embedding).
    public var weight: Float
    /// The second pass's scores from the first pass's best documents (RelevanceFeedback's BM25
    /// side); nil: the second pass scores with `scores` again.
    public var expanded: (([Int]) throws -> [Float])?
    public init(scores: [Float], weight: Float, expanded: (([Int]) throws -> [Float])? = nil) {
        self.scores = scores; self.weight = weight; self.expanded = expanded
    }
}
