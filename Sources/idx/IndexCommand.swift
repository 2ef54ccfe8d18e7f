import ArgumentParser
import Foundation
import IdxBase
import IdxParallel
import IdxStore
import IdxSearch

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

    @Option(help: "Model folder (model.safetensors + tokenizer.json).") var model: String = "models/movies"
    @Option(help: "Corpus folder written by idx ingest.") var corpus: String = "corpora/movies"
    @Option(help: "Index folder.") var out: String = "indexes/movies"
    @Flag(help: "Add the corpus as a new segment, leaving the current ones untouched.") var append = false
    @Option(help: "Ranks on this machine, started through Open MPI's mpirun: each embeds its share of the corpus and writes its own segment; rank 0 publishes. Under your own mpirun, leave it out.")
    var procs: Int = 1
    @Flag(help: "Z-score each dimension with corpus statistics before normalising (stored with the index, applied to queries).")
    var standardize = false
    @Option(help: "Tokens per document fed to the model, [BOS]/[EOS] included (default: the length the model was trained on, its --max-len).")
    var maxTokens: Int?
    @Option(help: "Inference threads (0: all cores).") var threads: Int = 0
    @Option(help: "Documents per inference batch.") var batchSize: Int = 32
    @Option(help: "BM25 share of the hybrid score that idx search and idx eval use by default; 0 writes no lexical half (cosine only).")
    var lexicalWeight: Float = HybridScoring.defaultLexicalWeight
    @Option(help: ArgumentHelp("Developer: index raw float32 rows from this file instead of a corpus.", visibility: .hidden)) var fromVectors: String?
    @Option(help: ArgumentHelp("Developer: dimension of --from-vectors rows.", visibility: .hidden)) var dimension: Int = 128
    @Option(help: ArgumentHelp("Developer: also write the embeddings (raw float32 rows) to this file.", visibility: .hidden)) var dumpVectors: String?
    @Option(help: ArgumentHelp("Developer: write the model's input ([BOS] ids [EOS], cut to --max-tokens, [PAD]-filled) as int32 rows of --max-tokens.", visibility: .hidden))
    var dumpTokens: String?
    @Flag(help: "Write into an existing --out folder even if it holds files idx did not write (never one holding the corpus or the model).")
    var force = false

    var options: IndexBuild.Options {
        var o = IndexBuild.Options()
        o.model = model; o.corpus = corpus; o.out = out; o.append = append; o.standardize = standardize
        o.maxTokens = maxTokens; o.threads = threads; o.batchSize = batchSize; o.lexicalWeight = lexicalWeight
        o.fromVectors = fromVectors; o.dimension = dimension; o.dumpVectors = dumpVectors; o.dumpTokens = dumpTokens
        return o
    }

    public func run() throws {
        try reportingErrors {
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
            let underMPI = MPIEnvironment().isLaunchedByMPI
            let lock = underMPI ? nil : try OutputLock.acquire(out, command: "idx index")
            defer { lock?.release() }
            // --procs N re-runs this command as N ranks under mpirun (as idx train does).
            if procs > 1 && !underMPI {
                guard fromVectors == nil else { throw IdxError("--procs \(procs) works on a corpus; --from-vectors runs in one process.") }
                let status = try MPILauncher.run(procs: procs, arguments: Array(CommandLine.arguments.dropFirst()),
                                                 failureNote: "Nothing was published; the previous generation of \(out) (if any) still serves.")
                if status != 0 { throw ExitCode(status) }
                return
            }
            if underMPI {
                let comm = try Communicator.start()
                defer { comm.finalize() }
                if comm.size > 1 {
                    // A rank's error ends the whole job (no rank left waiting in a collective);
                    // nothing is published unless every rank completed its segment.
                    do {
                        if let summary = try IndexBuild.runRank(options, comm: comm) { printStatus(summary.line(out: out)) }
                    } catch let e as IdxError { comm.abort("error: " + e.message) }
                    return
                }
            }
            printStatus(try IndexBuild.run(options).line(out: out))
        }
    }
}
