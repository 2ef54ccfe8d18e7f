import ArgumentParser
import Foundation
import IdxCore

struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
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
    @Option(help: "Tokens per document, [BOS] included.") var maxLen = 32
    @Option(help: "AdamW learning rate (constant).") var lr: Float = 1e-3
    @Option(help: "Seed of the init, sampling, masking and dropout.") var seed: UInt64 = 42
    @Option(help: "bert (80% [MASK], 10% random, 10% kept) or mask-only.") var maskMode = "bert"
    @Option(help: "Compute threads (default: all cores).") var threads: Int?
    @Flag(help: "Continue the run checkpointed in --out.") var resume = false
    @Option(help: "Checkpoint every N steps.") var checkpointEvery = 500
    @Option(help: "Write a train-log.csv row every N steps.") var logEvery = 1
    @Option(help: "Model width.") var dModel = 128
    @Option(help: "Attention heads.") var heads = 4
    @Option(help: "Encoder layers.") var layers = 3
    @Option(help: "Feed-forward width.") var dFf = 256
    @Option(help: "Position-embedding table size (longest document the model can read).") var maxPositions = 64
    @Option(help: "Dropout probability.") var dropout: Float = 0.1

    func run() throws {
        do { try train() } catch let e as IdxError {
            FileHandle.standardError.write(Data(("error: " + e.message + "\n").utf8))
            throw ExitCode.failure
        }
    }

    func train() throws {
        guard let mode = MaskMode(rawValue: maskMode) else {
            throw IdxError("--mask-mode \(maskMode): use bert or mask-only.")
        }
        guard checkpointEvery > 0, logEvery > 0 else { throw IdxError("--checkpoint-every and --log-every must be positive.") }
        let nThreads = threads ?? ProcessInfo.processInfo.activeProcessorCount
        ComputeSetup.configure(threads: nThreads)
        let outDir = out ?? "models/" + URL(fileURLWithPath: corpus).lastPathComponent
        let reader = try CorpusReader(directory: corpus)
        let tokenizer = try reader.tokenizer()
        let tokens = try reader.readTokens()

        let trainer: Trainer
        var log: String
        var elapsedBefore = 0.0
        if resume {
            (trainer, log, elapsedBefore) = try Trainer.resume(directory: outDir, corpus: tokens, tokenizerHash: reader.tokenizerHash,
                                                               corpusPath: corpus)
            if let steps { trainer.options.steps = steps }
            trainer.options.checkpointEvery = checkpointEvery
            trainer.options.logEvery = logEvery
            // keep the rows up to the checkpoint: a killed run may have logged past it
            log = log.split(separator: "\n", omittingEmptySubsequences: true).enumerated()
                .filter { $0.offset == 0 || (Int($0.element.prefix { $0 != "," }) ?? .max) <= trainer.step }
                .map { $0.element + "\n" }.joined()
            FileHandle.standardError.write(Data("train: resuming \(outDir) at step \(trainer.step) of \(trainer.options.steps)\n".utf8))
        } else {
            if FileManager.default.fileExists(atPath: outDir + "/state.json") || FileManager.default.fileExists(atPath: outDir + "/model.safetensors") {
                throw IdxError("\(outDir): already holds a model; pass --resume to continue it, or choose another --out.")
            }
            var o = TrainOptions()
            o.steps = steps ?? 5000; o.batchSize = batch; o.maxLen = maxLen; o.lr = lr; o.seed = seed; o.maskMode = mode
            o.checkpointEvery = checkpointEvery; o.logEvery = logEvery
            let cfg = ModelConfig(vocabSize: tokenizer.vocabSize, dModel: dModel, nHeads: heads, nLayers: layers, dFF: dFf,
                                  maxLen: maxPositions, dropout: dropout)
            trainer = try Trainer(config: cfg, options: o, corpus: tokens, tokenizerHash: reader.tokenizerHash)
            log = TrainLog.header
            FileHandle.standardError.write(Data("train: \(tokens.count) documents, \(trainer.parameterCount) parameters, \(o.steps) steps of \(o.batchSize), \(nThreads) threads\n".utf8))
        }
        let total = trainer.options.steps
        let progress = Progress("train", unit: "steps", total: Double(total - trainer.step))
        let start = trainer.step
        var lastLosses = [Double](), tokensSeen = 0
        let clock = DispatchTime.now().uptimeNanoseconds
        var stepStart = clock
        let tokJSON = Data(tokenizer.json)
        while trainer.step < total {
            let (loss, tok) = try trainer.trainStep()
            let now = DispatchTime.now().uptimeNanoseconds
            let stepSeconds = Double(now - stepStart) / 1e9
            stepStart = now
            tokensSeen += tok
            let elapsed = elapsedBefore + Double(now - clock) / 1e9
            lastLosses.append(loss); if lastLosses.count > 100 { lastLosses.removeFirst() }
            if trainer.step % logEvery == 0 {
                log += TrainLog.line(step: trainer.step, loss: loss, lr: trainer.options.lr,
                                     tokensPerSecond: Double(tok) / max(stepSeconds, 1e-9), elapsed: elapsed)
            }
            let rate = Double(tokensSeen) / max(Double(now - clock) / 1e9, 1e-9)
            progress.update(Double(trainer.step - start), extra: String(format: "step %d, loss %.4f, %@ tok/s", trainer.step, loss, Progress.compact(rate)))
            if trainer.step % checkpointEvery == 0 || trainer.step == total {
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
        progress.finish(String(format: "train: %d steps in %.1f s (%.1f ms/step, %@ tokens/s), loss %.4f (mean of the last %d steps) -> %@",
                               trainer.step - start, secs, 1000 * secs / Double(max(1, trainer.step - start)),
                               Progress.compact(Double(tokensSeen) / max(secs, 1e-9)), mean, lastLosses.count, outDir))
    }
}

private func idx_isatty_stderr() -> Bool { isatty(2) == 1 }
