import Foundation
import IdxBase
import IdxCorpus
import IdxLexical
import IdxModel
import IdxStore
import IdxSearch

/// `idx eval`: the MLM loss on held-out documents, the seed test's cluster
/// separation, and genre kNN precision@k of an index (see docs/nightly.md).
public enum EvalRun {
    public struct Options {
        public var index: String
        public var model: String?          // default: the model the index was built with
        public var validation: String?     // CSV; nil = leave-one-out on the index
        public var seedTest: String
        public var k = 10
        public var mlmSeed: UInt64 = 1234
        public var batchSize = 64
        public var showProgress = false
        /// The BM25 share of the hybrid kNN score; nil: the index's (0: cosine only).
        public var lexicalWeight: Float?
        /// The second pass of idx search (RelevanceFeedback); documents 0 turns it off.
        public var feedback = RelevanceFeedback.standard
        /// How the dense and BM25 sides combine, in the typed queries and the kNN scores.
        public var fusion = VectorSearcher.Fusion.standard
        /// Typed queries (query<TAB>genre) to measure through the search path (TypedQueries).
        public var queries: String?
        /// The measures to leave out (the typed queries alone take seconds; kNN and the MLM loss more).
        public var skip: Set<Measure> = []
        public init(index: String, model: String? = nil, validation: String? = nil, seedTest: String = "corpora/seed-test.tsv") {
            self.index = index; self.model = model; self.validation = validation; self.seedTest = seedTest
        }
    }

    /// The measures `idx eval` can leave out.
    public enum Measure: String, Codable, CaseIterable, Sendable {
        case knn, mlm
    }

    public struct Report: Codable {
        public var index: String
        public var generation: String
        public var model: String
        public var modelHash: String
        public var indexedDocuments: Int
        public var validation: String?
        public var validationDocuments: Int?
        public var validationDropped: Int?
        public var mlm: MLMLoss.Result?
        public var mlmOn: String             // what the loss was measured on
        public var seedTest: String
        public var seed: EvalMetrics.ClusterSeparation
        public var knn: EvalMetrics.KNNPrecision?
        /// Typed-query precision@k through the search path (with --queries).
        public var typedQueries: TypedQueries.Result?
        /// The BM25 share the kNN scores used (0: cosine alone).
        public var lexicalWeight: Float?
        /// The relevance feedback the kNN scores used (nil: one pass).
        public var feedback: RelevanceFeedback?
        /// How the kNN and typed-query scores combined their two sides (nil: reports before it, blend).
        public var fusion: VectorSearcher.Fusion?
        public var seconds: Double

        public var summary: EvalSummary {
            EvalSummary(mlmLoss: mlm?.loss, seedIntra: seed.intra, seedInter: seed.inter, seedRatio: seed.ratio,
                        knnPrecision: knn?.precision ?? 0, knnK: knn?.k ?? 0, knnQueries: knn?.queries ?? 0,
                        knnLeaveOneOut: knn?.leaveOneOut ?? false, documents: indexedDocuments)
        }
    }

    /// Reads `text<TAB>label` lines (blank lines and `#` comments skipped).
    public static func readSeedTest(_ path: String, what: String = "the seed test (text<TAB>label lines)",
                                    option: String = "--seed-test") throws -> [(text: String, label: String)] {
        guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
            throw IdxError("\(path): cannot read \(what); pass \(option).")
        }
        var out = [(String, String)]()
        for (i, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let l = line.hasSuffix("\r") ? line.dropLast() : line[...]
            if l.trimmingCharacters(in: .whitespaces).isEmpty || l.hasPrefix("#") { continue }
            let parts = l.split(separator: "\t", omittingEmptySubsequences: false)
            guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
                throw IdxError("\(path):\(i + 1): expected `text<TAB>label`, found \(parts.count) tab-separated field(s).")
            }
            out.append((String(parts[0]), String(parts[1])))
        }
        return out
    }

    public static func run(_ o: Options) throws -> Report {
        let t0 = DispatchTime.now().uptimeNanoseconds
        // One engine for every measure: the kNN neighbours and the typed queries are what idx search answers.
        let engine = try SearchEngine(index: o.index, model: o.model)
        let reader = engine.reader
        guard let model = engine.model else {
            throw IdxError("\(o.index): the index does not record its model; pass --model models/<name>.")
        }
        let modelDir = model.directory
        let tokenizer = try model.tokenizer()
        let maxTokens = reader.manifest.maxTokens > 0 ? reader.manifest.maxTokens : 32

        // The seed test: raw mean-pooled embeddings, cosine.
        let seed = try readSeedTest(o.seedTest)
        var seedCorpus = TokenizedCorpus()
        for s in seed { seedCorpus.append(tokenizer.encodeQuery(s.text)) }
        let seedVectors = model.embed(seedCorpus, range: 0 ..< seedCorpus.count, maxTokens: maxTokens, batchSize: o.batchSize)
        let separation = try EvalMetrics.clusterSeparation(seedVectors, dim: model.config.dModel, labels: seed.map(\.label))

        let weight = o.lexicalWeight ?? reader.manifest.lexicalWeight ?? 0
        let lexical = weight > 0 && reader.lexical != nil
        if weight > 0 && !lexical {
            throw IdxError("\(o.index): no lexical half to score with --lexical-weight \(weight) (built by an older idx or from raw vectors); rebuild it with idx index, or pass --lexical-weight 0.")
        }
        var settings = SearchSettings(k: o.k)
        settings.lexicalWeight = o.lexicalWeight
        settings.feedback = o.feedback
        settings.fusion = o.fusion
        let baseLabels = (0 ..< reader.count).map { reader.metadata($0).genre }
        var knn: EvalMetrics.KNNPrecision?
        var mlm: MLMLoss.Result?
        var mlmOn: String
        var validationDocs: Int?, dropped: Int?
        if o.skip.contains(.knn) && o.skip.contains(.mlm) {
            mlmOn = "not measured"
        } else if let validation = o.validation {
            // Cleaned exactly as a corpus is: through ingest, with the model's tokenizer.
            let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("idx-eval-\(getpid())-\(UInt32.random(in: 0 ... .max))").path
            defer { try? FileManager.default.removeItem(atPath: tmp) }
            var io = Ingest.Options(inputs: [validation], output: tmp + "/validation", tokenizerPath: modelDir + "/tokenizer.json")
            io.showProgress = o.showProgress
            io.titlesInText = model.titlesInText
            io.deduplicate = false  // every validation row is a query with its own genre, as before films were merged
            let s = try Ingest.run(io)
            let vr = try CorpusReader(directory: tmp + "/validation")
            let tokens = try vr.readTokens()
            let meta = try vr.readMetadata()
            validationDocs = tokens.count
            dropped = s.droppedShort + s.skippedRows
            if !o.skip.contains(.knn) {
                let queries = meta.map { SearchQuery(queryText($0, titlesInText: model.titlesInText)) }
                knn = try EvalMetrics.knnPrecision(neighbours: neighbours(engine, queries, settings, showProgress: o.showProgress),
                                                   queryLabels: meta.map(\.genre), baseLabels: baseLabels, k: o.k)
            }
            if !o.skip.contains(.mlm) {
                mlm = MLMLoss.evaluate(model, corpus: tokens, maxTokens: maxTokens, seed: o.mlmSeed, batchSize: o.batchSize)
            }
            mlmOn = "validation documents (\(tokens.count))"
        } else {
            if !o.skip.contains(.knn) {
                // Each indexed document searched with its own stored vector, and never finding itself.
                let d = reader.dimension
                let queries = (0 ..< reader.count).map { i -> SearchQuery in
                    var v = reader.decodedVector(i)
                    v.withUnsafeMutableBufferPointer { UnitVectors.normalize($0.baseAddress!, dimension: d) }
                    return SearchQuery(queryText(reader.metadata(i), titlesInText: model.titlesInText), vector: v, excluding: i)
                }
                knn = try EvalMetrics.knnPrecision(neighbours: neighbours(engine, queries, settings, showProgress: o.showProgress),
                                                   queryLabels: baseLabels, baseLabels: baseLabels, k: o.k, leaveOneOut: true)
            }
            // No held-out set: the loss on the indexed documents themselves (training data: optimistic).
            if !o.skip.contains(.mlm) {
                var own = TokenizedCorpus()
                for i in 0 ..< reader.count { own.append(tokenizer.encode(reader.metadata(i).description)) }
                mlm = MLMLoss.evaluate(model, corpus: own, maxTokens: maxTokens, seed: o.mlmSeed, batchSize: o.batchSize)
            }
            mlmOn = "indexed documents (\(reader.count), no --validation: training data)"
        }
        var typed: TypedQueries.Result?
        if let file = o.queries {
            typed = try TypedQueries.evaluate(engine, queries: TypedQueries.read(file), file: file, settings: settings)
        }
        return Report(index: o.index, generation: reader.generation, model: modelDir, modelHash: model.modelHash,
                      indexedDocuments: reader.count, validation: o.validation, validationDocuments: validationDocs,
                      validationDropped: dropped, mlm: mlm, mlmOn: mlmOn, seedTest: o.seedTest, seed: separation, knn: knn, typedQueries: typed,
                      lexicalWeight: lexical ? weight : 0, feedback: o.feedback.isActive || o.feedback.isGenreVote ? o.feedback : nil, fusion: o.fusion,
                      seconds: Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
    }

    /// A document as a kNN query reads it: the text the model reads (its description, or
    /// "Title. description" for a model trained on titles), searched as `idx search` searches it.
    public static func queryText(_ m: DocumentMetadata, titlesInText: Bool) -> String {
        titlesInText && !m.title.isEmpty ? m.title + ". " + m.description : m.description
    }

    /// Each query's neighbours through the search engine, in batches (progress between them);
    /// the first query the engine refuses stops the measure with its message.
    public static func neighbours(_ engine: SearchEngine, _ queries: [SearchQuery], _ settings: SearchSettings,
                                  showProgress: Bool = false) throws -> [[Int]] {
        let progress = Progress("eval kNN", unit: "queries", total: Double(queries.count), enabled: showProgress)
        var out: [[Int]] = []
        out.reserveCapacity(queries.count)
        let batch = 256
        try BLASRuntime.withOneThread {
            for start in stride(from: 0, to: queries.count, by: batch) {
                for result in engine.search(Array(queries[start ..< min(queries.count, start + batch)]), settings) {
                    out.append(try result.get().map(\.index))
                }
                progress.update(Double(out.count))
            }
        }
        if showProgress { progress.finish(String(format: "eval kNN: %d queries in %.1f s", queries.count, progress.elapsed)) }
        return out
    }

    /// The table `idx eval` prints.
    public static func table(_ r: Report) -> String {
        func f(_ x: Double, _ d: Int = 4) -> String { String(format: "%.\(d)f", x) }
        var rows: [(String, String, String)] = []
        if let m = r.mlm {
            rows.append(("MLM loss", f(m.loss), "\(m.maskedTokens) masked tokens of \(r.mlmOn), fixed seed"))
        }
        rows.append(("seed test intra-cluster distance", f(r.seed.intra), "mean cosine distance, \(r.seed.intraPairs) same-label pairs"))
        rows.append(("seed test inter-cluster distance", f(r.seed.inter), "\(r.seed.interPairs) cross-label pairs"))
        rows.append(("seed test ratio inter / intra", f(r.seed.ratio, 3), r.seed.ratio > 1 ? "> 1: the clusters separate" : "<= 1: the clusters do not separate"))
        let how = r.knn?.leaveOneOut == true
            ? "leave-one-out over the \(r.indexedDocuments) indexed documents (no --validation)"
            : "\(r.knn?.queries ?? 0) validation documents vs \(r.indexedDocuments) indexed" + (r.validationDropped.map { ", \($0) dropped by cleaning" } ?? "")
        let w = r.lexicalWeight ?? 0
        let scoring = w <= 0 ? "cosine" : w >= 1 ? "BM25"
            : r.fusion == .reciprocalRank ? String(format: "reciprocal-rank fusion: %.2f cosine rank + %.2f BM25 rank", 1 - w, w)
            : String(format: "hybrid: %.2f cosine + %.2f BM25", 1 - w, w)
        let passes = r.feedback.map { f in
            String(format: ", second pass moved toward the first's best %d (weight %g", f.documents, f.weight)
                + (f.isLexical && (r.lexicalWeight ?? 0) > 0 ? String(format: "; BM25 + their best %d terms at %g)", f.lexicalTerms, f.lexicalWeight) : ")")
                + (f.isGenreVote ? String(format: ", then the best %d's genre vote at %g", f.documents, f.genreWeight) : "")
        } ?? ""
        if let t = r.typedQueries {
            rows.append(("typed-query precision@\(t.k)", f(t.precision), "\(t.queries) queries of \(t.file) through idx search; a hit counts when its expanded genres hold the query's; \(t.listsWithDuplicates) lists showed a film twice"))
        }
        if let knn = r.knn {
            rows.append(("genre kNN precision@\(knn.k)", f(knn.precision), how + "; " + scoring + passes))
        }
        rows.append(("reference (IMDB-Genres, validation vs train)", "", "TF-IDF 0.305; PyTorch model after 5,000 steps 0.206 (seed ratio 1.11)"))
        let w0 = rows.map(\.0.count).max()!, w1 = max(6, rows.map(\.1.count).max()!)
        var out = "idx eval: \(r.index) (\(r.generation), \(r.indexedDocuments) documents), model \(r.model) (\(r.modelHash))\n"
        out += "metric".padding(toLength: w0, withPad: " ", startingAt: 0) + "  " + "value".padding(toLength: w1, withPad: " ", startingAt: 0) + "  notes\n"
        out += String(repeating: "-", count: w0) + "  " + String(repeating: "-", count: w1) + "  -----\n"
        for (a, b, c) in rows {
            out += a.padding(toLength: w0, withPad: " ", startingAt: 0) + "  "
                + String(repeating: " ", count: w1 - b.count) + b + "  " + c + "\n"
        }
        return out
    }
}
