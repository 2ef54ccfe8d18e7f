import Foundation
import XCTest
import idx
import IdxCorpus
import IdxModel
import IdxTrain
import IdxSearch
import IdxEval
@testable import IdxStore

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
    func makeCorpusAndModel(trainedTokens: Int = 32) throws -> (corpus: String, model: String) {
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
        train.maxLen = trainedTokens
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

    /// The manifest records the model relative to the index: a project folder (model, corpus,
    /// index) moved elsewhere still answers the same; an old manifest's absolute path still reads.
    func testMovedIndexFolderStillAnswers() throws {
        let (corpus, model) = try makeCorpusAndModel()
        let project = tmp + "/project"
        try FileManager.default.createDirectory(atPath: project + "/models", withIntermediateDirectories: true)
        try FileManager.default.moveItem(atPath: model, toPath: project + "/models/m")
        let cwd = FileManager.default.currentDirectoryPath
        FileManager.default.changeCurrentDirectoryPath(project)
        defer { FileManager.default.changeCurrentDirectoryPath(cwd) }
        var index = try IndexCommand.parse(["--model", "models/m", "--corpus", corpus, "--out", "indexes/i"])
        try index.run()
        FileManager.default.changeCurrentDirectoryPath(cwd)
        let before = try SearchEngine(index: project + "/indexes/i").search("an alien robot", SearchSettings(k: 5))
        XCTAssertEqual(try VectorIndexReader(directory: project + "/indexes/i").manifest.modelDirectory, "../../models/m")

        let moved = tmp + "/elsewhere/project"
        try FileManager.default.createDirectory(atPath: tmp + "/elsewhere", withIntermediateDirectories: true)
        try FileManager.default.moveItem(atPath: project, toPath: moved)
        let engine = try SearchEngine(index: moved + "/indexes/i")
        XCTAssertEqual(engine.reader.modelDirectory, moved + "/models/m")
        let after = try engine.search("an alien robot", SearchSettings(k: 5))
        XCTAssertEqual(after.map(\.index), before.map(\.index))
        XCTAssertEqual(after.map(\.score), before.map(\.score))

        // A manifest written before relative paths holds an absolute one: still read as such.
        let manifestPath = moved + "/indexes/i/" + engine.reader.generation + "/manifest.json"
        let text = try String(contentsOfFile: manifestPath, encoding: .utf8)
        try text.replacingOccurrences(of: "\"..\\/..\\/models\\/m\"", with: "\"\(moved.replacingOccurrences(of: "/", with: "\\/"))\\/models\\/m\"")
            .write(toFile: manifestPath, atomically: true, encoding: .utf8)
        let old = try SearchEngine(index: moved + "/indexes/i")
        XCTAssertEqual(old.reader.manifest.modelDirectory, moved + "/models/m")
        XCTAssertEqual(try old.search("an alien robot", SearchSettings(k: 5)).map(\.index), before.map(\.index))
    }

    /// Two `idx index` on one folder at once: one publishes, the other is refused naming the
    /// holder (or, when they do not overlap, both publish in turn); either way CURRENT names one
    /// complete generation and every segment a kept generation lists is on disk.
    func testTwoConcurrentIndexCommandsLeaveOneCompleteGeneration() throws {
        let (corpus, model) = try makeCorpusAndModel()
        let out = tmp + "/index"
        let group = DispatchGroup()
        let results = Locked<[Bool]>([])
        for _ in 0 ..< 2 {
            DispatchQueue.global().async(group: group) {
                var ok = true
                do { var c = try IndexCommand.parse(["--model", model, "--corpus", corpus, "--out", out]); try c.run() } catch { ok = false }
                results.mutate { $0.append(ok) }
            }
        }
        group.wait()
        let outcomes = results.current
        XCTAssertTrue(outcomes.contains(true), "\(outcomes)")
        let reader = try VectorIndexReader(directory: out)
        XCTAssertEqual(reader.generation, IndexLayout.generationName(outcomes.filter { $0 }.count))
        XCTAssertEqual(reader.count, try CorpusReader(directory: corpus).readTokens().count)
        for f in reader.manifest.segments.flatMap(\.files) {
            XCTAssertTrue(FileManager.default.fileExists(atPath: out + "/" + f), f)
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: out + "/segments").filter { $0.hasPrefix(".") }, [],
                       "no pending marker or temporary file is left")
        XCTAssertFalse(try SearchEngine(index: out).search("an alien robot", SearchSettings(k: 3)).isEmpty)
    }

    /// `idx index` embeds at the length the model was trained on (recorded in model.safetensors),
    /// unless --max-tokens says otherwise; a model written before the length was recorded is read as 32.
    func testIndexEmbedsAtTheModelsTrainingLength() throws {
        let (corpus, model) = try makeCorpusAndModel(trainedTokens: 8)
        let encoder = try EncoderModel.load(directory: model)
        XCTAssertEqual(encoder.trainedMaxTokens, 8)
        let out = tmp + "/index"
        var index = try IndexCommand.parse(["--model", model, "--corpus", corpus, "--out", out])
        try index.run()
        let reader = try VectorIndexReader(directory: out)
        XCTAssertEqual(reader.manifest.maxTokens, 8)
        // Document 3 has 14 words: cut to 8 tokens and to 32 it embeds differently; the index holds the first.
        let tokens = try CorpusReader(directory: corpus).readTokens()
        XCTAssertGreaterThan(tokens.document(3).count, 8)
        let d = reader.dimension, stored = Array(reader.dequantizedVectors()[3 * d ..< 4 * d])
        func cosine(_ maxTokens: Int) -> Float {
            var one = encoder.embed(tokens, range: 3 ..< 4, maxTokens: maxTokens, batchSize: 1)
            VectorIndexWriter.prepare(&one, dimension: d, standardization: nil)
            return zip(one, stored).reduce(0) { $0 + $1.0 * $1.1 }
        }
        XCTAssertGreaterThan(cosine(8), 0.999)
        XCTAssertLessThan(cosine(32), cosine(8))
        // An explicit length wins, and a segment of another length cannot be appended.
        var longer = try IndexCommand.parse(["--model", model, "--corpus", corpus, "--out", tmp + "/long", "--max-tokens", "32"])
        try longer.run()
        XCTAssertEqual(try VectorIndexReader(directory: tmp + "/long").manifest.maxTokens, 32)
        var mixed = try IndexCommand.parse(["--model", model, "--corpus", corpus, "--out", out, "--append", "--max-tokens", "32"])
        XCTAssertThrowsError(try mixed.run())
        XCTAssertEqual(try VectorIndexReader(directory: out).count, tokens.count)
        // An older model file, without train_max_tokens in its metadata.
        let path = model + "/model.safetensors"
        var st = try SafeTensors.parse(try Data(contentsOf: URL(fileURLWithPath: path)), path: path)
        XCTAssertEqual(st.metadata.removeValue(forKey: "train_max_tokens"), "8")
        try st.serialized().write(to: URL(fileURLWithPath: path))
        XCTAssertEqual(try EncoderModel.load(directory: model).trainedMaxTokens, 32)
    }

    /// `idx train`'s length and masking flags reach the run's options and the model file; the
    /// default preset reads whole documents (64 tokens), the seed preset the notebook's 32; a model
    /// trained on "Title. description" documents is evaluated on such documents.
    func testTrainCommandRecordsLengthMaskingAndTitles() throws {
        let (corpus, _) = try makeCorpusAndModel()
        struct State: Decodable { var options: TrainOptions }
        func train(_ name: String, _ extra: [String]) throws -> (TrainOptions, EncoderModel) {
            var cmd = try TrainCommand.parse(["--corpus", corpus, "--out", tmp + "/" + name, "--steps", "2", "--d-model", "16", "--heads", "2",
                                              "--layers", "1", "--d-ff", "32", "--threads", "1"] + extra)
            try cmd.run()
            let state = try JSONDecoder().decode(State.self, from: Data(contentsOf: URL(fileURLWithPath: tmp + "/" + name + "/state.json")))
            return (state.options, try EncoderModel.load(directory: tmp + "/" + name))
        }
        let (custom, model) = try train("custom", ["--max-len", "12", "--mask-probability", "0.3"])
        XCTAssertEqual(custom.maxLen, 12)
        XCTAssertEqual(custom.maskProbability, 0.3)
        XCTAssertEqual(model.trainedMaxTokens, 12)
        let (standard, standardModel) = try train("default", [])
        XCTAssertEqual(standard.maxLen, 64)   // whole documents
        XCTAssertEqual(standardModel.trainedMaxTokens, 64)
        let (seed, seedModel) = try train("seed", ["--preset", "seed"])
        XCTAssertEqual(seed.maxLen, 32)
        XCTAssertEqual(seed.maskProbability, 0.15)
        XCTAssertEqual(seedModel.trainedMaxTokens, 32)
        XCTAssertFalse(standardModel.titlesInText)
        // A corpus of "Title. description" documents: the model says so, and idx eval reads validation
        // documents the same way. Two films share a description but not their titles or genres: each
        // finds itself (k = 1, cosine only) only if the titles are part of what is embedded.
        let twins = "Alpha Alpha - 2001,Western,Western,5,\"The very same words for two films of other genres\"\n"
            + "Beta Beta - 2002,Musical,Musical,5,\"The very same words for two films of other genres\"\n"
        try (try String(contentsOfFile: tmp + "/films.csv", encoding: .utf8) + twins).write(toFile: tmp + "/all.csv", atomically: true, encoding: .utf8)
        try ("movie title - year,genre,expanded-genres,rating,description\n" + twins).write(toFile: tmp + "/twins.csv", atomically: true, encoding: .utf8)
        var o = Ingest.Options(inputs: [tmp + "/all.csv"], output: tmp + "/titled", vocabSize: 200)
        o.showProgress = false; o.titlesInText = true
        _ = try Ingest.run(o)
        var titled = try TrainCommand.parse(["--corpus", tmp + "/titled", "--out", tmp + "/titled-model", "--steps", "2", "--d-model", "16",
                                             "--heads", "2", "--layers", "1", "--d-ff", "32", "--threads", "1"])
        try titled.run()
        let titledModel = try EncoderModel.load(directory: tmp + "/titled-model")
        XCTAssertTrue(titledModel.titlesInText)
        var index = try IndexCommand.parse(["--model", tmp + "/titled-model", "--corpus", tmp + "/titled", "--out", tmp + "/titled-index"])
        try index.run()
        var eval = EvalRun.Options(index: tmp + "/titled-index", validation: tmp + "/twins.csv",
                                   seedTest: IngestTestSupport.repoRoot.path + "/corpora/seed-test.tsv")
        eval.k = 1; eval.lexicalWeight = 0; eval.feedback.documents = 0
        XCTAssertEqual(try EvalRun.run(eval).knn!.precision, 1)
        var bad = try TrainCommand.parse(["--corpus", corpus, "--out", tmp + "/bad", "--steps", "2", "--mask-probability", "1.5"])
        XCTAssertThrowsError(try bad.run())
        XCTAssertFalse(FileManager.default.fileExists(atPath: tmp + "/bad/model.safetensors"))
    }

    func testSearchRefusesAModelThatDoesNotMatchTheIndex() throws {
        let (corpus, model) = try makeCorpusAndModel()
        let out = tmp + "/index"
        let index = try IndexCommand.parse(["--model", model, "--corpus", corpus, "--out", out])
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
        let search = try SearchCommand.parse(["alien robot", "--index", out])
        XCTAssertThrowsError(try search.run())
    }
}
