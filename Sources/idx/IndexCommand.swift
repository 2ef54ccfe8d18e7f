import ArgumentParser
import COpenBLAS
import Foundation
import IdxCore

public struct IndexCommand: ParsableCommand {
    public init() {}

    public static let configuration = CommandConfiguration(
        commandName: "index",
        abstract: "Embed a corpus with a trained model and publish an int8 vector index.",
        discussion: """
        Each document's embedding is the mean of the model's final hidden states over its tokens \
        ([BOS] and [EOS] included). Vectors are normalised (after --standardize's z-scoring), quantized \
        to int8 and written as a zstd segment, beside a BM25 inverted index of the documents' words \
        (the lexical half of hybrid search); a new generation is published atomically. See docs/store.md.
        """
    )

    @Option(help: "Model folder (model.safetensors + tokenizer.json).")
    var model: String = "models/movies"

    @Option(help: "Corpus folder written by idx ingest.")
    var corpus: String = "corpora/movies"

    @Option(help: "Index folder.")
    var out: String = "indexes/movies"

    @Flag(help: "Add the corpus as a new segment, leaving the current ones untouched.")
    var append = false

    @Option(help: "Ranks on this machine, started through Open MPI's mpirun: each embeds its share of the corpus and writes its own segment; rank 0 publishes. Under your own mpirun, leave it out.")
    var procs: Int = 1

    @Flag(help: "Z-score each dimension with corpus statistics before normalising (stored with the index, applied to queries).")
    var standardize = false

    @Option(help: "Tokens per document fed to the model, [BOS]/[EOS] included (default: the length the model was trained on, its --max-len).")
    var maxTokens: Int?

    @Option(help: "Inference threads (0: all cores).")
    var threads: Int = 0

    @Option(help: "Documents per inference batch.")
    var batchSize: Int = 32

    @Option(help: "BM25 share of the hybrid score that idx search and idx eval use by default; 0 writes no lexical half (cosine only).")
    var lexicalWeight: Float = HybridScoring.defaultLexicalWeight

    @Option(help: ArgumentHelp("Developer: index raw float32 rows from this file instead of a corpus.", visibility: .hidden))
    var fromVectors: String?

    @Option(help: ArgumentHelp("Developer: dimension of --from-vectors rows.", visibility: .hidden))
    var dimension: Int = 128

    @Option(help: ArgumentHelp("Developer: also write the embeddings (raw float32 rows) to this file.", visibility: .hidden))
    var dumpVectors: String?

    @Option(help: ArgumentHelp("Developer: write the model's input ([BOS] ids [EOS], cut to --max-tokens, [PAD]-filled) as int32 rows of --max-tokens.", visibility: .hidden))
    var dumpTokens: String?

    @Flag(help: "Write into an existing --out folder even if it holds files idx did not write (never one holding the corpus or the model).")
    var force = false

    public func run() throws {
        do {
            guard (0 ... 1).contains(lexicalWeight) else {
                throw IdxError("--lexical-weight \(lexicalWeight): give a share from 0 (cosine only) to 1 (BM25 only).")
            }
            guard procs >= 1 else { throw IdxError("--procs must be at least 1 (got \(procs))") }
            // Caps: a batch's activations and a thread's buffers are allocated up front.
            guard (1 ... 4096).contains(batchSize) else { throw IdxError("--batch-size \(batchSize): give 1 to 4096 documents per batch (default 32).") }
            guard (0 ... 1024).contains(threads) else { throw IdxError("--threads \(threads): give 0 (all cores) to 1024.") }
            if let m = maxTokens, !(2 ... 65_536).contains(m) { throw IdxError("--max-tokens \(m): give 2 to 65536 tokens (at most the model's max_len is used).") }
            try OutputPath.checkFolder(out, kind: .index, inputs: [corpus, model] + (fromVectors.map { [$0] } ?? []), force: force)
            // One writer per index folder: the launcher (or the single process) holds the lock;
            // ranks under mpirun do not take it again.
            let lock = MPIEnvironment().isLaunchedByMPI ? nil : try OutputLock.acquire(out, command: "idx index")
            defer { lock?.release() }
            // --procs N re-runs this command as N ranks under mpirun (as idx train does).
            if procs > 1 && !MPIEnvironment().isLaunchedByMPI {
                guard fromVectors == nil else { throw IdxError("--procs \(procs) works on a corpus; --from-vectors runs in one process.") }
                let status = try MPILauncher.run(procs: procs, arguments: Array(CommandLine.arguments.dropFirst()),
                                                 failureNote: "Nothing was published; the previous generation of \(out) (if any) still serves.")
                if status != 0 { throw ExitCode(status) }
                return
            }
            if MPIEnvironment().isLaunchedByMPI {
                let comm = try Communicator.start()
                defer { comm.finalize() }
                if comm.size > 1 {
                    guard fromVectors == nil else { throw IdxError("--from-vectors runs in one process, not under mpirun.") }
                    // A rank's error ends the whole job (no rank left waiting in a collective);
                    // nothing is published unless every rank completed its segment.
                    do { try runRank(comm) } catch let e as IdxError { comm.abort("error: " + e.message) }
                    return
                }
            }
            let start = Date()
            let embeddings: [Float], metadata: [DocumentMetadata], provenance: IndexProvenance, d: Int
            if let file = fromVectors {
                (embeddings, d) = try readVectors(file, dimension: dimension)
                let n = embeddings.count / d
                if FileManager.default.fileExists(atPath: model + "/model.safetensors") {
                    // Vectors this model produced (--dump-vectors, possibly repeated): record the model so text
                    // queries work, and take the corpus's metadata, cycled when the file repeats the corpus.
                    let m = try EncoderModel.load(directory: model)
                    guard m.config.dModel == d else {
                        throw IdxError("\(file): rows are \(d)-dimensional but \(model) embeds in \(m.config.dModel); pass --dimension or another --model.")
                    }
                    let corpusMeta = try CorpusReader(directory: corpus).readMetadata()
                    guard !corpusMeta.isEmpty, n % corpusMeta.count == 0 else {
                        throw IdxError("\(file): \(n) rows is not a whole number of copies of \(corpus) (\(corpusMeta.count) documents).")
                    }
                    metadata = (0 ..< n).map { corpusMeta[$0 % corpusMeta.count] }
                    provenance = IndexProvenance(modelHash: m.modelHash, tokenizerHash: m.tokenizerHash,
                                                 modelDirectory: ModelPath.recorded(model, index: out),
                                                 maxTokens: maxTokens ?? m.trainedMaxTokens, source: file)
                } else {
                    metadata = (0 ..< n).map {
                        DocumentMetadata(title: "vector \($0)", year: nil, genre: "none", expandedGenres: "none", rating: nil,
                                         description: "row \($0) of \(file)", sourceFile: file, sourceRow: $0 + 1)
                    }
                    provenance = IndexProvenance(modelHash: "none", tokenizerHash: "none", modelDirectory: "",
                                                 maxTokens: 0, source: file)
                }
            } else {
                (embeddings, metadata, provenance, d) = try embedCorpus()
            }
            if let dump = dumpVectors {
                try AtomicFile.write(embeddings.withUnsafeBytes { Data($0) }, to: dump)
            }
            // Raw vectors without a model have no texts to index lexically.
            let lexical = provenance.modelHash == "none" || lexicalWeight == 0 ? nil : lexicalWeight
            let result = try VectorIndexWriter.write(directory: out, embeddings: embeddings, dimension: d,
                                                     metadata: metadata, provenance: provenance,
                                                     append: append, standardize: standardize, lexicalWeight: lexical)
            let n = metadata.count
            let secs = Date().timeIntervalSince(start)
            let perVector = Double(result.vectorBytes) / Double(max(1, n))
            FileHandle.standardError.write(Data(String(
                format: "index: %d documents -> %@ (%@, %d segment(s), %d documents) in %.2fs (%.0f docs/s); %.1f bytes/vector (%.1f%% of float32), segment %.1f MB\n",
                n, out, result.generation, result.manifest.segments.count, result.manifest.count, secs,
                Double(n) / max(secs, 1e-9), perVector, 100 * perVector / Double(4 * d),
                Double(result.segmentBytes) / 1e6).utf8))
        } catch let e as IdxError {
            FileHandle.standardError.write(Data(("error: " + e.message + "\n").utf8))
            throw ExitCode(1)
        }
    }

    /// Batched inference over the corpus, with progress and docs/s.
    func embedCorpus(comm: Communicator = .single()) throws -> ([Float], [DocumentMetadata], IndexProvenance, Int) {
        BLASRuntime.preferAVX512()
        let reader = try CorpusReader(directory: corpus)
        let model = try EncoderModel.load(directory: model)
        guard reader.tokenizerHash == model.tokenizerHash else {
            throw IdxError("\(corpus): tokenized with tokenizer \(reader.tokenizerHash), but \(self.model) was trained with \(model.tokenizerHash); re-ingest the corpus with `idx ingest --tokenizer \(self.model)/tokenizer.json`.")
        }
        let tokens = try reader.readTokens()
        try model.checkVocabulary(tokens, source: corpus)
        let share = comm.share(of: tokens.count)
        let metadata = Array(try reader.readMetadata()[share])
        let maxTokens = self.maxTokens ?? model.trainedMaxTokens
        if let path = dumpTokens, comm.isRoot {
            let width = max(2, min(maxTokens, model.config.maxLen))
            var rows = [Int32](repeating: SpecialToken.pad, count: tokens.count * width)
            for i in 0 ..< tokens.count {
                // EncoderModel.embed's contract: [BOS] ids [EOS], cut to the width ([EOS] lost when cut).
                let seq = [SpecialToken.bos] + tokens.document(i).prefix(width - 1) + [SpecialToken.eos]
                for (j, t) in seq.prefix(width).enumerated() { rows[i * width + j] = t }
            }
            try AtomicFile.write(rows.withUnsafeBytes { Data($0) }, to: path)
        }
        let n = share.count, d = model.config.dModel, first = share.lowerBound
        let progress = Progress(comm.size > 1 ? "index: rank \(comm.rank) embedding" : "index: embedding", unit: "docs", total: Double(n))
        // One model per worker thread (an EncoderModel is not thread-safe; workers share the
        // weights), single-threaded BLAS in each, blocks of documents taken in turn; each block
        // lands at its own offset. Under MPI the cores are divided between the ranks.
        let cores = max(1, ProcessInfo.processInfo.activeProcessorCount / comm.size)
        let workers = max(1, min(threads > 0 ? threads : cores, n / 256 + 1))
        if workers > 1 || comm.size > 1 || threads == 1 { openblas_set_num_threads(1) }
        var models = [model]
        for _ in 1 ..< workers { models.append(model.worker()) }
        let step = max(batchSize * 8, 256)
        let blocks = (n + step - 1) / step
        var out = [Float](repeating: 0, count: n * d)
        let lock = NSLock()
        var done = 0
        out.withUnsafeMutableBufferPointer { o in
            let o = o
            DispatchQueue.concurrentPerform(iterations: workers) { w in
                var b = w
                while b < blocks {
                    let range = b * step ..< min(n, (b + 1) * step)
                    models[w].embed(tokens, range: first + range.lowerBound ..< first + range.upperBound, maxTokens: maxTokens,
                                    batchSize: batchSize, into: o.baseAddress! + range.lowerBound * d)
                    lock.lock(); done += range.count; progress.update(Double(done)); lock.unlock()
                    b += workers
                }
            }
        }
        let secs = progress.elapsed
        progress.finish(String(format: "index: %@embedded %d documents in %.2fs (%.0f docs/s)",
                               comm.size > 1 ? "rank \(comm.rank) " : "", n, secs, Double(n) / max(secs, 1e-9)))
        return (out, metadata, IndexProvenance(modelHash: model.modelHash, tokenizerHash: model.tokenizerHash,
                                               modelDirectory: ModelPath.recorded(self.model, index: self.out), maxTokens: maxTokens, source: corpus), d)
    }
}

extension IndexCommand {
    /// One rank of `--procs N`: embeds this rank's share, writes its segment; rank 0 publishes
    /// once every segment is complete (DistributedIndexWriter).
    func runRank(_ comm: Communicator) throws {
        let start = Date()
        let (embeddings, metadata, provenance, d) = try embedCorpus(comm: comm)
        // A common start line for the whole-job rate: the slowest rank decides.
        let embedSeconds = try comm.allreduceMax(Date().timeIntervalSince(start))
        let total = try comm.allreduceSum(metadata.count)
        if comm.isRoot {
            FileHandle.standardError.write(Data(String(format: "index: embedded %d documents in %.2fs (%.0f docs/s) on %d ranks\n",
                                                       total, embedSeconds, Double(total) / max(embedSeconds, 1e-9), comm.size).utf8))
        }
        if let dump = dumpVectors {
            // Gathered on rank 0 in rank order (one broadcast per rank).
            var all = [Float]()
            for r in 0 ..< comm.size {
                var part = r == comm.rank ? embeddings : [Float](repeating: 0, count: Communicator.share(of: total, rank: r, size: comm.size).count * d)
                try comm.broadcast(&part, root: r)
                if comm.isRoot { all += part }
            }
            if comm.isRoot { try AtomicFile.write(all.withUnsafeBytes { Data($0) }, to: dump) }
        }
        let result = try DistributedIndexWriter.write(comm: comm, directory: out, embeddings: embeddings, dimension: d,
                                                      metadata: metadata, shareStart: comm.share(of: total).lowerBound,
                                                      provenance: provenance, append: append, standardize: standardize,
                                                      lexicalWeight: lexicalWeight == 0 ? nil : lexicalWeight)
        if comm.isRoot {
            let secs = Date().timeIntervalSince(start)
            let perVector = Double(result.vectorBytes) / Double(max(1, total))
            FileHandle.standardError.write(Data(String(
                format: "index: %d documents -> %@ (%@, %d segment(s), %d documents) in %.2fs (%.0f docs/s) on %d ranks; %.1f bytes/vector (%.1f%% of float32), segments %.1f MB\n",
                total, out, result.generation, result.manifest.segments.count, result.manifest.count, secs,
                Double(total) / max(secs, 1e-9), comm.size, perVector, 100 * perVector / Double(4 * d),
                Double(result.segmentBytes) / 1e6).utf8))
        }
    }
}

/// Reads a file of raw little-endian float32 rows.
func readVectors(_ path: String, dimension d: Int) throws -> ([Float], Int) {
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
