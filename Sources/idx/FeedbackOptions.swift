import ArgumentParser
import IdxSearch

extension VectorSearcher.Fusion: ExpressibleByArgument {}

/// The second search pass (RelevanceFeedback), shared by idx search and idx eval so that
/// eval measures what search answers.
struct FeedbackOptions: ParsableArguments {
    @Option(help: "How the dense and BM25 sides combine: blend ((1 - w) * cosine + w * BM25 / best BM25) or rrf (reciprocal-rank fusion of each side's best 1,000, weighted by the BM25 share).")
    var fusion = VectorSearcher.Fusion.standard

    @Option(help: "Relevance feedback: the first pass's best documents the second pass moves the query toward, and the films that vote on genres with --genre-vote (0: one pass, no vote).")
    var feedbackDocs = RelevanceFeedback.standard.documents

    @Option(help: "Relevance feedback: the weight of their mean direction against the query's 1.")
    var feedbackWeight = RelevanceFeedback.standard.weight

    @Option(help: "Relevance feedback: the weight of those documents' best terms in the second BM25 query, against the query's own 1 (0: BM25 scores as in the first pass).")
    var feedbackLexicalWeight = RelevanceFeedback.standard.lexicalWeight

    @Option(help: "Relevance feedback: how many of those documents' terms the second BM25 query gains.")
    var feedbackTerms = RelevanceFeedback.standard.lexicalTerms

    @Option(help: "Genre vote, off by default (it reads the corpus's genre labels): the final list's best --feedback-docs films vote for their genres, and its best 100 are re-ranked by rank and agreement; this weighs full agreement against a first place's 1, such as 1 (0: no vote).")
    var genreVote = RelevanceFeedback.standard.genreWeight

    func validate() throws {
        guard feedbackDocs >= 0 else { throw ValidationError("--feedback-docs \(feedbackDocs): give 0 (one pass) or more documents.") }
        guard feedbackWeight >= 0, feedbackWeight.isFinite else { throw ValidationError("--feedback-weight \(feedbackWeight): give a weight of 0 or more.") }
        guard feedbackLexicalWeight >= 0, feedbackLexicalWeight.isFinite else { throw ValidationError("--feedback-lexical-weight \(feedbackLexicalWeight): give a weight of 0 or more.") }
        guard genreVote >= 0, genreVote.isFinite else { throw ValidationError("--genre-vote \(genreVote): give a weight of 0 (no vote) or more.") }
        guard feedbackTerms >= 0 else { throw ValidationError("--feedback-terms \(feedbackTerms): give 0 or more terms.") }
    }

    var feedback: RelevanceFeedback {
        RelevanceFeedback(documents: feedbackDocs, weight: feedbackWeight, lexicalWeight: feedbackLexicalWeight, lexicalTerms: feedbackTerms,
                          genreWeight: genreVote)
    }
}
