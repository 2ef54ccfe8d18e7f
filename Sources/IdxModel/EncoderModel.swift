import Foundation
import IdxBase
import IdxCorpus

/// A trained encoder read from models/<name>/ (model.safetensors + tokenizer.json), for
/// inference: mean-pooled embeddings for the index, search and projection stages.
/// Not thread-safe: one EncoderModel per thread (`worker()` makes another that shares the weights).
///
/// Embedding runs the inference-only forward (`InferenceEncoder`: no gradients, no saved
/// activations); the training network (`net`, for the MLM loss) is built on first use
/// over the same parameter buffer.
public final class EncoderModel {
    public let config: ModelConfig
    public let tokenizerHash: String
    public let modelHash: String
    public let directory: String
    /// Tokens per document in training ([BOS] included): the default length to embed with.
    /// Models written before it was recorded were trained at 32.
    public let trainedMaxTokens: Int
    /// Trained on "Title. description" documents: validation documents are read the same way.
    public let titlesInText: Bool
    let layout: ParameterLayout
    let parameters: FloatBuffer
    /// The layers' weights transposed, for short inputs (queries); shared by `worker()`s.
    let transposed: TransposedWeights
    private lazy var inference = InferenceEncoder(config: config, layout: layout, parameters: parameters.ptr, transposed: transposed)
    public lazy var net = EncoderNetwork(config: config, sharedParameters: parameters)

    init(config: ModelConfig, parameters: FloatBuffer, transposed: TransposedWeights? = nil, tokenizerHash: String, modelHash: String,
         directory: String, trainedMaxTokens: Int = 32, titlesInText: Bool = false) {
        self.config = config; layout = ParameterLayout(config); self.parameters = parameters
        self.transposed = transposed ?? TransposedWeights(config: config, layout: layout, parameters: parameters.ptr)
        self.tokenizerHash = tokenizerHash; self.modelHash = modelHash; self.directory = directory
        self.trainedMaxTokens = trainedMaxTokens; self.titlesInText = titlesInText
    }

    /// Another model over the same (read-only) weights, with its own buffers: one per thread.
    public func worker() -> EncoderModel {
        EncoderModel(config: config, parameters: parameters, transposed: transposed, tokenizerHash: tokenizerHash, modelHash: modelHash, directory: directory,
                     trainedMaxTokens: trainedMaxTokens, titlesInText: titlesInText)
    }

    public static func load(directory: String) throws -> EncoderModel {
        let path = directory + "/model.safetensors"
        // Mapped, not read: the weights are copied once, into the parameter buffer (a search
        // loads the model for every process; reading first doubled the copies).
        guard FileKind(lstat: path) == .regular || FileKind(lstat: path) == .missing else {
            throw IdxError("\(path): is \(FileKind.describe(path)), not the model file idx train writes; train one with `idx train --out \(directory)`.")
        }
        guard let data = try? Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped) else {
            throw IdxError("\(path): cannot read the model; train one with `idx train --out \(directory)`.")
        }
        let st = try SafeTensors.parse(data, path: path)
        let cfg = try ModelCheckpoint.config(from: st.metadata, path: path)
        let layout = ParameterLayout(cfg)
        guard layout.count <= data.count / 4 else {
            throw IdxError("\(path): its config needs \(layout.count) parameters, more than the file holds; the file is damaged or not idx's: retrain or restore it.")
        }
        let params = FloatBuffer(layout.count)
        try ModelCheckpoint.copy(from: st, into: params.ptr, layout: layout, path: path)
        guard let tokHash = st.metadata["tokenizer_hash"] else {
            throw IdxError("\(path): no tokenizer_hash in its metadata; it was not written by idx train.")
        }
        let tokPath = directory + "/tokenizer.json"
        guard let tok = FileManager.default.contents(atPath: tokPath) else {
            throw IdxError("\(tokPath): missing; copy the corpus's tokenizer.json beside the model or retrain.")
        }
        let h = XXHash64.hex(XXHash64.hash(tok))
        guard h == tokHash else {
            throw IdxError("\(tokPath): hash \(h) differs from the model's tokenizer_hash \(tokHash); this is not the tokenizer the model was trained with.")
        }
        let trained = st.metadata["train_max_tokens"].flatMap { Int($0) }.map { min(max(2, $0), cfg.maxLen) } ?? min(32, cfg.maxLen)
        return EncoderModel(config: cfg, parameters: params, tokenizerHash: tokHash,
                            modelHash: XXHash64.hex(XXHash64.hash(data)), directory: directory, trainedMaxTokens: trained,
                            titlesInText: st.metadata["titles_in_text"] == "1")
    }

    public func tokenizer() throws -> WordLevelTokenizer {
        let t = try WordLevelTokenizer(contentsOfFile: directory + "/tokenizer.json")
        // Every id the tokenizer gives must have an embedding row.
        guard t.vocabSize <= config.vocabSize else {
            throw IdxError("\(directory)/tokenizer.json: \(t.vocabSize) words, but the model embeds only \(config.vocabSize); the model and its tokenizer do not belong together: retrain or restore them.")
        }
        return t
    }

    /// Mean-pooled final hidden states (over non-padding positions, [BOS]/[EOS] included), no dropout.
    /// Each document is given WITHOUT specials; it is wrapped as [BOS] ids [EOS] and cut to
    /// `maxTokens` (at most the model's max_len). Returns count × dModel floats, row-major.
    public func embed(_ corpus: TokenizedCorpus, range: Range<Int>, maxTokens: Int = 32, batchSize: Int = 64) -> [Float] {
        let c = config.dModel
        return [Float](unsafeUninitializedCapacity: range.count * c) { out, count in
            inference.embed(corpus, range: range, maxTokens: maxTokens, batchSize: batchSize, into: out.baseAddress!)
            count = range.count * c
        }
    }

    /// Queries' embeddings (as `embed`, all in one forward): a query's vector is the same alone
    /// or in any batch, bit for bit.
    public func embedQueries(_ queries: TokenizedCorpus, maxTokens: Int) -> [Float] {
        let c = config.dModel, n = queries.count
        return [Float](unsafeUninitializedCapacity: n * c) { out, count in
            inference.embed(queries, range: 0 ..< n, maxTokens: maxTokens, batchSize: max(n, 1), rowwise: true, into: out.baseAddress!)
            count = n * c
        }
    }

    /// `embed` into caller memory (range.count × dModel floats).
    public func embed(_ corpus: TokenizedCorpus, range: Range<Int>, maxTokens: Int = 32, batchSize: Int = 64,
                      into out: UnsafeMutablePointer<Float>) {
        inference.embed(corpus, range: range, maxTokens: maxTokens, batchSize: batchSize, into: out)
    }
}

/// [BOS] ids [EOS], cut to `maxTokens` ([BOS] included; a long document loses its [EOS]).
public func wrapDocument(_ ids: ArraySlice<Int32>, maxTokens: Int) -> [Int32] {
    var seq = [Int32]()
    seq.reserveCapacity(min(ids.count + 2, maxTokens))
    seq.append(SpecialToken.bos)
    seq += ids.prefix(maxTokens - 1)
    if seq.count < maxTokens { seq.append(SpecialToken.eos) }
    return seq
}

/// model.safetensors: PyTorch state_dict names, config and tokenizer hash in __metadata__.
public enum ModelCheckpoint {
    /// `trainedTokens`: the length the documents were cut to in training (--max-len), which
    /// idx index uses by default: a model embeds best what it was trained to read.
    /// `titlesInText`: the documents it was trained on were "Title. description" (Ingest.Options).
    public static func metadata(_ cfg: ModelConfig, tokenizerHash: String, step: Int, trainedTokens: Int, titlesInText: Bool) -> [String: String] {
        var m = ["format": "pt", "idx_format": "idx-encoder-1", "vocab_size": "\(cfg.vocabSize)", "d_model": "\(cfg.dModel)",
         "n_heads": "\(cfg.nHeads)", "n_layers": "\(cfg.nLayers)", "d_ff": "\(cfg.dFF)", "max_len": "\(cfg.maxLen)",
         "dropout": "\(cfg.dropout)", "tokenizer_hash": tokenizerHash, "step": "\(step)", "train_max_tokens": "\(trainedTokens)"]
        if titlesInText { m["titles_in_text"] = "1" }
        return m
    }

    public static func config(from m: [String: String], path: String) throws -> ModelConfig {
        func int(_ k: String) throws -> Int {
            guard let s = m[k], let v = Int(s) else { throw IdxError("\(path): metadata field \(k) is missing or not an integer; it was not written by idx train.") }
            return v
        }
        guard let dropout = Float(m["dropout"] ?? "") else { throw IdxError("\(path): metadata field dropout is missing.") }
        let cfg = ModelConfig(vocabSize: try int("vocab_size"), dModel: try int("d_model"), nHeads: try int("n_heads"),
                              nLayers: try int("n_layers"), dFF: try int("d_ff"), maxLen: try int("max_len"), dropout: dropout)
        do { try cfg.validate() } catch let e as IdxError { throw IdxError("\(path): \(e.message)") }
        return cfg
    }

    public static func tensors(of buffer: UnsafePointer<Float>, layout: ParameterLayout, prefix: String = "") -> SafeTensors {
        var st = SafeTensors()
        for s in layout.slots {
            st.add(prefix + s.name, shape: s.shape, data: Array(UnsafeBufferPointer(start: buffer + s.offset, count: s.count)))
        }
        return st
    }

    public static func copy(from st: SafeTensors, into buffer: UnsafeMutablePointer<Float>, layout: ParameterLayout,
                     prefix: String = "", path: String) throws {
        for s in layout.slots {
            guard let t = st.tensors[prefix + s.name] else {
                throw IdxError("\(path): tensor \(prefix + s.name) is missing; the file is incomplete, retrain or restore it.")
            }
            guard t.shape == s.shape else {
                throw IdxError("\(path): tensor \(prefix + s.name) has shape \(t.shape), the config says \(s.shape).")
            }
            guard t.data.allSatisfy({ $0.isFinite }) else {
                throw IdxError("\(path): tensor \(prefix + s.name) holds NaN or infinite values; use an earlier checkpoint.")
            }
            t.data.withUnsafeBufferPointer { (buffer + s.offset).update(from: $0.baseAddress!, count: s.count) }
        }
    }

    static func copyParameters(from st: SafeTensors, into net: EncoderNetwork, path: String) throws {
        try copy(from: st, into: net.params.ptr, layout: net.layout, path: path)
    }
}
