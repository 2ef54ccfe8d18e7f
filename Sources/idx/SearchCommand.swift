import ArgumentParser
import Foundation
import IdxCore

public struct SearchCommand: ParsableCommand {
    public init() {}

    public static let configuration = CommandConfiguration(
        commandName: "search",
        abstract: "Find the documents closest to a query (hybrid of cosine similarity and BM25).",
        discussion: """
        The query is cleaned and tokenized as the corpus was, embedded with the index's model, and \
        scored against every vector (int8 scan, exact re-rank of the best candidates). The indexes idx \
        index builds also hold a BM25 index over the full vocabulary, and score hybrid: \
        (1 - w) * cosine + w * BM25 / best BM25, so words the model does not know still count. \
        A second pass then moves the query's embedding toward its best first hits, adds their best \
        words to its BM25 query (relevance feedback, --feedback-docs 0 turns it off) and scores again.
        """
    )

    @Argument(help: "The query text.")
    var query: String?

    @Option(name: .short, help: "Number of results.")
    var k: Int = 10

    @Option(help: "Index folder.")
    var index: String = "indexes/movies"

    @Option(help: "Only documents of this genre (case-insensitive).")
    var genre: String?

    @Flag(help: "One JSON object per result.")
    var json = false

    @Flag(help: "Read one query per line from standard input.")
    var stdin = false

    @Option(help: "Scan threads (0: all cores).")
    var threads: Int = 0

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

    public func run() throws {
        do {
            // A query is a few tokens and the scan has its own threads; OpenBLAS's idle
            // workers would spin on the cores it needs.
            BLASRuntime.useOneThread()
            guard k > 0 else { throw IdxError("-k \(k): the number of results must be at least 1.") }
            if let w = lexicalWeight, !(0 ... 1).contains(w) {
                throw IdxError("--lexical-weight \(w): give a share from 0 (cosine only) to 1 (BM25 only).")
            }
            let reader = try VectorIndexReader(directory: index, verifyMetadata: false)
            let searcher = VectorSearcher(reader)
            if let bench {
                try runBench(searcher, queries: bench)
                return
            }
            if let file = queryVectors {
                let (q, d) = try readVectors(file, dimension: reader.dimension)
                var out = OutputBuffer()
                for i in 0 ..< q.count / d {
                    let hits = try searcher.search(reader.prepareQuery(Array(q[i * d ..< (i + 1) * d])), k: k,
                                                   genre: genre, threads: threads, rerank: rerank)
                    try printHits(hits, reader: reader, query: "vector \(i)", to: &out)
                }
                out.flush()
                return
            }
            try runText(reader: reader, searcher: searcher)
        } catch let e as IdxError {
            FileHandle.standardError.write(Data(("error: " + e.message + "\n").utf8))
            throw ExitCode(1)
        }
    }

    /// Text queries: the index's model (from its manifest), checked against the index.
    func runText(reader: VectorIndexReader, searcher: VectorSearcher) throws {
        let dir = reader.manifest.modelDirectory
        guard !dir.isEmpty else {
            throw IdxError("\(index): built from raw vectors, with no model to embed text; search it with --query-vectors.")
        }
        let model = try EncoderModel.load(directory: dir)
        try reader.checkModel(modelHash: model.modelHash, tokenizerHash: model.tokenizerHash, modelDirectory: dir)
        let tokenizer = try model.tokenizer()
        var out = OutputBuffer()
        let weight = lexicalWeight ?? reader.manifest.lexicalWeight ?? 0
        if weight > 0 && reader.lexical == nil {
            FileHandle.standardError.write(Data("warning: \(index) has no lexical half (built by an older idx or from raw vectors); searching by cosine alone. Rebuild it with idx index for hybrid search.\n".utf8))
        }
        func answer(_ text: String) throws {
            let cleaned = Cleaning.cleanKeepingShort(text)
            let ids = tokenizer.encode(cleaned)
            let terms = LexicalAnalyzer.terms(cleaned)
            if ids.isEmpty {
                throw IdxError("query \"\(text)\": nothing left after cleaning; type some words.")
            }
            var lexical: LexicalScores?
            if weight > 0, let scorer = reader.lexical {
                // An explicit --lexical-weight is used as given; the index's adapts to short queries.
                let share = lexicalWeight ?? HybridScoring.weight(weight, queryTokens: ids.count)
                lexical = HybridScoring.lexicalScores(scorer, terms: terms, weight: share, feedback: feedback.feedback) {
                    LexicalAnalyzer.documentText(reader.metadata($0))
                }
            }
            let known = !ids.allSatisfy({ $0 == SpecialToken.unk })
            if !known && lexical == nil {
                throw IdxError("query \"\(text)\": none of its words is in the vocabulary of \(dir)"
                               + (reader.lexical == nil ? "" : " or in any indexed document") + "; try other words.")
            }
            var query = [Float](repeating: 0, count: reader.dimension)
            if known {
                var one = TokenizedCorpus()
                one.append(ids)
                query = reader.prepareQuery(model.embed(one, range: 0 ..< 1, maxTokens: reader.manifest.maxTokens, batchSize: 1))
            } else {
                lexical!.weight = 1 // no word the model knows: its embedding would say nothing
            }
            let hits = try searcher.search(query, k: k, genre: genre, threads: threads, rerank: rerank, lexical: lexical,
                                           feedback: feedback.feedback)
            try printHits(hits, reader: reader, query: text, to: &out)
        }
        if stdin {
            var failures = 0
            while let line = readLine() {
                let text = line.trimmingCharacters(in: .whitespaces)
                if text.isEmpty { continue }
                do { try answer(text) } catch let e as IdxError {
                    out.flush()
                    FileHandle.standardError.write(Data(("error: " + e.message + "\n").utf8))
                    failures += 1
                }
            }
            out.flush()
            if failures > 0 { throw ExitCode(1) }
        } else {
            guard let query else {
                throw IdxError("no query: give one (idx search \"alien robot\") or --stdin for one per line.")
            }
            try answer(query)
            out.flush()
        }
    }

    func printHits(_ hits: [SearchHit], reader: VectorIndexReader, query: String, to out: inout OutputBuffer) throws {
        for (rank, h) in hits.enumerated() {
            let m = try reader.documentMetadata(h.index)
            if json {
                var o: [String: Any] = ["query": query, "rank": rank + 1, "score": Double(h.score), "title": m.title,
                                        "genre": m.genre, "expandedGenres": m.expandedGenres, "description": m.description,
                                        "id": try reader.documentId(h.index), "source": "\(m.sourceFile):\(m.sourceRow)"]
                o["cosine"] = Double(h.dense)
                o["bm25"] = Double(h.lexical)
                o["year"] = m.year.map { $0 as Any } ?? NSNull()
                o["rating"] = m.rating.map { (Double($0) * 100).rounded() / 100 as Any } ?? NSNull()
                let data = try JSONSerialization.data(withJSONObject: o, options: [.sortedKeys, .withoutEscapingSlashes])
                out.write(String(decoding: data, as: UTF8.self) + "\n")
            } else {
                let year = m.year.map { " (\($0))" } ?? ""
                let desc = m.description.count > 90 ? String(m.description.prefix(87)) + "..." : m.description
                out.write(String(format: "%2d  %.4f  ", rank + 1, h.score) + "\(m.title)\(year)  [\(m.genre)]  \(desc)\n")
            }
        }
        if !json && stdin { out.write("\n") }
    }

    func runBench(_ searcher: VectorSearcher, queries file: String) throws {
        let reader = searcher.reader
        let d = reader.dimension
        let (q, _) = try readVectors(file, dimension: d)
        let nq = q.count / d
        let queries = (0 ..< nq).map { reader.prepareQuery(Array(q[$0 * d ..< ($0 + 1) * d])) }
        func cpuNow() -> Double {
            var t = timespec(); clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t)
            return Double(t.tv_sec) * 1e3 + Double(t.tv_nsec) / 1e6
        }
        func time(threads: Int) throws -> (Double, Double, [[SearchHit]]) {
            _ = try searcher.search(queries[0], k: k, genre: genre, threads: threads, rerank: rerank) // warm-up
            let t0 = DispatchTime.now().uptimeNanoseconds, c0 = cpuNow()
            var all: [[SearchHit]] = []
            for query in queries { all.append(try searcher.search(query, k: k, genre: genre, threads: threads, rerank: rerank)) }
            return (Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6 / Double(nq), (cpuNow() - c0) / Double(nq), all)
        }
        let (single, singleCPU, hits) = try time(threads: 1)
        let (multi, _, _) = try time(threads: threads)
        print(String(format: "scan: %d vectors x %d dims, %d queries, k=%d: %.3f ms/query wall (%.3f ms CPU) with 1 thread; %.3f ms/query wall with %d threads; int8 dots: %@",
                     reader.count, d, nq, k, single, singleCPU, multi, threads > 0 ? threads : ProcessInfo.processInfo.activeProcessorCount,
                     VectorSearcher.dotKernel))
        if let reference {
            var (base, _) = try readVectors(reference, dimension: d)
            guard base.count == reader.count * d else {
                throw IdxError("\(reference): holds \(base.count / d) vectors, the index \(reader.count); pass the file the index was built from.")
            }
            VectorIndexWriter.prepare(&base, dimension: d, standardization: reader.manifest.standardization)
            var total = 0.0
            base.withUnsafeBufferPointer { b in
                for (i, query) in queries.enumerated() {
                    let exact = ExactSearch.scores(b, dimension: d, query: query)
                    total += ExactSearch.recall(returned: hits[i].map(\.index), exactScores: exact, k: k)
                }
            }
            print(String(format: "recall@%d (tie-aware, vs exact float32 cosine): %.4f", k, total / Double(nq)))
        }
    }
}

/// Buffered stdout: one write per batch of lines.
struct OutputBuffer {
    private var text = ""
    mutating func write(_ s: String) {
        text += s
        if text.utf8.count > 1 << 16 { flush() }
    }
    mutating func flush() {
        FileHandle.standardOutput.write(Data(text.utf8))
        text = ""
    }
}
