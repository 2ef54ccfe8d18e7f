import Foundation
import XCTest
@testable import IdxCore

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
        // Without validation: leave-one-out on the index, cosine only.
        var cosine = EvalRun.Options(index: index, validation: nil, seedTest: seedTest)
        cosine.lexicalWeight = 0
        cosine.feedback.documents = 0
        let loo = try EvalRun.run(cosine)
        XCTAssertTrue(loo.knn!.leaveOneOut)
        let reader = try VectorIndexReader(directory: index)
        XCTAssertEqual(loo.knn!.queries, reader.count)
        let labels = (0 ..< reader.count).map { reader.metadata($0).genre }
        let expected = try EvalMetrics.knnPrecision(queries: reader.dequantizedVectors(), queryLabels: labels,
                                                    base: reader.dequantizedVectors(), baseLabels: labels,
                                                    dim: reader.dimension, k: 10, leaveOneOut: true)
        XCTAssertEqual(loo.knn!.precision, expected.precision, accuracy: 1e-12)
        XCTAssertEqual(loo.seed.intraPairs, 90)
        XCTAssertEqual(loo.seed.interPairs, 100)
        XCTAssertGreaterThan(loo.mlm?.maskedTokens ?? 0, 0)
        XCTAssertTrue(loo.mlm!.loss.isFinite && loo.mlm!.loss > 0)
        XCTAssertTrue(EvalRun.table(loo).contains("leave-one-out"))

        // Hybrid (the index's default weight) with idx search's second pass: the blend
        // recomputed from the BM25 scorer, feedback from the same neighbours.
        let hybrid = try EvalRun.run(EvalRun.Options(index: index, validation: nil, seedTest: seedTest))
        XCTAssertEqual(hybrid.feedback, .standard)
        let w = try XCTUnwrap(reader.manifest.lexicalWeight)
        XCTAssertEqual(hybrid.lexicalWeight, w)
        let scorer = try XCTUnwrap(reader.lexical)
        let texts = (0 ..< reader.count).map { LexicalAnalyzer.documentText(reader.metadata($0)) }
        func expectedHybrid(_ feedback: RelevanceFeedback?) throws -> Double {
            try EvalMetrics.knnPrecision(
                queries: reader.dequantizedVectors(), queryLabels: labels, base: reader.dequantizedVectors(), baseLabels: labels,
                dim: reader.dimension, k: 10, leaveOneOut: true, blend: { q, feedbackDocuments, row in
                    var query = scorer.query(terms: LexicalAnalyzer.terms(texts[q]))
                    if let feedbackDocuments, let feedback, feedback.isLexical { // the second pass's BM25 query
                        query = scorer.expanded(query, documents: feedbackDocuments.map { ($0, texts[$0]) },
                                                weight: feedback.lexicalWeight, terms: feedback.lexicalTerms)
                    }
                    let bm25 = HybridScoring.normalizedBM25(scorer, query: query)
                    for j in 0 ..< bm25.count { row[j] = (1 - w) * row[j] + w * bm25[j] }
                }, feedback: feedback).precision
        }
        XCTAssertEqual(hybrid.knn!.precision, try expectedHybrid(.standard), accuracy: 1e-12)
        var onePass = EvalRun.Options(index: index, validation: nil, seedTest: seedTest)
        onePass.feedback.documents = 0
        let single = try EvalRun.run(onePass)
        XCTAssertNil(single.feedback)
        XCTAssertEqual(single.knn!.precision, try expectedHybrid(nil), accuracy: 1e-12)
        XCTAssertNotEqual(single.knn!.precision, loo.knn!.precision) // the BM25 part does change the neighbours
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
        XCTAssertThrowsError(try EvalRun.run(o)) { XCTAssertTrue("\($0)".contains("is not the one"), "\($0)") }
        try "a sentence\tSci-Fi\nno label here\n".write(toFile: dir + "/bad.tsv", atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try EvalRun.readSeedTest(dir + "/bad.tsv")) { XCTAssertTrue("\($0)".contains("bad.tsv:2"), "\($0)") }
    }
}
