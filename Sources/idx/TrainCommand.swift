import ArgumentParser
import Foundation
import IdxCore

extension ContrastivePairs: ExpressibleByArgument {}

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
    @Option(help: "constant, or linear (warm-up over --warmup-steps, then linear decay to zero at the last MLM step). (default: the preset's)") var lrSchedule: String?
    @Option(help: "Warm-up steps of --lr-schedule linear.") var warmupSteps = 1000
    @Option(help: "Seed of the init, sampling, masking and dropout.") var seed: UInt64 = 42
    @Option(help: "bert (80% [MASK], 10% random, 10% kept) or mask-only. (default: the preset's)") var maskMode: String?
    @Option(help: "Share of the words selected for the MLM loss.") var maskProbability = 0.15
    @Option(help: "seed: the reference notebook's recipe exactly (mask-only masking, 5,000 steps, 32 tokens); default: idx's (bert masking, \(TrainPreset.standard.steps) steps, whole documents: --max-len \(TrainPreset.standard.maxLen), the last seventh contrastive). Flags given beside it win.")
    var preset = "default"
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
    @Option(help: "The two views of a contrastive pair: halves (the document's two disjoint halves), self (two crops of the same document), bm25 (a crop of it and of one of its 5 nearest documents by BM25), span (2-8 tokens of it and the rest: a typed query's shape) mixed (span and halves, half a batch each) or keywords (2-6 of its rarest words and the rest).")
    var contrastivePairs = ContrastiveOptions().pairs
    @Option(help: .hidden) var exportEmbeddings: String?   // checks against PyTorch (scripts/reference/check-model.py)
    @Option(help: .hidden) var exportCount = 8

    public func run() throws {
        // MPI hook (docs/parallel.md): --procs N re-runs this command as N ranks under mpirun;
        // a rank (started by any MPI launcher) joins the job; errors in a rank end every rank.
        ChildProcess.dieWithParentIfAsked()  // started by idx nightly: end with it
        var comm = Communicator.single()
        do {
            let outDir = out ?? "models/" + URL(fileURLWithPath: corpus).lastPathComponent
            try OutputPath.checkFolder(outDir, kind: .model, inputs: [corpus], force: force)
            // One writer per model folder: the launcher (or the single process) holds the lock.
            let lock = MPIEnvironment().isLaunchedByMPI || exportEmbeddings != nil ? nil : try OutputLock.acquire(outDir, command: "idx train")
            defer { lock?.release() }
            if procs > 1 && !MPIEnvironment().isLaunchedByMPI {
                let status = try MPILauncher.run(procs: procs, arguments: Array(CommandLine.arguments.dropFirst()),
                                                 failureNote: "Checkpoints are replaced only when complete: `--resume` continues from the last one.")
                throw ExitCode(status)
            }
            comm = try Communicator.start()
            try train(comm)
            comm.finalize()
        } catch let e as IdxError {
            if comm.size > 1 { comm.abort("error: " + e.message) }
            FileHandle.standardError.write(Data(("error: " + e.message + "\n").utf8))
            throw ExitCode.failure
        }
    }

    func train(_ comm: Communicator) throws {
        let say: (String) -> Void = { if comm.isRoot { FileHandle.standardError.write(Data($0.utf8)) } }
        guard let recipe = TrainPreset.named(preset) else {
            throw IdxError("--preset \(preset): use seed (the reference notebook's recipe) or default.")
        }
        let modeName = maskMode ?? recipe.maskMode.rawValue
        guard let mode = MaskMode(rawValue: modeName) else {
            throw IdxError("--mask-mode \(modeName): use bert or mask-only.")
        }
        guard checkpointEvery > 0, logEvery > 0 else { throw IdxError("--checkpoint-every and --log-every must be positive.") }
        let nThreads = threads ?? (comm.size > 1 ? 1 : ProcessInfo.processInfo.activeProcessorCount)
        ComputeSetup.configure(threads: nThreads)
        let outDir = out ?? "models/" + URL(fileURLWithPath: corpus).lastPathComponent
        if let path = exportEmbeddings { return try export(model: outDir, to: path) }
        if comm.isRoot { AtomicFile.removeStaleStaging(of: outDir) }  // left by killed checkpoints
        let reader = try CorpusReader(directory: corpus)
        let tokenizer = try reader.tokenizer()
        let tokens = try reader.readTokens()

        let trainer: Trainer
        var log: String
        var elapsedBefore = 0.0
        if resume {
            (trainer, log, elapsedBefore) = try Trainer.resume(directory: outDir, corpus: tokens, tokenizerHash: reader.tokenizerHash,
                                                               corpusPath: corpus)
            if let steps {
                trainer.options.steps = steps
                // The last k steps of the new total stay contrastive; a shorter total than k makes them all so.
                if let k = trainer.options.contrastive?.steps, k > steps { trainer.options.contrastive!.steps = steps }
            }
            if let k = contrastiveSteps {
                // Fine-tune a trained model: the last k steps of the new total are contrastive.
                var c = trainer.options.contrastive ?? ContrastiveOptions()
                c.steps = k; c.batchSize = contrastiveBatch; c.lr = contrastiveLr; c.temperature = temperature
                c.pairs = contrastivePairs
                trainer.options.contrastive = k > 0 ? c : nil
            }
            trainer.options.checkpointEvery = checkpointEvery
            trainer.options.logEvery = logEvery
            // keep the rows up to the checkpoint: a killed run may have logged past it
            log = log.split(separator: "\n", omittingEmptySubsequences: true).enumerated()
                .filter { $0.offset == 0 || (Int($0.element.prefix { $0 != "," }) ?? .max) <= trainer.step }
                .map { $0.element + "\n" }.joined()
            say(("train: resuming \(outDir) at step \(trainer.step) of \(trainer.options.steps)\n"))
        } else {
            if FileManager.default.fileExists(atPath: outDir + "/state.json") || FileManager.default.fileExists(atPath: outDir + "/model.safetensors") {
                throw IdxError("\(outDir): already holds a model; pass --resume to continue it, or choose another --out.")
            }
            var o = TrainOptions()
            o.steps = steps ?? recipe.steps; o.batchSize = batch; o.maxLen = maxLen ?? recipe.maxLen; o.lr = lr; o.seed = seed; o.maskMode = mode
            o.checkpointEvery = checkpointEvery; o.logEvery = logEvery
            guard maskProbability > 0, maskProbability < 1 else { throw IdxError("--mask-probability \(maskProbability): give a share between 0 and 1, such as 0.15.") }
            o.maskProbability = maskProbability
            switch lrSchedule ?? recipe.lrSchedule {
            case "constant": o.schedule = nil
            case "linear": o.schedule = LRSchedule(warmupSteps: warmupSteps)
            case let other: throw IdxError("--lr-schedule \(other): use constant or linear.")
            }
            let k = contrastiveSteps ?? recipe.contrastiveSteps(of: o.steps)
            if k > 0 {
                var c = ContrastiveOptions()
                c.steps = k; c.batchSize = contrastiveBatch; c.lr = contrastiveLr; c.temperature = temperature
                c.pairs = contrastivePairs
                o.contrastive = c
            }
            let cfg = ModelConfig(vocabSize: tokenizer.vocabSize, dModel: dModel, nHeads: heads, nLayers: layers, dFF: dFf,
                                  maxLen: maxPositions, dropout: dropout)
            trainer = try Trainer(config: cfg, options: o, corpus: tokens, tokenizerHash: reader.tokenizerHash)
            log = TrainLog.header
            say("train: \(tokens.count) documents, \(trainer.parameterCount) parameters, \(o.steps) steps of \(o.batchSize), \(nThreads) threads\(comm.size > 1 ? " × \(comm.size) ranks" : "")\n")
        }
        trainer.corpusTitlesInText = reader.titlesInText
        if let c = trainer.options.contrastive, c.steps > 0 {
            if c.pairs == .bm25 {
                let t0 = DispatchTime.now().uptimeNanoseconds
                trainer.lexicalNeighbours = try LexicalNeighbours.compute(descriptions: try reader.readMetadata().map(\.description),
                                                                          count: c.neighbours, threads: nThreads)
                say(String(format: "train: BM25 neighbours of %d documents in %.1f s\n", tokens.count,
                           Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9))
            }
        }
        try trainer.broadcastParameters(comm)
        if comm.size > 1 {
            say("train: ranks exchange gradients and weights \(trainer.sharesMemory ? "in shared memory (one host)" : "by message passing")\n")
        }
        let total = trainer.options.steps
        let progress = Progress("train", unit: "steps", total: Double(total - trainer.step))
        let start = trainer.step
        var lastLosses = [Double](), tokensSeen = 0
        let clock = DispatchTime.now().uptimeNanoseconds
        var stepStart = clock
        let tokJSON = Data(tokenizer.json)
        while trainer.step < total {
            let (loss, tok) = trainer.isContrastive(step: trainer.step + 1)
                ? try trainer.contrastiveStep(communicator: comm) : try trainer.trainStep(communicator: comm)
            let now = DispatchTime.now().uptimeNanoseconds
            let stepSeconds = Double(now - stepStart) / 1e9
            stepStart = now
            tokensSeen += tok
            let elapsed = elapsedBefore + Double(now - clock) / 1e9
            lastLosses.append(loss); if lastLosses.count > 100 { lastLosses.removeFirst() }
            if trainer.step % logEvery == 0 {
                let lr = trainer.isContrastive(step: trainer.step) ? trainer.options.contrastive!.lr
                    : trainer.options.learningRate(step: trainer.step)
                log += TrainLog.line(step: trainer.step, loss: loss, lr: lr,
                                     tokensPerSecond: Double(tok) / max(stepSeconds, 1e-9), elapsed: elapsed)
            }
            let rate = Double(tokensSeen) / max(Double(now - clock) / 1e9, 1e-9)
            if comm.isRoot { progress.update(Double(trainer.step - start), extra: String(format: "step %d, loss %.4f, %@ tok/s", trainer.step, loss, Progress.compact(rate))) }
            if comm.isRoot && (trainer.step % checkpointEvery == 0 || trainer.step == total) {
                try trainer.writeCheckpoint(directory: outDir, tokenizerJSON: tokJSON, corpusPath: corpus, log: log, elapsed: elapsed)
                if idx_isatty_stderr() == false {
                    FileHandle.standardError.write(Data(String(format: "train: step %d/%d, loss %.4f (mean of last %d %.4f), %@ tokens/s, checkpoint written\n",
                                                               trainer.step, total, loss, lastLosses.count, lastLosses.reduce(0, +) / Double(lastLosses.count),
                                                               Progress.compact(rate)).utf8))
                }
            }
        }
        let secs = Double(DispatchTime.now().uptimeNanoseconds - clock) / 1e9
        let mean = lastLosses.isEmpty ? 0 : lastLosses.reduce(0, +) / Double(lastLosses.count)
        guard comm.isRoot else { return }
        progress.finish(String(format: "train: %d steps in %.1f s (%.1f ms/step, %@ tokens/s), loss %.4f (mean of the last %d steps) -> %@",
                               trainer.step - start, secs, 1000 * secs / Double(max(1, trainer.step - start)),
                               Progress.compact(Double(tokensSeen) / max(secs, 1e-9)), mean, lastLosses.count, outDir))
    }
}

extension TrainCommand {
    /// Writes the mean-pooled embeddings of the corpus's first documents (and their ids) as
    /// safetensors, for scripts/reference/check-model.py to compare with the PyTorch class.
    func export(model dir: String, to path: String) throws {
        let model = try EncoderModel.load(directory: dir)
        let tokens = try CorpusReader(directory: corpus).readTokens()
        try model.checkVocabulary(tokens, source: corpus)
        let n = min(exportCount, tokens.count)
        var st = SafeTensors()
        st.add("embeddings", shape: [n, model.config.dModel], data: model.embed(tokens, range: 0 ..< n, maxTokens: maxLen ?? model.trainedMaxTokens, batchSize: n))
        for d in 0 ..< n { st.add("document.\(d)", shape: [tokens.document(d).count], data: tokens.document(d).map { Float($0) }) }
        st.metadata = ["max_tokens": "\(maxLen ?? model.trainedMaxTokens)", "model_hash": model.modelHash]
        try AtomicFile.write(st.serialized(), to: path)
        FileHandle.standardError.write(Data("train: wrote \(n) embeddings of \(dir) to \(path)\n".utf8))
    }
}

private func idx_isatty_stderr() -> Bool { isatty(2) == 1 }

/// What `--preset` sets when the flags are not given.
struct TrainPreset {
    var steps: Int
    var maskMode: MaskMode
    /// The share of the steps that are contrastive (the last ones), when --contrastive-steps is not given.
    var contrastiveShare: Double
    var lrSchedule = "constant"
    /// Tokens per document, [BOS] included.
    var maxLen = 32
    func contrastiveSteps(of total: Int) -> Int { Int((Double(total) * contrastiveShare).rounded()) }
    /// The reference notebook: [MASK] at every selected position, 5,000 steps, MLM only.
    static let seed = TrainPreset(steps: 5000, maskMode: .maskOnly, contrastiveShare: 0)
    /// idx's default (scripts/bench-quality measures the choices): ingest's 8,000 words, whole
    /// documents (56% of IMDb synopses are longer than 32 tokens), MLM, then 6,000 contrastive
    /// steps of inverse cloze (ContrastivePairs.span: a typed query's shape; more of them did not
    /// help), within 30 minutes on 2 cores with room for a loaded machine.
    static let standard = TrainPreset(steps: 42000, maskMode: .bert, contrastiveShare: 1.0 / 7, maxLen: 64)
    static func named(_ name: String) -> TrainPreset? {
        switch name {
        case "seed": return seed
        case "default": return standard
        default: return nil
        }
    }
}
