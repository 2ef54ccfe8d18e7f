import ArgumentParser
import Foundation
import IdxBase
import IdxParallel
import IdxModel
import IdxTrain

extension ContrastivePairs: ExpressibleByArgument {}
extension TrainPreset: ExpressibleByArgument {}
extension MaskMode: ExpressibleByArgument {}
extension LRScheduleKind: ExpressibleByArgument {}

public struct TrainCommand: ParsableCommand {
    public init() {}
    public static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train the encoder-only transformer with masked-language modelling on an ingested corpus.",
        discussion: """
        Writes models/<name>/: model.safetensors (PyTorch state_dict names, config and tokenizer hash \
        in its metadata), tokenizer.json, optimizer.safetensors, state.json and train-log.csv, \
        replaced atomically every --checkpoint-every steps and at the end. --resume continues a \
        stopped run exactly (same losses, bit for bit at the same thread count).
        """
    )


    @Option(help: "Corpus folder written by `idx ingest`.") var corpus = "corpora/movies"
    @Option(help: "Model folder (default: models/<corpus name>).") var out: String?
    @Option(help: "Total optimizer steps (on --resume: the new total).") var steps: Int?
    @Option(help: "Documents per step.") var batch = 32
    @Option(help: "Tokens per document, [BOS] included; idx index embeds with the same length by default. (default: the preset's)") var maxLen: Int?
    @Option(help: "AdamW peak learning rate.") var lr: Float = 1e-3
    @Option(help: "constant, or linear (warm-up over --warmup-steps, then linear decay to zero at the last MLM step). (default: the preset's)") var lrSchedule: LRScheduleKind?
    @Option(help: "Warm-up steps of --lr-schedule linear.") var warmupSteps = 1000
    @Option(help: "Seed of the init, sampling, masking and dropout.") var seed: UInt64 = 42
    @Option(help: "bert (80% [MASK], 10% random, 10% kept) or mask-only. (default: the preset's)") var maskMode: MaskMode?
    @Option(help: "Share of the words selected for the MLM loss.") var maskProbability = 0.15
    @Option(help: "seed: the reference notebook's recipe exactly (mask-only masking, 5,000 steps, 32 tokens); default: idx's (bert masking, \(TrainPreset.standard.steps) steps, whole documents: --max-len \(TrainPreset.standard.maxLen), the last seventh contrastive). Flags given beside it win.")
    var preset = TrainPreset.standard
    @Option(help: "Compute threads (default: all cores; 1 a rank with --procs > 1).") var threads: Int?
    @Option(help: "Ranks on this machine, started through Open MPI's mpirun (see docs/parallel.md). Under your own mpirun, leave it out.") var procs = 1
    @Flag(help: "Continue the run checkpointed in --out.") var resume = false
    @Flag(help: "Replace an existing --out folder even if it holds files idx did not write (never one holding the corpus).") var force = false
    @Option(help: "Checkpoint every N steps.") var checkpointEvery = 500
    @Option(help: "Write a train-log.csv row every N steps.") var logEvery = 1
    @Option(help: "Model width.") var dModel = 128
    @Option(help: "Attention heads.") var heads = 4
    @Option(help: "Encoder layers.") var layers = 3
    @Option(help: "Feed-forward width.") var dFf = 256
    @Option(help: "Position-embedding table size (longest document the model can read).") var maxPositions = 64
    @Option(help: "Dropout probability.") var dropout: Float = 0.1
    @Option(help: "Contrastive fine-tuning steps at the end of the run (part of --steps; 0: MLM only). (default: the preset's: a seventh of --steps by default, 0 for seed)")
    var contrastiveSteps: Int?
    @Option(help: "Documents per contrastive step (each seen as two views; the others are the negatives).") var contrastiveBatch = ContrastiveOptions().batchSize
    @Option(help: "AdamW learning rate of the contrastive steps.") var contrastiveLr = ContrastiveOptions().lr
    @Option(help: "InfoNCE temperature of the contrastive steps.") var temperature = ContrastiveOptions().temperature
    @Option(help: "The two views of a contrastive pair: halves (the document's two disjoint halves), self (two crops of the same document), bm25 (a crop of it and of one of its 5 nearest documents by BM25), span (2-8 tokens of it and the rest: a typed query's shape), content-span (span, drawn again while fewer than half its tokens are content words), span-neighbours (span, every second document a BM25 look-alike of the one before), mixed (span and halves, half a batch each) or keywords (2-6 of its rarest words and the rest).")
    var contrastivePairs = ContrastiveOptions().pairs
    @Option(help: .hidden) var exportEmbeddings: String?   // checks against PyTorch (scripts/reference/check-model.py)
    @Option(help: .hidden) var exportCount = 8

    var trainingRun: TrainingRun {
        var r = TrainingRun()
        r.corpus = corpus; r.out = out ?? "models/" + URL(fileURLWithPath: corpus).lastPathComponent
        r.steps = steps; r.batch = batch; r.maxLen = maxLen; r.lr = lr; r.lrSchedule = lrSchedule; r.warmupSteps = warmupSteps
        r.seed = seed; r.maskMode = maskMode; r.maskProbability = maskProbability; r.preset = preset; r.threads = threads
        r.resume = resume; r.checkpointEvery = checkpointEvery; r.logEvery = logEvery
        r.config = ModelConfig(vocabSize: 0, dModel: dModel, nHeads: heads, nLayers: layers, dFF: dFf, maxLen: maxPositions, dropout: dropout)
        r.contrastiveSteps = contrastiveSteps
        r.contrastive.batchSize = contrastiveBatch; r.contrastive.lr = contrastiveLr; r.contrastive.temperature = temperature
        r.contrastive.pairs = contrastivePairs
        return r
    }

    public func run() throws {
        // MPI hook (docs/parallel.md): --procs N re-runs this command as N ranks under mpirun;
        // a rank (started by any MPI launcher) joins the job; errors in a rank end every rank.
        ChildProcess.dieWithParentIfAsked()  // started by idx nightly: end with it
        var comm = Communicator.single()
        let run = trainingRun
        try reportingErrors {
            try OutputPath.checkFolder(run.out, kind: .model, inputs: [corpus], force: force)
            if let path = exportEmbeddings {
                ComputeSetup.configure(threads: threads ?? Cores.available)
                return try run.exportEmbeddings(to: path, count: exportCount)
            }
            // One writer per model folder: the launcher (or the single process) holds the lock.
            let lock = MPIEnvironment().isLaunchedByMPI ? nil : try OutputLock.acquire(run.out, command: "idx train")
            defer { lock?.release() }
            if procs > 1 && !MPIEnvironment().isLaunchedByMPI {
                let status = try MPILauncher.run(procs: procs, arguments: Array(CommandLine.arguments.dropFirst()),
                                                 failureNote: "Checkpoints are replaced only when complete: `--resume` continues from the last one.")
                throw ExitCode(status)
            }
            comm = try Communicator.start()
            do { try run.run(comm) } catch let e as IdxError {
                if comm.size > 1 { comm.abort("error: " + e.message) }
                throw e
            }
            comm.finalize()
        }
    }
}
