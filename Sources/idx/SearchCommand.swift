import ArgumentParser
import Foundation
import IdxBase
import IdxModel
import IdxStore
import IdxSearch

public struct SearchCommand: ParsableCommand {
    public init() {}

    public static let configuration = CommandConfiguration(
        commandName: "search",
        abstract: "Find the documents closest to a query (hybrid of cosine similarity and BM25).",
        discussion: """
        The query is cleaned and tokenized as the corpus was, embedded with the index's model, and \
        scored against every vector (int8 scan, exact re-rank of the best candidates). The indexes idx \
        index builds also hold a BM25 index over the full vocabulary, so words the model does not know \
        still count: the two rankings merge by reciprocal-rank fusion, (1 - w) / (60 + cosine rank) + \
        w / (60 + BM25 rank) (--fusion blend: (1 - w) * cosine + w * BM25 / best BM25). A second pass \
        then moves the query's embedding toward its best first hits, adds their best words to its BM25 \
        query (relevance feedback) and scores again (--feedback-docs 0: one pass). Each film is listed once.
        """
    )
    @Argument(help: "The query text.") var query: String?
    @Option(name: .short, help: "Number of results.") var k: Int = 10
    @Option(help: "Index folder.") var index: String = "indexes/movies"
    @Option(help: "Only documents of this genre (case-insensitive).") var genre: String?
    @Flag(help: "One JSON object per result.") var json = false
    @Flag(help: "Read one query per line from standard input.") var stdin = false
    @Option(help: "Scan threads (0: all cores).") var threads: Int = 0
    @Option(help: "BM25 share w of the hybrid score, 0 (cosine only) to 1 (BM25 only). (default: the index's)")
    var lexicalWeight: Float?
    @OptionGroup var feedback: FeedbackOptions
    @Option(help: ArgumentHelp("Developer: candidates re-ranked exactly (default max(8k, 100)).", visibility: .hidden))
    var rerank: Int?
    @Option(help: ArgumentHelp("Developer: raw float32 query embeddings (one row per query) instead of text.", visibility: .hidden))
    var queryVectors: String?
    @Option(help: ArgumentHelp("Developer: time the scan on these raw float32 queries and print per-query figures.", visibility: .hidden))
    var bench: String?
    @Option(help: ArgumentHelp("Developer: with --bench, the float32 base vectors the index was built from, for exact recall.", visibility: .hidden))
    var reference: String?

    var settings: SearchSettings {
        var s = SearchSettings(k: k)
        s.genre = genre
        s.lexicalWeight = lexicalWeight
        s.feedback = feedback.feedback
        s.fusion = feedback.fusion
        s.threads = threads
        s.rerank = rerank
        return s
    }

    public func run() throws {
        try reportingErrors {
            // A query is a few tokens and the scan has its own threads; OpenBLAS's idle
            // workers would spin on the cores it needs.
            BLASRuntime.useOneThread()
            let settings = self.settings
            try settings.validate()
            if let bench {
                let searcher = VectorSearcher(try VectorIndexReader(directory: index, verification: .onFirstRead))
                let benchmark = ScanBenchmark(k: k, genre: genre, threads: threads, rerank: rerank)
                for line in try benchmark.run(searcher, queries: bench, reference: reference) { print(line) }
                return
            }
            var out = OutputBuffer()
            defer { out.flush() }
            if let file = queryVectors {
                let reader = try VectorIndexReader(directory: index, verification: .onFirstRead)
                let (q, d) = try RawVectors.read(file, dimension: reader.dimension)
                let index: any VectorIndex = VectorSearcher(reader)
                let rows = (0 ..< q.count / d).flatMap { reader.prepareQuery(Array(q[$0 * d ..< ($0 + 1) * d])) }
                for (i, hits) in try index.search(rows, k: k, filter: SearchFilter(genre: genre)).enumerated() {
                    try printHits(hits, reader: reader, query: "vector \(i)", to: &out)
                }
                return
            }
            let engine = try SearchEngine(index: index)
            if (lexicalWeight ?? engine.reader.manifest.lexicalWeight ?? 0) > 0 && engine.reader.lexical == nil {
                printError("\(index) has no lexical half (built by an older idx or from raw vectors); searching by cosine alone. Rebuild it with idx index for hybrid search.", prefix: "warning: ")
            }
            guard stdin else {
                guard let query else { throw IdxError("no query: give one (idx search \"alien robot\") or --stdin for one per line.") }
                return try printHits(engine.search(query, settings), reader: engine.reader, query: query, to: &out)
            }
            var failures = 0
            let input = BoundedLineReader.standardInput()
            while let line = try input.next() {
                let text = line.trimmingCharacters(in: .whitespaces)
                if text.isEmpty { continue }
                do { try printHits(engine.search(text, settings), reader: engine.reader, query: text, to: &out) } catch let e as IdxError {
                    out.flush()
                    printError(e.message)
                    failures += 1
                }
            }
            if failures > 0 { out.flush(); throw ExitCode(1) }
        }
    }

    func printHits(_ hits: [SearchHit], reader: VectorIndexReader, query: String, to out: inout OutputBuffer) throws {
        for (rank, h) in hits.enumerated() {
            out.write((json ? try SearchEngine.jsonLine(h, reader: reader, rank: rank + 1, query: query)
                            : try SearchEngine.textLine(h, reader: reader, rank: rank + 1)) + "\n")
        }
        if !json && stdin { out.write("\n") }
    }
}
