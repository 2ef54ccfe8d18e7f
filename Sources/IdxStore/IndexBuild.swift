import Foundation
import IdxBase
import IdxParallel
import IdxCorpus
import IdxModel

/// `idx index` without its command line: embeds a corpus with a model (or takes raw vectors)
/// and publishes a generation, in one process or as one rank of `--procs N`.
public enum IndexBuild {
    public struct Options {
        public var model = "models/movies"
        public var corpus = "corpora/movies"
        public var out = "indexes/movies"
        public var append = false
        public var standardize = false
        /// Tokens per document fed to the model; nil: the length it was trained on.
        public var maxTokens: Int?
        /// Inference threads (0: all cores) and documents per batch (CorpusEmbedder).
        public var threads = 0
        public var batchSize = 32
        /// The BM25 share search uses by default; 0 writes no lexical half.
        public var lexicalWeight: Float = VectorIndexWriter.defaultLexicalWeight
        /// Developer: index raw float32 rows of this dimension from a file instead of a corpus.
        public var fromVectors: String?
        public var dimension = 128
        /// Developer: also write the embeddings, or the model's input rows, to these files.
        public var dumpVectors: String?
        public var dumpTokens: String?
        public init() {}
    }

    /// What was published, for the command's summary line.
    public struct Summary {
        public var documents: Int
        public var dimension: Int
        public var seconds: Double
        public var ranks: Int
        public var result: VectorIndexWriter.Result

        /// "index: N documents -> out (gen, segments, documents) in …; bytes/vector …".
        public func line(out: String) -> String {
            let perVector = Double(result.vectorBytes) / Double(max(1, documents))
            return String(format: "index: %d documents -> %@ (%@, %d segment(s), %d documents) in %.2fs (%.0f docs/s)%@; %.1f bytes/vector (%.1f%% of float32), segment%@ %.1f MB",
                          documents, out, result.generation, result.manifest.segments.count, result.manifest.count, seconds,
                          Double(documents) / max(seconds, 1e-9), ranks > 1 ? " on \(ranks) ranks" : "", perVector,
                          100 * perVector / Double(4 * dimension), ranks > 1 ? "s" : "", Double(result.segmentBytes) / 1e6)
        }
    }

    /// One process: embeds (or reads) the vectors and publishes them.
    public static func run(_ o: Options) throws -> Summary {
        let start = Date()
        let embeddings: [Float], metadata: [DocumentMetadata], provenance: IndexProvenance, d: Int
        if let file = o.fromVectors {
            (embeddings, metadata, provenance, d) = try readVectorFile(file, o)
        } else {
            (embeddings, metadata, provenance, d) = try embedCorpus(o, comm: .single())
        }
        if let dump = o.dumpVectors {
            try AtomicFile.write(embeddings.withUnsafeBytes { Data($0) }, to: dump)
        }
        // Raw vectors without a model have no texts to index lexically.
        let lexical = provenance.modelHash == "none" || o.lexicalWeight == 0 ? nil : o.lexicalWeight
        let result = try VectorIndexWriter.write(directory: o.out, embeddings: embeddings, dimension: d,
                                                 metadata: metadata, provenance: provenance,
                                                 append: o.append, standardize: o.standardize, lexicalWeight: lexical)
        return Summary(documents: metadata.count, dimension: d, seconds: Date().timeIntervalSince(start), ranks: 1, result: result)
    }

    /// One rank of `--procs N`: embeds this rank's share, writes its segment; rank 0 publishes
    /// once every segment is complete (DistributedIndexWriter). Returns the summary on rank 0.
    public static func runRank(_ o: Options, comm: Communicator) throws -> Summary? {
        guard o.fromVectors == nil else { throw IdxError("--from-vectors runs in one process, not under mpirun.") }
        let start = Date()
        let (embeddings, metadata, provenance, d) = try embedCorpus(o, comm: comm)
        // A common start line for the whole-job rate: the slowest rank decides.
        let embedSeconds = try comm.allreduceMax(Date().timeIntervalSince(start))
        let total = try comm.allreduceSum(metadata.count)
        if comm.isRoot {
            FileHandle.standardError.write(Data(String(format: "index: embedded %d documents in %.2fs (%.0f docs/s) on %d ranks\n",
                                                       total, embedSeconds, Double(total) / max(embedSeconds, 1e-9), comm.size).utf8))
        }
        if let dump = o.dumpVectors {
            // Gathered on rank 0 in rank order (one broadcast per rank).
            var all = [Float]()
            for r in 0 ..< comm.size {
                var part = r == comm.rank ? embeddings : [Float](repeating: 0, count: Communicator.share(of: total, rank: r, size: comm.size).count * d)
                try comm.broadcast(&part, root: r)
                if comm.isRoot { all += part }
            }
            if comm.isRoot { try AtomicFile.write(all.withUnsafeBytes { Data($0) }, to: dump) }
        }
        let result = try DistributedIndexWriter.write(comm: comm, directory: o.out, embeddings: embeddings, dimension: d,
                                                      metadata: metadata, shareStart: comm.share(of: total).lowerBound,
                                                      provenance: provenance, append: o.append, standardize: o.standardize,
                                                      lexicalWeight: o.lexicalWeight == 0 ? nil : o.lexicalWeight)
        guard comm.isRoot else { return nil }
        return Summary(documents: total, dimension: d, seconds: Date().timeIntervalSince(start), ranks: comm.size, result: result)
    }

    /// Batched inference over this rank's share of the corpus (CorpusEmbedder), with progress.
    static func embedCorpus(_ o: Options, comm: Communicator) throws -> ([Float], [DocumentMetadata], IndexProvenance, Int) {
        BLASRuntime.preferWidestKernels()
        let reader = try CorpusReader(directory: o.corpus)
        let model = try EncoderModel.load(directory: o.model)
        guard reader.tokenizerHash == model.tokenizerHash else {
            throw IdxError("\(o.corpus): tokenized with tokenizer \(reader.tokenizerHash), but \(o.model) was trained with \(model.tokenizerHash); re-ingest the corpus with `idx ingest --tokenizer \(o.model)/tokenizer.json`.")
        }
        let tokens = try reader.readTokens()
        try model.checkVocabulary(tokens, source: o.corpus)
        let share = comm.share(of: tokens.count)
        let metadata = Array(try reader.readMetadata()[share])
        let maxTokens = o.maxTokens ?? model.trainedMaxTokens
        if let path = o.dumpTokens, comm.isRoot {
            try dumpModelInput(tokens, width: max(2, min(maxTokens, model.config.maxLen)), to: path)
        }
        let embedder = CorpusEmbedder(threads: o.threads, batchSize: o.batchSize, maxTokens: maxTokens, ranks: comm.size,
                                      progressLabel: comm.size > 1 ? "index: rank \(comm.rank)" : "index:")
        let (vectors, _) = embedder.embed(model, tokens, range: share)
        return (vectors, metadata, IndexProvenance(modelHash: model.modelHash, tokenizerHash: model.tokenizerHash,
                                                   modelDirectory: ModelPath.recorded(o.model, index: o.out),
                                                   maxTokens: maxTokens, source: o.corpus), model.config.dModel)
    }

    /// The model's input rows: [BOS] ids [EOS], cut to `width` ([EOS] lost when cut), [PAD]-filled, int32.
    static func dumpModelInput(_ tokens: TokenizedCorpus, width: Int, to path: String) throws {
        var rows = [Int32](repeating: SpecialToken.pad, count: tokens.count * width)
        for i in 0 ..< tokens.count {
            let seq = [SpecialToken.bos] + tokens.document(i).prefix(width - 1) + [SpecialToken.eos]
            for (j, t) in seq.prefix(width).enumerated() { rows[i * width + j] = t }
        }
        try AtomicFile.write(rows.withUnsafeBytes { Data($0) }, to: path)
    }

    /// `--from-vectors`: rows a model produced (`--dump-vectors`, possibly repeated) are indexed
    /// with that model recorded, so text queries work, and the corpus's metadata, cycled when the
    /// file repeats the corpus, each copy's titles marked ("(copy 2)"…) so that every row stays a
    /// film of its own (search keeps one hit a film); without a model, placeholder metadata and no model.
    static func readVectorFile(_ file: String, _ o: Options) throws -> ([Float], [DocumentMetadata], IndexProvenance, Int) {
        let (embeddings, d) = try RawVectors.read(file, dimension: o.dimension)
        let n = embeddings.count / d
        guard FileManager.default.fileExists(atPath: o.model + "/model.safetensors") else {
            let metadata = (0 ..< n).map {
                DocumentMetadata(title: "vector \($0)", year: nil, genre: "none", expandedGenres: "none", rating: nil,
                                 description: "row \($0) of \(file)", sourceFile: file, sourceRow: $0 + 1)
            }
            return (embeddings, metadata, IndexProvenance(modelHash: "none", tokenizerHash: "none", modelDirectory: "",
                                                          maxTokens: 0, source: file), d)
        }
        let m = try EncoderModel.load(directory: o.model)
        guard m.config.dModel == d else {
            throw IdxError("\(file): rows are \(d)-dimensional but \(o.model) embeds in \(m.config.dModel); pass --dimension or another --model.")
        }
        let corpusMeta = try CorpusReader(directory: o.corpus).readMetadata()
        guard !corpusMeta.isEmpty, n % corpusMeta.count == 0 else {
            throw IdxError("\(file): \(n) rows is not a whole number of copies of \(o.corpus) (\(corpusMeta.count) documents).")
        }
        let provenance = IndexProvenance(modelHash: m.modelHash, tokenizerHash: m.tokenizerHash,
                                         modelDirectory: ModelPath.recorded(o.model, index: o.out),
                                         maxTokens: o.maxTokens ?? m.trainedMaxTokens, source: file)
        let metadata = (0 ..< n).map { i -> DocumentMetadata in
            var m = corpusMeta[i % corpusMeta.count]
            if i >= corpusMeta.count { m.title += " (copy \(i / corpusMeta.count + 1))" }
            return m
        }
        return (embeddings, metadata, provenance, d)
    }
}

/// Files of raw little-endian float32 rows (the developer options `--from-vectors`,
/// `--query-vectors`, `--bench`).
public enum RawVectors {
    public static func read(_ path: String, dimension d: Int) throws -> ([Float], Int) {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw IdxError("\(path): cannot read the vector file; check the path.")
        }
        guard d > 0, data.count % (4 * d) == 0 else {
            throw IdxError("\(path): \(data.count) bytes is not a whole number of \(d)-dimensional float32 rows; check --dimension.")
        }
        let n = data.count / 4
        let v = [Float](unsafeUninitializedCapacity: n) { out, c in
            data.withUnsafeBytes { UnsafeMutableRawBufferPointer(out).copyMemory(from: $0) }; c = n
        }
        return (v, d)
    }
}
