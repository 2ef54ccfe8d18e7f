import ArgumentParser
import Foundation
import IdxCorpus

struct IngestCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ingest",
        abstract: "Clean CSV synopses, train a WordLevel tokenizer, write zstd token shards and a manifest.",
        discussion: """
        Streams each CSV (libcsv), applies the cleaning rules to the description column, trains the \
        tokenizer (or reuses --tokenizer), and publishes corpora/<name>/ atomically. \
        `idx ingest --verify DIR` re-reads every shard and checks checksums and counts.
        """
    )

    @Argument(help: "CSV files (default: corpora/sample/movies.csv).")
    var csv: [String] = []

    @Option(help: "Output folder (default: corpora/<stem of the first CSV>).")
    var out: String?

    @Option(help: "Reuse this tokenizer.json instead of training one (keeps a trained model's vocabulary).")
    var tokenizer: String?

    @Option(help: "Vocabulary size when training, the 5 special tokens included (the reference notebook: \(Ingest.referenceVocabSize)).")
    var vocabSize: Int = Ingest.defaultVocabSize

    @Flag(inversion: .prefixedNo, help: "Read each document as \"Title. description\" for the tokenizer and the model (titles name subjects and franchises the synopsis leaves out; BM25 reads them either way). --no-titles: descriptions only, as the reference notebook.")
    var titles = false

    @Option(name: .customLong("case"), help: "Letter case of the vocabulary: lower (a Lowercase normalizer: typed queries are lower-case, synopses are not) or keep (the reference notebook's case-sensitive words).")
    var letterCase: LetterCase = .lower

    enum LetterCase: String, ExpressibleByArgument, CaseIterable { case lower, keep }

    @Flag(help: "Keep every row as its own document (by default a film listed under several genres, the same title, year and description, is one document carrying all its genres).")
    var keepDuplicates = false

    @Option(help: "Documents per shard.")
    var shardDocs: Int = 50_000

    @Flag(help: "Replace an existing --out folder even if it holds files idx did not write (never one holding an input).")
    var force = false

    @Option(help: "Verify an existing corpus folder instead of ingesting.")
    var verify: String?

    func run() throws {
        try reportingErrors {
            if let dir = verify {
                print(try CorpusReader(directory: dir).verify())
                return
            }
            let inputs = csv.isEmpty ? ["corpora/sample/movies.csv"] : csv
            let stem = URL(fileURLWithPath: inputs[0]).deletingPathExtension().lastPathComponent
            var options = Ingest.Options(inputs: inputs, output: out ?? "corpora/\(stem)", tokenizerPath: tokenizer,
                                         vocabSize: vocabSize, shardDocuments: shardDocs)
            options.showProgress = true
            options.titlesInText = titles
            options.deduplicate = !keepDuplicates
            options.lowercase = letterCase == .lower
            options.force = force
            let summary = try Ingest.run(options) { FileHandle.standardError.write(Data(("warning: " + $0 + "\n").utf8)) }
            FileHandle.standardError.write(Data((summary.line + "\n").utf8))
        }
    }
}
