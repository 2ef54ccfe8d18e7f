import Foundation
import XCTest
@testable import IdxCore
import idx

/// `idx index` / `idx search` end to end on an invented corpus and an untrained
/// (randomly initialised) model: what matters is the plumbing, not the quality.
final class IndexTests: XCTestCase {
    var tmp: String!

    override func setUpWithError() throws {
        tmp = NSTemporaryDirectory() + "idx-index-\(getpid())-\(UInt32.random(in: 0 ... .max))"
        try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: tmp) }

    /// A small CSV in the IMDB-Genres layout, a corpus, and a model with its tokenizer.
    func makeCorpusAndModel() throws -> (corpus: String, model: String) {
        let subjects = ["an alien robot", "a lonely detective", "two young lovers", "a haunted house", "a football team",
                        "a space station crew", "a small town baker", "a retired soldier"]
        let verbs = ["discovers a secret plan", "falls in love in Paris", "fights a dragon at night",
                     "travels through time to save the world", "wins the championship against all odds"]
        let genres = ["Sci-Fi", "Crime", "Romance", "Horror", "Sports"]
        var csv = "movie title - year,genre,expanded-genres,rating,description\n"
        var row = 0
        for (i, s) in subjects.enumerated() {
            for (j, v) in verbs.enumerated() {
                let g = genres[(i + j) % genres.count]
                csv += "Film \(row) - \(1990 + row),\(g),\"\(g), Drama\",\(Double(row % 9) + 0.5),\"When \(s) \(v), nothing is the same again.\"\n"
                row += 1
            }
        }
        try csv.write(toFile: tmp + "/films.csv", atomically: true, encoding: .utf8)
        let corpus = tmp + "/corpus"
        var options = Ingest.Options(inputs: [tmp + "/films.csv"], output: corpus, vocabSize: 200)
        options.showProgress = false
        _ = try Ingest.run(options)
        let reader = try CorpusReader(directory: corpus)
        let config = ModelConfig(vocabSize: try reader.tokenizer().vocabSize, dModel: 32, nHeads: 2, nLayers: 1, dFF: 64,
                                 maxLen: 32, dropout: 0.1)
        var train = TrainOptions()
        train.steps = 0
        let trainer = try Trainer(config: config, options: train, corpus: try reader.readTokens(), tokenizerHash: reader.tokenizerHash)
        let model = tmp + "/model"
        try trainer.writeCheckpoint(directory: model, tokenizerJSON: try Data(contentsOf: URL(fileURLWithPath: corpus + "/tokenizer.json")),
                                    corpusPath: corpus, log: "", elapsed: 0)
        return (corpus, model)
    }

    func testIndexStoresMeanPooledEmbeddingsAndSearchFindsADocumentByItsText() throws {
        let (corpus, model) = try makeCorpusAndModel()
        let out = tmp + "/index"
        var index = try IndexCommand.parse(["--model", model, "--corpus", corpus, "--out", out, "--batch-size", "7"])
        try index.run()

        // The index holds the model's embeddings computed one document at a time, normalised.
        let reader = try VectorIndexReader(directory: out)
        let encoder = try EncoderModel.load(directory: model)
        XCTAssertEqual(reader.modelHash, encoder.modelHash)
        XCTAssertEqual(reader.tokenizerHash, encoder.tokenizerHash)
        let tokens = try CorpusReader(directory: corpus).readTokens()
        XCTAssertEqual(reader.count, tokens.count)
        let stored = reader.dequantizedVectors()
        let d = reader.dimension
        for i in [0, 6, 7, 39] {
            var one = encoder.embed(tokens, range: i ..< i + 1, maxTokens: 32, batchSize: 1)
            VectorIndexWriter.prepare(&one, dimension: d, standardization: nil)
            var cos: Float = 0
            for j in 0 ..< d { cos += one[j] * stored[i * d + j] }
            XCTAssertGreaterThan(cos, 0.999, "document \(i)")
        }
        XCTAssertEqual(reader.metadata(0).title, "Film 0")

        // Searching with a document's own text returns a document with the same (exact) embedding first.
        let meta = try CorpusReader(directory: corpus).readMetadata()
        let tokenizer = try encoder.tokenizer()
        var q = TokenizedCorpus()
        q.append(tokenizer.encodeQuery(meta[12].description))
        let hits = try VectorSearcher(reader).search(reader.prepareQuery(encoder.embed(q, range: 0 ..< 1, maxTokens: 32, batchSize: 1)), k: 3)
        XCTAssertEqual(hits.first?.index, 12)

        // --append adds a segment, --standardize keeps its statistics for queries.
        var again = try IndexCommand.parse(["--model", model, "--corpus", corpus, "--out", out, "--append"])
        try again.run()
        XCTAssertEqual(try VectorIndexReader(directory: out).count, 2 * tokens.count)
        var standardized = try IndexCommand.parse(["--model", model, "--corpus", corpus, "--out", tmp + "/std", "--standardize"])
        try standardized.run()
        XCTAssertNotNil(try VectorIndexReader(directory: tmp + "/std").manifest.standardization)
    }

    func testSearchRefusesAModelThatDoesNotMatchTheIndex() throws {
        let (corpus, model) = try makeCorpusAndModel()
        let out = tmp + "/index"
        var index = try IndexCommand.parse(["--model", model, "--corpus", corpus, "--out", out])
        try index.run()
        let reader = try VectorIndexReader(directory: out)
        XCTAssertThrowsError(try reader.checkModel(modelHash: "0123456789abcdef", tokenizerHash: reader.tokenizerHash, modelDirectory: model))
        XCTAssertThrowsError(try reader.checkModel(modelHash: reader.modelHash, tokenizerHash: "0123456789abcdef", modelDirectory: model))
        XCTAssertNoThrow(try reader.checkModel(modelHash: reader.modelHash, tokenizerHash: reader.tokenizerHash, modelDirectory: model))
        // A replaced model file is refused by the command.
        let safetensors = model + "/model.safetensors"
        var bytes = try Data(contentsOf: URL(fileURLWithPath: safetensors))
        bytes[bytes.count - 1] ^= 0x01 // last weight's lowest bits: still a valid model, another hash
        try bytes.write(to: URL(fileURLWithPath: safetensors))
        var search = try SearchCommand.parse(["alien robot", "--index", out])
        XCTAssertThrowsError(try search.run())
    }
}
