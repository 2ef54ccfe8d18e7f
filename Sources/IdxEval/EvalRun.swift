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
        let reader = try VectorIndexReader(directory: o.index)
        let modelDir = o.model ?? reader.modelDirectory
        guard !modelDir.isEmpty else {
            throw IdxError("\(o.index): the index does not record its model; pass --model models/<name>.")
        }
        let model = try EncoderModel.load(directory: modelDir)
        guard model.modelHash == reader.modelHash, model.tokenizerHash == reader.tokenizerHash else {
            throw IdxError("\(modelDir): model \(model.modelHash) / tokenizer \(model.tokenizerHash) is not the one \(o.index) was built with (\(reader.modelHash) / \(reader.tokenizerHash)); pass the right --model or rebuild the index.")
        }
        let tokenizer = try model.tokenizer()
        let maxTokens = reader.manifest.maxTokens > 0 ? reader.manifest.maxTokens : 32

        // The seed test: raw mean-pooled embeddings, cosine.
        let seed = try readSeedTest(o.seedTest)
        var seedCorpus = TokenizedCorpus()
        for s in seed { seedCorpus.append(tokenizer.encodeQuery(s.text)) }
        let seedVectors = model.embed(seedCorpus, range: 0 ..< seedCorpus.count, maxTokens: maxTokens, batchSize: o.batchSize)
        let separation = try EvalMetrics.clusterSeparation(seedVectors, dim: model.config.dModel, labels: seed.map(\.label))

        // kNN precision: the index's vectors and genres.
        let base = reader.dequantizedVectors()
        let baseLabels = (0 ..< reader.count).map { reader.metadata($0).genre }
        var knn: EvalMetrics.KNNPrecision?
        var mlm: MLMLoss.Result?
        var mlmOn: String
        var validationDocs: Int?, dropped: Int?
        let weight = o.lexicalWeight ?? reader.manifest.lexicalWeight ?? 0
        let scorer = weight > 0 ? reader.lexical : nil
        if weight > 0 && scorer == nil {
            throw IdxError("\(o.index): no lexical half to score with --lexical-weight \(weight) (built by an older idx or from raw vectors); rebuild it with idx index, or pass --lexical-weight 0.")
        }
        let feedback = o.feedback.isActive ? o.feedback : nil
        let lexicalBuffer = UnsafeMutablePointer<Float>.allocate(capacity: max(1, reader.count))
        defer { lexicalBuffer.deallocate() }
        /// The indices of the `count` highest of `n` scores, best first (ties: lower index first).
        func bestRows(_ scores: UnsafePointer<Float>, _ n: Int, _ count: Int, positiveOnly: Bool = false) -> [Int] {
            var top = TopK(capacity: count)
            for j in 0 ..< n where (!positiveOnly || scores[j] > 0) && scores[j] > top.threshold { top.push(scores[j], j) }
            return top.ranked()
        }
        /// The hybrid score of queries whose lexical texts (title and cleaned description) are `texts`
        /// and which the model reads as `tokenCounts` tokens, as the search does it.
        func blend(_ texts: [String], tokenCounts: [Int]) -> ((Int, [Int]?, UnsafeMutablePointer<Float>) -> Void)? {
            guard let scorer else { return nil }
            let n = reader.count
            // The second pass blends the same query again: without a BM25 expansion its row is still in the buffer.
            var scoredQuery = -1, best: Float = 0
            var query = scorer.query(terms: [])
            return { qi, feedbackDocuments, row in
                if qi != scoredQuery {
                    query = scorer.query(terms: LexicalAnalyzer.terms(texts[qi]))
                    best = scorer.score(query, into: lexicalBuffer)
                    scoredQuery = qi
                }
                if let feedbackDocuments, let feedback, feedback.isLexical {
                    let documents = feedbackDocuments.map { ($0, LexicalAnalyzer.documentText(reader.metadata($0))) }
                    best = scorer.score(scorer.expanded(query, documents: documents, weight: feedback.lexicalWeight,
                                                        terms: feedback.lexicalTerms), into: lexicalBuffer)
                    scoredQuery = -1
                }
                // As idx search: an explicit --lexical-weight as given, the index's adapted to short queries.
                let w = o.lexicalWeight ?? HybridScoring.weight(weight, queryTokens: tokenCounts[qi], fusion: o.fusion)
                if o.fusion == .reciprocalRank && w > 0 && w < 1 {
                    let depth = min(n, VectorSearcher.reciprocalRankDepth)
                    let fused = VectorSearcher.reciprocalRankScores(dense: bestRows(row, n, depth), lexical: bestRows(lexicalBuffer, n, depth, positiveOnly: true),
                                                                    lexicalWeight: w)
                    for j in 0 ..< n { row[j] = 0 }
                    for (j, x) in fused { row[j] = x }
                    return
                }
                let scale = best > 0 ? w / best : 0
                for j in 0 ..< n { row[j] = (1 - w) * row[j] + scale * lexicalBuffer[j] }
            }
        }
        if o.skip.contains(.knn) && o.skip.contains(.mlm) {
            mlmOn = "not measured"
        } else if let validation = o.validation {
            // Cleaned and tokenized exactly as a corpus is: through ingest, with the model's tokenizer.
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
            var queries = model.embed(tokens, range: 0 ..< tokens.count, maxTokens: maxTokens, batchSize: o.batchSize)
            queries = prepare(queries, reader: reader, dim: model.config.dModel)
            if !o.skip.contains(.knn) { knn = try EvalMetrics.knnPrecision(queries: queries, queryLabels: meta.map(\.genre), base: base,
                                               baseLabels: baseLabels, dim: reader.dimension, k: o.k,
                                               blend: blend(meta.map(LexicalAnalyzer.documentText), tokenCounts: (0 ..< tokens.count).map { tokens.document($0).count }),
                                               feedback: feedback) }
            if !o.skip.contains(.mlm) {
                mlm = MLMLoss.evaluate(model, corpus: tokens, maxTokens: maxTokens, seed: o.mlmSeed, batchSize: o.batchSize)
            }
            mlmOn = "validation documents (\(tokens.count))"
        } else {
            // The indexed documents' own tokens: their lengths for the hybrid share, then the MLM loss.
            var own = TokenizedCorpus()
            for i in 0 ..< reader.count { own.append(tokenizer.encode(reader.metadata(i).description)) }
            if !o.skip.contains(.knn) { knn = try EvalMetrics.knnPrecision(queries: base, queryLabels: baseLabels, base: base, baseLabels: baseLabels,
                                               dim: reader.dimension, k: o.k, leaveOneOut: true,
                                               blend: blend((0 ..< reader.count).map { LexicalAnalyzer.documentText(reader.metadata($0)) },
                                                            tokenCounts: (0 ..< own.count).map { own.document($0).count }),
                                               feedback: feedback) }
            // No held-out set: the loss on the indexed documents themselves (training data: optimistic).
            if !o.skip.contains(.mlm) {
                mlm = MLMLoss.evaluate(model, corpus: own, maxTokens: maxTokens, seed: o.mlmSeed, batchSize: o.batchSize)
            }
            mlmOn = "indexed documents (\(own.count), no --validation: training data)"
        }
        var typed: TypedQueries.Result?
        if let file = o.queries {
            var settings = SearchSettings(k: o.k)
            settings.lexicalWeight = o.lexicalWeight
            settings.feedback = o.feedback
            settings.fusion = o.fusion
            typed = try TypedQueries.evaluate(SearchEngine(index: o.index), queries: TypedQueries.read(file), file: file, settings: settings)
        }
        return Report(index: o.index, generation: reader.generation, model: modelDir, modelHash: model.modelHash,
                      indexedDocuments: reader.count, validation: o.validation, validationDocuments: validationDocs,
                      validationDropped: dropped, mlm: mlm, mlmOn: mlmOn, seedTest: o.seedTest, seed: separation, knn: knn, typedQueries: typed,
                      lexicalWeight: scorer == nil ? 0 : weight, feedback: feedback, fusion: o.fusion, seconds: Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
    }

    /// Raw embeddings mapped into the index's space (its standardisation, unit length).
    static func prepare(_ v: [Float], reader: VectorIndexReader, dim: Int) -> [Float] {
        var out = [Float]()
        out.reserveCapacity(v.count)
        for i in 0 ..< v.count / dim { out += reader.prepareQuery(Array(v[i * dim ..< (i + 1) * dim])) }
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
