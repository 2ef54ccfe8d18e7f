/// Pseudo-relevance feedback on the dense side (Rocchio): search once, then search again with
/// the query moved toward the mean direction of its best `documents` hits,
/// q' = unit(q + weight · unit(mean of their vectors)). The BM25 half is left as it was.
/// A short query ("alien robot") or a noisy synopsis borrows the vocabulary of the films it
/// already found; one more scan costs about as much as the first.
///
/// Measured with idx eval on IMDB-Genres and the default model (docs/search-quality.md): genre
/// kNN@10 0.3515 → 0.3578 on validation.csv, 0.3419 → 0.3491 leave-one-out on train.csv, where
/// the settings were chosen (5 documents, weight 2).
public struct RelevanceFeedback: Equatable, Codable, Sendable {
    /// How many of the first pass's best documents feed back (0: no second pass).
    public var documents: Int
    /// The share of their mean direction in the second query (the query itself counts 1).
    public var weight: Float

    public init(documents: Int, weight: Float) { self.documents = documents; self.weight = weight }

    public static let standard = RelevanceFeedback(documents: 5, weight: 2)

    public var isActive: Bool { documents > 0 && weight > 0 }

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
