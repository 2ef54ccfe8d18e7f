import Foundation
import IdxBase
import IdxParallel
import IdxCorpus
import IdxModel

/// What `--preset` sets when the flags are not given.
public enum TrainPreset: String, CaseIterable, Sendable {
    /// The reference notebook: [MASK] at every selected position, 5,000 steps, MLM only.
    case seed
    /// idx's default (scripts/bench-quality measures the choices): ingest's 8,000 words, whole
    /// documents (56% of IMDb synopses are longer than 32 tokens), MLM, then 6,000 contrastive
    /// steps of inverse cloze (ContrastivePairs.span: a typed query's shape; more of them did not
    /// help), within 30 minutes on 2 cores with room for a loaded machine.
    case standard = "default"

    public var steps: Int { self == .seed ? 5000 : 42000 }
    public var maskMode: MaskMode { self == .seed ? .maskOnly : .bert }
    /// The share of the steps that are contrastive (the last ones), when --contrastive-steps is not given.
    public var contrastiveShare: Double { self == .seed ? 0 : 1.0 / 7 }
    public var lrSchedule: LRScheduleKind { .constant }
    /// Tokens per document, [BOS] included.
    public var maxLen: Int { self == .seed ? 32 : 64 }
    public func contrastiveSteps(of total: Int) -> Int { Int((Double(total) * contrastiveShare).rounded()) }
}

/// `--lr-schedule`: the learning rate over the MLM steps.
public enum LRScheduleKind: String, CaseIterable, Sendable {
    /// The peak rate throughout.
    case constant
    /// Warm-up over --warmup-steps, then linear decay to zero at the last MLM step.
    case linear
}

/// `idx train` without its command line: a new run (from a preset and the flags given beside
/// it) or a resumed one, its MLM then contrastive steps, checkpoints and log.
public struct TrainingRun {
    public var corpus = "corpora/movies"
    public var out = "models/movies"
    /// Total optimizer steps (on resume: the new total); nil: the preset's.
    public var steps: Int?
    public var batch = 32
    public var maxLen: Int?
    public var lr: Float = 1e-3
    public var lrSchedule: LRScheduleKind?
    public var warmupSteps = 1000
    public var seed: UInt64 = 42
    public var maskMode: MaskMode?
    public var maskProbability = 0.15
    public var preset = TrainPreset.standard
    /// Compute threads; nil: all cores (1 a rank of a multi-rank run).
    public var threads: Int?
    public var resume = false
    public var checkpointEvery = 500
    public var logEvery = 1
    public var config = ModelConfig(vocabSize: 0, dModel: 128, nHeads: 4, nLayers: 3, dFF: 256, maxLen: 64, dropout: 0.1)
    /// Contrastive steps at the end (part of `steps`); nil: the preset's share.
    public var contrastiveSteps: Int?
    public var contrastive = ContrastiveOptions()

    public init() {}

    /// Trains on `comm`'s ranks (rank 0 writes the checkpoints and prints).
    public func run(_ comm: Communicator) throws {
        let say: (String) -> Void = { if comm.isRoot { FileHandle.standardError.write(Data($0.utf8)) } }
        guard checkpointEvery > 0, logEvery > 0 else { throw IdxError("--checkpoint-every and --log-every must be positive.") }
        let nThreads = threads ?? (comm.size > 1 ? 1 : Cores.available)
        ComputeSetup.configure(threads: nThreads)
        if comm.isRoot { AtomicFile.removeStaleStaging(of: out) }  // left by killed checkpoints
        let reader = try CorpusReader(directory: corpus)
        let tokenizer = try reader.tokenizer()
        let tokens = try reader.readTokens()

        let (trainer, startLog, elapsedBefore) = try resume ? resumed(reader, tokens, say: say) : started(reader, tokenizer, tokens, threads: nThreads, comm: comm, say: say)
        var log = startLog
        trainer.corpusTitlesInText = reader.titlesInText
        if let c = trainer.options.contrastive, c.steps > 0, c.pairs == .bm25 || c.pairs == .spanNeighbours {
            let t0 = DispatchTime.now().uptimeNanoseconds
            trainer.lexicalNeighbours = try LexicalNeighbours.compute(descriptions: try reader.readMetadata().map(\.description),
                                                                      count: c.neighbours, threads: nThreads)
            say(String(format: "train: BM25 neighbours of %d documents in %.1f s\n", tokens.count,
                       Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9))
        }
        let exchange = try DataParallelExchange(trainer, communicator: comm)
        if comm.size > 1 {
            say("train: ranks exchange gradients and weights \(exchange.sharesMemory ? "in shared memory (one host)" : "by message passing")\n")
        }
        let total = trainer.options.steps
        let progress = Progress("train", unit: "steps", total: Double(total - trainer.step))
        let start = trainer.step
        var lastLosses = [Double](), tokensSeen = 0
        let clock = DispatchTime.now().uptimeNanoseconds
        var stepStart = clock
        let tokJSON = Data(tokenizer.json)
        while trainer.step < total {
            let (loss, tok) = try exchange.step()
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
                try trainer.writeCheckpoint(directory: out, tokenizerJSON: tokJSON, corpusPath: corpus, log: log, elapsed: elapsed)
                if isatty(2) != 1 {
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
                               Progress.compact(Double(tokensSeen) / max(secs, 1e-9)), mean, lastLosses.count, out))
    }

    /// The contrastive phase the flags ask for, `k` steps.
    func contrastivePhase(_ k: Int) -> ContrastiveOptions? {
        guard k > 0 else { return nil }
        var c = contrastive
        c.steps = k
        return c
    }

    /// Continues the run checkpointed in `out`: a new total and contrastive phase if given;
    /// the log is kept up to the checkpoint (a killed run may have logged past it).
    func resumed(_ reader: CorpusReader, _ tokens: TokenizedCorpus, say: (String) -> Void) throws -> (Trainer, String, Double) {
        let (trainer, log, elapsedBefore) = try Trainer.resume(directory: out, corpus: tokens, tokenizerHash: reader.tokenizerHash,
                                                               corpusPath: corpus)
        if let steps {
            trainer.options.steps = steps
            // The last k steps of the new total stay contrastive; a shorter total than k makes them all so.
            if let k = trainer.options.contrastive?.steps, k > steps { trainer.options.contrastive!.steps = steps }
        }
        if let k = contrastiveSteps {
            // Fine-tune a trained model: the last k steps of the new total are contrastive.
            var c = trainer.options.contrastive ?? ContrastiveOptions()
            c.steps = k; c.batchSize = contrastive.batchSize; c.lr = contrastive.lr; c.temperature = contrastive.temperature
            c.pairs = contrastive.pairs
            // The new phase's options, checked as a new run's are.
            try c.validate(totalSteps: trainer.options.steps)
            trainer.options.contrastive = k > 0 ? c : nil
        }
        trainer.options.checkpointEvery = checkpointEvery
        trainer.options.logEvery = logEvery
        let kept = log.split(separator: "\n", omittingEmptySubsequences: true).enumerated()
            .filter { $0.offset == 0 || (Int($0.element.prefix { $0 != "," }) ?? .max) <= trainer.step }
            .map { $0.element + "\n" }.joined()
        say("train: resuming \(out) at step \(trainer.step) of \(trainer.options.steps)\n")
        return (trainer, kept, elapsedBefore)
    }

    /// A new run: the preset, then the flags given beside it.
    func started(_ reader: CorpusReader, _ tokenizer: WordLevelTokenizer, _ tokens: TokenizedCorpus, threads nThreads: Int, comm: Communicator,
                 say: (String) -> Void) throws -> (Trainer, String, Double) {
        if FileManager.default.fileExists(atPath: out + "/state.json") || FileManager.default.fileExists(atPath: out + "/model.safetensors") {
            throw IdxError("\(out): already holds a model; pass --resume to continue it, or choose another --out.")
        }
        var o = TrainOptions()
        o.steps = steps ?? preset.steps; o.batchSize = batch; o.maxLen = maxLen ?? preset.maxLen; o.lr = lr; o.seed = seed
        o.maskMode = maskMode ?? preset.maskMode
        o.checkpointEvery = checkpointEvery; o.logEvery = logEvery
        guard maskProbability > 0, maskProbability < 1 else { throw IdxError("--mask-probability \(maskProbability): give a share between 0 and 1, such as 0.15.") }
        o.maskProbability = maskProbability
        switch lrSchedule ?? preset.lrSchedule {
        case .constant: o.schedule = nil
        case .linear: o.schedule = LRSchedule(warmupSteps: warmupSteps)
        }
        o.contrastive = contrastivePhase(contrastiveSteps ?? preset.contrastiveSteps(of: o.steps))
        var cfg = config
        cfg.vocabSize = tokenizer.vocabSize
        let trainer = try Trainer(config: cfg, options: o, corpus: tokens, tokenizerHash: reader.tokenizerHash)
        say("train: \(tokens.count) documents, \(trainer.parameterCount) parameters, \(o.steps) steps of \(o.batchSize), \(nThreads) threads\(comm.size > 1 ? " × \(comm.size) ranks" : ""), OpenBLAS \(BLASRuntime.coreName) kernels\n")
        return (trainer, TrainLog.header, 0)
    }

    /// Writes the mean-pooled embeddings of the corpus's first `count` documents (and their ids)
    /// as safetensors, for scripts/reference/check-model.py to compare with the PyTorch class.
    public func exportEmbeddings(to path: String, count: Int) throws {
        let model = try EncoderModel.load(directory: out)
        let tokens = try CorpusReader(directory: corpus).readTokens()
        try model.checkVocabulary(tokens, source: corpus)
        let n = min(count, tokens.count)
        var st = SafeTensors()
        st.add("embeddings", shape: [n, model.config.dModel], data: model.embed(tokens, range: 0 ..< n, maxTokens: maxLen ?? model.trainedMaxTokens, batchSize: n))
        for d in 0 ..< n { st.add("document.\(d)", shape: [tokens.document(d).count], data: tokens.document(d).map { Float($0) }) }
        st.metadata = ["max_tokens": "\(maxLen ?? model.trainedMaxTokens)", "model_hash": model.modelHash]
        try AtomicFile.write(st.serialized(), to: path)
        FileHandle.standardError.write(Data("train: wrote \(n) embeddings of \(out) to \(path)\n".utf8))
    }
}
