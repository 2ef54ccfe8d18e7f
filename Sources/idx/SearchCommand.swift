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
        do {
            // A query is a few tokens and the scan has its own threads; OpenBLAS's idle
            // workers would spin on the cores it needs.
            BLASRuntime.useOneThread()
            let settings = self.settings
            try settings.validate()
            if let bench {
                try runBench(VectorSearcher(VectorIndexReader(directory: index, verifyMetadata: false)), queries: bench)
                return
            }
            if let file = queryVectors {
                let reader = try VectorIndexReader(directory: index, verifyMetadata: false)
                let searcher = VectorSearcher(reader)
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
            let engine = try SearchEngine(index: index)
            if (lexicalWeight ?? engine.reader.manifest.lexicalWeight ?? 0) > 0 && engine.reader.lexical == nil {
                FileHandle.standardError.write(Data("warning: \(index) has no lexical half (built by an older idx or from raw vectors); searching by cosine alone. Rebuild it with idx index for hybrid search.\n".utf8))
            }
            try runText(engine, settings)
        } catch let e as IdxError {
            FileHandle.standardError.write(Data(("error: " + e.message + "\n").utf8))
            throw ExitCode(1)
        }
    }

    /// Text queries through the one search path (SearchEngine).
    func runText(_ engine: SearchEngine, _ settings: SearchSettings) throws {
        var out = OutputBuffer()
        if stdin {
            var failures = 0
            while let line = try BoundedLineReader.standardInput.next() {
                let text = line.trimmingCharacters(in: .whitespaces)
                if text.isEmpty { continue }
                do { try printHits(engine.search(text, settings), reader: engine.reader, query: text, to: &out) } catch let e as IdxError {
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
            try printHits(engine.search(query, settings), reader: engine.reader, query: query, to: &out)
            out.flush()
        }
    }

    func printHits(_ hits: [SearchHit], reader: VectorIndexReader, query: String, to out: inout OutputBuffer) throws {
        for (rank, h) in hits.enumerated() {
            if json {
                let o = try SearchEngine.jsonObject(h, reader: reader, rank: rank + 1, query: query)
                let data = try JSONSerialization.data(withJSONObject: o, options: [.sortedKeys, .withoutEscapingSlashes])
                out.write(String(decoding: data, as: UTF8.self) + "\n")
            } else {
                let m = try reader.documentMetadata(h.index)
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
