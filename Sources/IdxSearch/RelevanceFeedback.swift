/// Pseudo-relevance feedback: search once, then search again with the query moved toward its
/// best `documents` hits. The dense side (Rocchio): q' = unit(q + weight · unit(mean of their
/// vectors)). The BM25 side (BM25Scorer.expanded): the query's terms plus the hits' best
/// `lexicalTerms` terms at `lexicalWeight`. A short query ("alien robot") or a noisy synopsis
/// borrows the vocabulary of the films it already found; one more scan costs about as much as
/// the first.
///
/// Measured with idx eval on IMDB-Genres and the default model (docs/search-quality.md): genre
/// kNN@10 0.3515 → 0.3578 on validation.csv, 0.3419 → 0.3491 leave-one-out on train.csv, where
/// the settings were chosen (5 documents, weight 2). The BM25 side, on the default model of
/// 4 Dec (6,000 contrastive steps): 0.3793 → 0.3832 on validation.csv, and 0.3696 → 0.3765
/// leave-one-out on 4,000 train.csv documents, where its settings were chosen (50 terms, weight 2).
public struct RelevanceFeedback: Equatable, Codable, Sendable {
    /// How many of the first pass's best documents feed back (0: no second pass).
    public var documents: Int
    /// The share of their mean direction in the second query (the query itself counts 1).
    public var weight: Float

    /// The expansion terms' share of the second BM25 query (the query's own terms count 1; 0: the
    /// BM25 side is left as it was).
    public var lexicalWeight: Float
    /// How many of the hits' terms the BM25 query gains.
    public var lexicalTerms: Int

    public init(documents: Int, weight: Float, lexicalWeight: Float = 0, lexicalTerms: Int = 50) {
        self.documents = documents; self.weight = weight; self.lexicalWeight = lexicalWeight; self.lexicalTerms = lexicalTerms
    }

    public static let standard = RelevanceFeedback(documents: 5, weight: 2, lexicalWeight: 2, lexicalTerms: 50)

    public var isActive: Bool { documents > 0 && (weight > 0 || isLexical) }
    /// Whether the second pass expands the BM25 query.
    public var isLexical: Bool { documents > 0 && lexicalWeight > 0 && lexicalTerms > 0 }

    /// unit(query + weight · unit(mean of `count` rows of `vectors`)), `dim` floats a row.
    /// The query comes back as it is when the rows cancel out (a zero mean has no direction).
    public func expanded(_ query: [Float], rows vectors: UnsafePointer<Float>, count: Int, dim: Int) -> [Float] {
        precondition(query.count == dim)
        guard count > 0 else { return query }
        var mean = [Float](repeating: 0, count: dim)
        for r in 0 ..< count {
            for j in 0 ..< dim { mean[j] += vectors[r * dim + j] }
        }
        var norm: Float = 0
        for x in mean { norm += x * x }
        guard norm > 0 else { return query }
        let scale = weight / norm.squareRoot()
        var out = query
        var total: Float = 0
        for j in 0 ..< dim { out[j] += scale * mean[j]; total += out[j] * out[j] }
        guard total > 0 else { return query }
        let inv = 1 / total.squareRoot()
        for j in 0 ..< dim { out[j] *= inv }
        return out
    }
}
