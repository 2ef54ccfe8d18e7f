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
    /// The genre vote's weight (`genreVoted`; 0: none): the final list's best `documents` hits
    /// vote for their genres, and the list is re-ranked by its rank and each film's agreement.
    /// Off in `standard`: it reads the corpus's genre labels, which judge the typed-query
    /// figures, so the defaults stay label-free.
    public var genreWeight: Float

    public init(documents: Int, weight: Float, lexicalWeight: Float = 0, lexicalTerms: Int = 50, genreWeight: Float = 0) {
        self.documents = documents; self.weight = weight; self.lexicalWeight = lexicalWeight; self.lexicalTerms = lexicalTerms
        self.genreWeight = genreWeight
    }

    enum CodingKeys: String, CodingKey { case documents, weight, lexicalWeight, lexicalTerms, genreWeight }

    /// Settings written before the genre vote existed read as without it.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(documents: try c.decode(Int.self, forKey: .documents), weight: try c.decode(Float.self, forKey: .weight),
                  lexicalWeight: try c.decodeIfPresent(Float.self, forKey: .lexicalWeight) ?? 0,
                  lexicalTerms: try c.decodeIfPresent(Int.self, forKey: .lexicalTerms) ?? 50,
                  genreWeight: try c.decodeIfPresent(Float.self, forKey: .genreWeight) ?? 0)
    }

    public static let standard = RelevanceFeedback(documents: 5, weight: 2, lexicalWeight: 2, lexicalTerms: 50, genreWeight: 0)

    /// Whether the genre vote re-ranks the final list.
    public var isGenreVote: Bool { documents > 0 && genreWeight > 0 }
    /// How many of the final list's best films the genre vote re-ranks (at least k).
    public static let genreVoteDepth = 100

    /// The genre vote: a list's best `documents` films each give one vote, shared evenly among
    /// their genres; a film's agreement is the mean vote of its own genres (0 to 1). Each film
    /// then scores 1 / (60 + rank) + genreWeight · agreement / 60, in reciprocal-rank fusion's
    /// units: full agreement is worth about a first place. A typed query's best hits usually
    /// agree on what kind of film it asks for even when some of the rest do not, and the films
    /// the query's words matched only by chance ("house", "young", "family") are of other kinds.
    /// `genres` are the list's films' genres in rank order (lower-cased); returns the new order
    /// as positions in the list, with each one's score.
    public func genreVoted(_ genres: [[String]]) -> [(position: Int, score: Float)] {
        var votes: [String: Float] = [:]
        let voters = genres.prefix(documents).filter { !$0.isEmpty }
        for list in voters {
            for g in list { votes[g, default: 0] += 1 / Float(list.count * voters.count) }
        }
        return genres.enumerated().map { r, list in
            let agreement = list.isEmpty ? 0 : list.reduce(Float(0)) { $0 + votes[$1, default: 0] } / Float(list.count)
            let c = VectorSearcher.reciprocalRankConstant
            return (r, 1 / (c + Float(r + 1)) + genreWeight * agreement / c)
        }.sorted { $0.score != $1.score ? $0.score > $1.score : $0.position < $1.position }
    }

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
