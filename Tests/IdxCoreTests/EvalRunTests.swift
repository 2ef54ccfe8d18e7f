import Foundation
import XCTest
import IdxBase
import IdxCorpus
import IdxLexical
import IdxModel
import IdxTrain
import IdxStore
import IdxSearch
import IdxEval

/// `idx eval` end to end on a tiny corpus and a tiny model trained a few steps
/// in-process: the figures must equal the metrics recomputed by hand from the
/// index's vectors and the model's embeddings.
final class EvalRunTests: XCTestCase {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path
    var dir = ""

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("idx-evalrun-\(getpid())-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }
    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    func sampleRows(_ r: Range<Int>) throws -> [String] {
        let lines = try String(contentsOfFile: Self.root + "/corpora/sample/movies.csv", encoding: .utf8)
            .split(separator: "\n").map(String.init)
        return [lines[0]] + Array(lines[1...].enumerated().filter { r.contains($0.offset) }.map(\.element))
    }

    /// corpus (rows 0..<150) -> 5-step model -> index; returns (index dir, model dir).
    func buildIndex() throws -> (String, String) {
        try (sampleRows(0 ..< 150).joined(separator: "\n") + "\n").write(toFile: dir + "/train.csv", atomically: true, encoding: .utf8)
        var io = Ingest.Options(inputs: [dir + "/train.csv"], output: dir + "/corpus", vocabSize: 300)
        io.showProgress = false
        try Ingest.run(io)
        let reader = try CorpusReader(directory: dir + "/corpus")
        let tokens = try reader.readTokens()
        var o = TrainOptions()
        o.steps = 5; o.batchSize = 8; o.seed = 7
        let cfg = ModelConfig(vocabSize: try reader.tokenizer().vocabSize, dModel: 16, nHeads: 2, nLayers: 1, dFF: 32, maxLen: 40)
        let trainer = try Trainer(config: cfg, options: o, corpus: tokens, tokenizerHash: reader.tokenizerHash)
        for _ in 0 ..< 5 { _ = try trainer.trainStep() }
        try trainer.writeCheckpoint(directory: dir + "/model", tokenizerJSON: Data(try reader.tokenizer().json),
                                    corpusPath: dir + "/corpus", log: TrainLog.header, elapsed: 0)
        let model = try EncoderModel.load(directory: dir + "/model")
        let vectors = model.embed(tokens, range: 0 ..< tokens.count, maxTokens: 32, batchSize: 64)
        _ = try VectorIndexWriter.write(directory: dir + "/index", embeddings: vectors, dimension: 16,
                                        metadata: try reader.readMetadata(),
                                        provenance: IndexProvenance(modelHash: model.modelHash, tokenizerHash: model.tokenizerHash,
                                                                    modelDirectory: dir + "/model", maxTokens: 32, source: dir + "/corpus"),
                                        append: false, standardize: false)
        return (dir + "/index", dir + "/model")
    }

    func testLeaveOneOutAndValidationFiguresMatchTheirDefinitions() throws {
        let (index, modelDir) = try buildIndex()
        let seedTest = Self.root + "/corpora/seed-test.tsv"
        // Without validation: leave-one-out on the index, cosine only: each document's exact
        // nearest stored vectors, itself left out.
        var cosine = EvalRun.Options(index: index, validation: nil, seedTest: seedTest)
        cosine.lexicalWeight = 0
        cosine.feedback.documents = 0
        let loo = try EvalRun.run(cosine)
        let knn = try XCTUnwrap(loo.knn)
        XCTAssertTrue(knn.leaveOneOut)
        let reader = try VectorIndexReader(directory: index)
        let n = reader.count, d = reader.dimension
        XCTAssertEqual(knn.queries, n)
        XCTAssertEqual(knn.neighbours.count, n)
        let labels = (0 ..< n).map { reader.metadata($0).genre }
        let unit = EvalMetrics.normalizedRows(reader.dequantizedVectors(), dim: d)
        var same = 0
        for i in 0 ..< n {
            let exact = (0 ..< n).map { j -> Float in j == i ? -.infinity : (0 ..< d).reduce(Float(0)) { $0 + unit[i * d + $1] * unit[j * d + $1] } }
            let found = knn.neighbours[i]
            XCTAssertEqual(found.count, 10)
            XCTAssertFalse(found.contains(i), "document \(i) found itself")
            // Tie-aware: each neighbour at least as near as the exact 10th (float rounding aside).
            XCTAssertEqual(ExactSearch.recall(returned: found, exactScores: exact, k: 10, tolerance: 1e-5), 1, "document \(i)")
            same += found.filter { Genres.overlap(labels[$0], labels[i]) }.count
        }
        XCTAssertEqual(knn.precision, Double(same) / Double(10 * n), accuracy: 1e-12)
        XCTAssertEqual(loo.seed.intraPairs, 90)
        XCTAssertEqual(loo.seed.interPairs, 100)
        XCTAssertGreaterThan(loo.mlm?.maskedTokens ?? 0, 0)
        XCTAssertTrue(loo.mlm!.loss.isFinite && loo.mlm!.loss > 0)
        XCTAssertTrue(EvalRun.table(loo).contains("leave-one-out"))

        // Hybrid, fused and one-pass runs: the neighbours are the search engine's for each
        // document searched with its own vector and its text, itself excluded, under the same settings.
        let engine = try SearchEngine(index: index)
        let titlesInText = try XCTUnwrap(engine.model).titlesInText
        func engineNeighbours(_ o: EvalRun.Options) throws -> [[Int]] {
            var settings = SearchSettings(k: o.k)
            settings.lexicalWeight = o.lexicalWeight
            settings.feedback = o.feedback
            settings.fusion = o.fusion
            return try (0 ..< n).map { i in
                var v = reader.decodedVector(i)
                v.withUnsafeMutableBufferPointer { UnitVectors.normalize($0.baseAddress!, dimension: d) }
                let q = SearchQuery(EvalRun.queryText(reader.metadata(i), titlesInText: titlesInText), vector: v, excluding: i)
                return try engine.search(q, settings).map(\.index)
            }
        }
        var blended = EvalRun.Options(index: index, validation: nil, seedTest: seedTest)
        blended.fusion = .blend
        let hybrid = try EvalRun.run(blended)
        XCTAssertEqual(hybrid.feedback, .standard)
        XCTAssertEqual(hybrid.lexicalWeight, try XCTUnwrap(reader.manifest.lexicalWeight))
        XCTAssertEqual(hybrid.knn!.neighbours, try engineNeighbours(blended))
        // The default: reciprocal-rank fusion, in the kNN scores as in idx search.
        let defaults = EvalRun.Options(index: index, validation: nil, seedTest: seedTest)
        let fusedRun = try EvalRun.run(defaults)
        XCTAssertEqual(fusedRun.fusion, .reciprocalRank)
        XCTAssertEqual(fusedRun.knn!.neighbours, try engineNeighbours(defaults))
        XCTAssertNotEqual(fusedRun.knn!.neighbours, hybrid.knn!.neighbours)
        XCTAssertTrue(EvalRun.table(fusedRun).contains("reciprocal-rank fusion"))
        var onePass = blended
        onePass.feedback.documents = 0
        let single = try EvalRun.run(onePass)
        XCTAssertNil(single.feedback)
        XCTAssertEqual(single.knn!.neighbours, try engineNeighbours(onePass))
        XCTAssertNotEqual(single.knn!.neighbours, loo.knn!.neighbours) // the BM25 part does change the neighbours
        XCTAssertTrue(EvalRun.table(hybrid).contains("BM25") && EvalRun.table(hybrid).contains("second pass"))
        XCTAssertFalse(EvalRun.table(single).contains("second pass"))

        // The seed test by hand: the model's embeddings of the sentences (query path).
        let model = try EncoderModel.load(directory: modelDir)
        let tok = try model.tokenizer()
        let seed = try EvalRun.readSeedTest(seedTest)
        XCTAssertEqual(seed.count, 20)
        var sc = TokenizedCorpus()
        for s in seed { sc.append(tok.encodeQuery(s.text)) }
        let sv = model.embed(sc, range: 0 ..< 20, maxTokens: 32, batchSize: 64)
        XCTAssertEqual(try EvalMetrics.clusterSeparation(sv, dim: 16, labels: seed.map(\.label)), loo.seed)

        // With a validation CSV: two rows dropped by cleaning (too short), the rest are the queries.
        var rows = try sampleRows(150 ..< 200)
        rows.insert("Tiny - 2001,Drama,Drama,5.0,Too short.", at: 3)
        rows.insert("Tiny Two - 2002,Drama,Drama,5.0,\"Also short, really\"", at: 7)
        try (rows.joined(separator: "\n") + "\n").write(toFile: dir + "/validation.csv", atomically: true, encoding: .utf8)
        let held = try EvalRun.run(EvalRun.Options(index: index, validation: dir + "/validation.csv", seedTest: seedTest))
        XCTAssertFalse(held.knn!.leaveOneOut)
        XCTAssertEqual(held.validationDropped, 2 + (50 - held.knn!.queries))
        XCTAssertEqual(held.knn!.queries, held.validationDocuments)
        XCTAssertLessThanOrEqual(held.knn!.queries, 50)
        XCTAssertGreaterThan(held.knn!.queries, 40)
        XCTAssertEqual(held.seed, loo.seed)
        XCTAssertTrue(EvalRun.table(held).contains("validation documents"))
        // The same masks every time: the loss is a pure function of model and documents.
        let again = try EvalRun.run(EvalRun.Options(index: index, validation: dir + "/validation.csv", seedTest: seedTest))
        XCTAssertEqual(again.mlm, held.mlm)
        XCTAssertEqual(again.knn, held.knn)
    }

    func testRefusesAModelOtherThanTheIndexOnesAndBadSeedFiles() throws {
        let (index, _) = try buildIndex()
        // Another model: a copy trained one more step.
        let reader = try CorpusReader(directory: dir + "/corpus")
        let (t, _, _) = try Trainer.resume(directory: dir + "/model", corpus: try reader.readTokens(),
                                           tokenizerHash: reader.tokenizerHash, corpusPath: dir + "/corpus")
        _ = try t.trainStep()
        try t.writeCheckpoint(directory: dir + "/other", tokenizerJSON: Data(try reader.tokenizer().json),
                              corpusPath: dir + "/corpus", log: TrainLog.header, elapsed: 0)
        var o = EvalRun.Options(index: index, seedTest: Self.root + "/corpora/seed-test.tsv")
        o.model = dir + "/other"
        XCTAssertThrowsError(try EvalRun.run(o)) { XCTAssertTrue("\($0)".contains("does not match the index"), "\($0)") }
        try "a sentence\tSci-Fi\nno label here\n".write(toFile: dir + "/bad.tsv", atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try EvalRun.readSeedTest(dir + "/bad.tsv")) { XCTAssertTrue("\($0)".contains("bad.tsv:2"), "\($0)") }
    }

    /// idx eval --queries measures what idx search answers: for the same texts, the hits each
    /// query counted are exactly the documents `idx search --json` prints, in order.
    func testTypedQueryHitsAreWhatSearchAnswers() throws {
        let (index, _) = try buildIndex()
        let queries = ["a detective hunts a killer", "space robots", "two friends fall in love on a summer trip",
                       "Haunted HOUSE!", "a family comedy"]
        let file = dir + "/queries.tsv"
        try ("query\tgenre\n" + queries.map { $0 + "\tDrama" }.joined(separator: "\n") + "\n")
            .write(toFile: file, atomically: true, encoding: .utf8)
        var o = EvalRun.Options(index: index, validation: nil, seedTest: Self.root + "/corpora/seed-test.tsv")
        o.queries = file
        o.skip = [.knn, .mlm]
        let report = try EvalRun.run(o)
        let typed = try XCTUnwrap(report.typedQueries)
        XCTAssertNil(report.knn)
        XCTAssertEqual(typed.queries, queries.count)
        XCTAssertEqual(typed.perQuery.map(\.query), queries)
        let reader = try VectorIndexReader(directory: index)
        var relevant = 0
        for (q, counted) in zip(queries, typed.perQuery) {
            let r = try IdxExecutable.run(["search", "--index", index, "--json", "-k", "10", q])
            XCTAssertEqual(r.status, 0, r.stderr)
            let lines = r.stdout.split(separator: "\n")
            let ids = try lines.map { line -> Int64 in
                let o = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
                return try XCTUnwrap((o["id"] as? NSNumber)?.int64Value)
            }
            XCTAssertEqual(ids, try counted.hits.map { try reader.documentId($0) }, "query \(q)")
            relevant += try counted.hits.filter { Genres.holds(try reader.documentMetadata($0).expandedGenres, genre: "Drama") }.count
        }
        XCTAssertEqual(typed.precision, Double(relevant) / Double(10 * queries.count), accuracy: 1e-12)
    }

    /// idx eval's genre kNN measures what idx search answers: each validation document's
    /// neighbours are exactly the documents `idx search --json` prints for its text, in order,
    /// at the defaults and with other settings given to both.
    func testKNNNeighboursAreWhatSearchAnswers() throws {
        let (index, _) = try buildIndex()
        try (try sampleRows(150 ..< 190).joined(separator: "\n") + "\n").write(toFile: dir + "/validation.csv", atomically: true, encoding: .utf8)
        let reader = try VectorIndexReader(directory: index)
        let model = try EncoderModel.load(directory: dir + "/model")
        var io = Ingest.Options(inputs: [dir + "/validation.csv"], output: dir + "/validation", tokenizerPath: dir + "/model/tokenizer.json")
        io.showProgress = false
        io.deduplicate = false
        try Ingest.run(io)
        let texts = try CorpusReader(directory: dir + "/validation").readMetadata().map { EvalRun.queryText($0, titlesInText: model.titlesInText) }
        for flags in [[String](), ["--fusion", "blend", "--lexical-weight", "0.3", "--feedback-docs", "3"]] {
            var o = EvalRun.Options(index: index, validation: dir + "/validation.csv", seedTest: Self.root + "/corpora/seed-test.tsv")
            o.skip = [.mlm]
            if !flags.isEmpty { o.fusion = .blend; o.lexicalWeight = 0.3; o.feedback.documents = 3 }
            let knn = try XCTUnwrap(try EvalRun.run(o).knn)
            XCTAssertEqual(knn.neighbours.count, texts.count)
            let r = try IdxExecutable.run(["search", "--index", index, "--json", "-k", "10", "--stdin"] + flags,
                                          input: texts.joined(separator: "\n") + "\n")
            XCTAssertEqual(r.status, 0, r.stderr)
            var printed: [[Int64]] = []
            for line in r.stdout.split(separator: "\n") {
                let hit = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
                if (hit["rank"] as? Int) == 1 { printed.append([]) }
                printed[printed.count - 1].append(try XCTUnwrap((hit["id"] as? NSNumber)?.int64Value))
            }
            XCTAssertEqual(printed, try knn.neighbours.map { try $0.map { try reader.documentId($0) } }, "\(flags)")
        }
    }

    /// The same films appended twice (two nightly batches): search still shows each film once,
    /// its best copy, and as many films as asked for.
    func testSearchShowsEachFilmOnceAcrossSegments() throws {
        let (index, modelDir) = try buildIndex()
        let reader = try CorpusReader(directory: dir + "/corpus")
        let tokens = try reader.readTokens()
        let model = try EncoderModel.load(directory: modelDir)
        _ = try VectorIndexWriter.write(directory: index, embeddings: model.embed(tokens, range: 0 ..< tokens.count, maxTokens: 32),
                                        dimension: 16, metadata: try reader.readMetadata(),
                                        provenance: IndexProvenance(modelHash: model.modelHash, tokenizerHash: model.tokenizerHash,
                                                                    modelDirectory: modelDir, maxTokens: 32, source: dir + "/corpus"),
                                        append: true, standardize: false)
        let engine = try SearchEngine(index: index)
        XCTAssertEqual(engine.reader.count, 2 * tokens.count)
        for q in ["a detective hunts a killer", "love", "space robots"] {
            var settings = SearchSettings(k: 10)
            let hits = try engine.search(q, settings)
            XCTAssertEqual(hits.count, 10)
            let films = try hits.map { SearchEngine.filmKey(try engine.reader.documentMetadata($0.index)) }
            XCTAssertEqual(Set(films).count, 10, q)
            XCTAssertEqual(hits.map(\.score), hits.map(\.score).sorted(by: >))
            settings.feedback.documents = 0
            settings.k = tokens.count  // every film once, none twice
            XCTAssertEqual(Set(try engine.search(q, settings).map { SearchEngine.filmKey(try engine.reader.documentMetadata($0.index)) }).count, tokens.count)
        }
    }

    /// A batch of queries (one forward, one scan a pass for all of them) answers each query as
    /// it is answered alone, bit for bit, and gives each failing query its own error, under
    /// every fusion and feedback setting and with a genre filter; a document's own vector
    /// with itself excluded too.
    func testBatchedSearchAnswersEachQueryAsAlone() throws {
        let (index, _) = try buildIndex()
        let engine = try SearchEngine(index: index)
        let texts = ["a detective hunts a killer in the city", "love", "zzqx unknownword", "", "space robots attack the earth",
                     "two friends fall in love", "a family moves to a haunted house", "war", "an alien robot", "!!!"]
        var queries = texts.map { SearchQuery($0) }
        queries.append(SearchQuery("own vector", vector: engine.reader.decodedVector(3), excluding: 3))
        // Parts of more than `InferenceEncoder.smallRows` tokens, where a batched forward could differ from one alone.
        queries = Array(repeating: queries, count: 6).flatMap { $0 }
        var settings: [SearchSettings] = []
        for fusion in VectorSearcher.Fusion.allCases {
            for feedbackDocs in [0, 5] {
                for weight: Float? in [nil, 0, 0.5, 1] {
                    var s = SearchSettings(k: 7)
                    s.fusion = fusion; s.feedback.documents = feedbackDocs; s.lexicalWeight = weight
                    settings.append(s)
                }
            }
        }
        var genre = SearchSettings(k: 5)
        genre.genre = try engine.reader.documentMetadata(0).genre.components(separatedBy: ",")[0]
        settings.append(genre)
        var failures = 0
        for s in settings {
            let batch = engine.search(queries, s)
            XCTAssertEqual(batch.count, queries.count)
            for (q, got) in zip(queries, batch) {
                switch (Result { try engine.search(q, s) }, got) {
                case let (.success(alone), .success(batched)): XCTAssertEqual(batched, alone, "\(q.text), \(s)")
                case let (.failure(alone as IdxError), .failure(batched)): XCTAssertEqual(batched.message, alone.message); failures += 1
                default: XCTFail("\(q.text), \(s): alone and batched differ in success")
                }
            }
        }
        XCTAssertGreaterThan(failures, 0, "some queries fail, each with its own error")
    }

    /// Reciprocal-rank fusion: each document's score is (1 − w) / (60 + its cosine rank) +
    /// w / (60 + its BM25 rank), recomputed here from exact cosines and BM25 scores.
    func testReciprocalRankFusionMatchesItsDefinition() throws {
        let (index, _) = try buildIndex()
        let engine = try SearchEngine(index: index)
        let reader = engine.reader
        let model = try XCTUnwrap(engine.model)
        let text = "a detective hunts a killer in the city"
        var one = TokenizedCorpus()
        one.append(try model.tokenizer().encode(Cleaning.cleanKeepingShort(text)))
        let q = reader.prepareQuery(model.embed(one, range: 0 ..< 1, maxTokens: reader.manifest.maxTokens, batchSize: 1))
        let base = reader.dequantizedVectors(), d = reader.dimension
        let cosine = (0 ..< reader.count).map { i in (0 ..< d).reduce(Float(0)) { $0 + base[i * d + $1] * q[$1] } }
        let bm25 = try HybridScoring.normalizedBM25(try XCTUnwrap(reader.lexical), terms: LexicalAnalyzer.terms(Cleaning.cleanKeepingShort(text)))
        let w: Float = 0.4
        func ranks(_ s: [Float], only: (Int) -> Bool) -> [Int: Int] {
            let order = s.indices.filter(only).sorted { s[$0] != s[$1] ? s[$0] > s[$1] : $0 < $1 }
            return Dictionary(uniqueKeysWithValues: order.enumerated().map { ($1, $0 + 1) })
        }
        let rd = ranks(cosine) { _ in true }, rl = ranks(bm25) { bm25[$0] > 0 }
        let expected = (0 ..< reader.count).map { i -> Float in
            (1 - w) / (60 + Float(rd[i]!)) + (rl[i].map { w / (60 + Float($0)) } ?? 0)
        }
        var settings = SearchSettings(k: 10)
        settings.lexicalWeight = w
        settings.feedback.documents = 0
        settings.fusion = .reciprocalRank
        settings.rerank = reader.count  // every candidate re-ranked exactly: the int8 scan's order is the float one
        let hits = try engine.search(text, settings)
        XCTAssertEqual(hits.count, 10)
        let best = expected.indices.sorted { expected[$0] != expected[$1] ? expected[$0] > expected[$1] : $0 < $1 }.prefix(10)
        XCTAssertEqual(hits.map(\.index), Array(best))
        for h in hits { XCTAssertEqual(h.score, expected[h.index], accuracy: 1e-6) }
    }

    /// The genre vote re-ranks exactly the list the search gives without it (its best 100
    /// films), by the vote of that list's best `documents` films' expanded genres.
    func testGenreVoteReRanksTheUnvotedList() throws {
        let (index, _) = try buildIndex()
        let engine = try SearchEngine(index: index)
        var voted = SearchSettings(k: 10)
        XCTAssertFalse(voted.feedback.isGenreVote, "the default search reads no genre labels")
        voted.feedback.genreWeight = 1
        var plain = voted
        plain.feedback.genreWeight = 0
        plain.k = RelevanceFeedback.genreVoteDepth
        var reordered = 0
        for text in ["a detective hunts a killer in the city", "two friends fall in love", "a family moves to a haunted house",
                     "an alien robot attacks", "a cowboy seeks revenge"] {
            let list = try engine.search(text, plain)
            let genres = try list.map { Genres.expanded(try engine.reader.documentMetadata($0.index)) }
            let expected = voted.feedback.genreVoted(genres).prefix(10)
            let hits = try engine.search(text, voted)
            XCTAssertEqual(hits.map(\.index), expected.map { list[$0.position].index }, text)
            XCTAssertEqual(hits.map(\.score), expected.map(\.score), text)
            if hits.map(\.index) != Array(list.prefix(10).map(\.index)) { reordered += 1 }
        }
        XCTAssertGreaterThan(reordered, 0, "the vote changed some list")
    }
}
