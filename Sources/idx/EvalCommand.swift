import ArgumentParser
import Foundation
import IdxBase
import IdxEval

extension EvalRun.Measure: ExpressibleByArgument {}

struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Score an index and its model: MLM loss, seed-test cluster separation, genre kNN precision@k.",
        discussion: """
        Without --validation, kNN precision is computed leave-one-out over the indexed documents \
        (each document's k nearest other documents) and the MLM loss on the indexed documents; with \
        it, the validation CSV is cleaned and tokenized as the corpus was (rows dropped by cleaning are \
        skipped) and its documents are the queries. Each query is answered by the same search engine \
        as idx search, with the same --fusion, --lexical-weight and feedback options. See \
        docs/nightly.md for the definitions.
        """
    )

    @Option(help: "Index folder.") var index = "indexes/movies"
    @Option(help: "Model folder (default: the one the index was built with).") var model: String?
    @Option(help: "Held-out CSV (same columns as the corpus).") var validation: String?
    @Option(help: "Seed test: text<TAB>label lines.") var seedTest = "corpora/seed-test.tsv"
    @Option(help: "Neighbours for kNN precision.") var k = 10
    @Option(help: "Seed of the MLM masks.") var maskSeed: UInt64 = 1234
    @Option(help: "BM25 share of the hybrid kNN score, 0 (cosine only) to 1. (default: the index's, as idx search)")
    var lexicalWeight: Float?
    @Option(help: "Typed queries (query<TAB>genre lines) to measure through idx search: typed-query precision@k.")
    var queries: String?
    @Option(help: "Leave out a measure (repeatable): \(EvalRun.Measure.allCases.map(\.rawValue).joined(separator: ", ")).")
    var skip: [EvalRun.Measure] = []
    @OptionGroup var feedback: FeedbackOptions
    @Flag(help: "Print JSON instead of the table.") var json = false

    func run() throws {
        try reportingErrors {
            guard k >= 1 else { throw IdxError("--k must be at least 1.") }
            if let w = lexicalWeight, !(0 ... 1).contains(w) {
                throw IdxError("--lexical-weight \(w): give a share from 0 (cosine only) to 1 (BM25 only).")
            }
            var o = EvalRun.Options(index: index, model: model, validation: validation, seedTest: seedTest)
            o.k = k
            o.mlmSeed = maskSeed
            o.showProgress = true
            o.lexicalWeight = lexicalWeight
            o.feedback = feedback.feedback
            o.fusion = feedback.fusion
            o.queries = queries
            o.skip = Set(skip)
            let r = try EvalRun.run(o)
            if json {
                let enc = JSONEncoder()
                enc.outputFormatting = [.prettyPrinted, .sortedKeys]
                print(String(decoding: try enc.encode(r), as: UTF8.self))
            } else {
                print(EvalRun.table(r), terminator: "")
            }
        }
    }
}
