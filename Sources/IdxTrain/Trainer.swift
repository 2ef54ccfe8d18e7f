import CSupport
import COpenBLAS
import Foundation
import IdxBase
import IdxCorpus
import IdxModel

public enum MaskMode: String, Codable, Sendable {
    case bert            // 80% [MASK], 10% random token, 10% unchanged
    case maskOnly = "mask-only"  // every selected position becomes [MASK] (the original notebook)
}

public struct TrainOptions: Codable, Equatable, Sendable {
    public var steps = 5000
    public var batchSize = 32
    public var maxLen = 32             // tokens per document, [BOS] included
    public var lr: Float = 1e-3
    public var seed: UInt64 = 42
    public var maskMode: MaskMode = .bert
    public var maskProbability = 0.15
    public var maxGradNorm: Float = 1.0
    public var weightDecay: Float = 0.01
    public var checkpointEvery = 500
    public var logEvery = 1
    /// Contrastive fine-tuning as the last steps of the run (Contrastive.swift); nil: MLM only.
    public var contrastive: ContrastiveOptions? = nil
    /// Learning-rate schedule of the MLM steps; nil (and checkpoints older than it): constant `lr`.
    public var schedule: LRSchedule? = nil
    public init() {}

    /// The MLM learning rate of step `step` (1-based).
    public func learningRate(step: Int) -> Float {
        guard let schedule else { return lr }
        return schedule.factor(step: step, mlmSteps: steps - (contrastive?.steps ?? 0)) * lr
    }
}

/// Linear warm-up over `warmupSteps`, then linear decay to zero at the last MLM step (BERT's
/// schedule): a constant rate leaves the weights jumping around a minimum they could settle into.
public struct LRSchedule: Codable, Equatable, Sendable {
    public var warmupSteps: Int
    public init(warmupSteps: Int) { self.warmupSteps = warmupSteps }

    /// Of the peak rate at step `step` (1-based) of `mlmSteps`: step/warmup while warming up,
    /// then (mlmSteps − step + 1)/(mlmSteps − warmup), so the last step still moves.
    public func factor(step: Int, mlmSteps: Int) -> Float {
        let w = min(max(0, warmupSteps), mlmSteps)
        if step <= w { return Float(step) / Float(max(1, w)) }
        let left = max(0, mlmSteps - step + 1)
        return Float(left) / Float(max(1, mlmSteps - w))
    }
}

/// MLM training of the encoder. Every random choice of a step (which documents, which
/// positions are masked and how, dropout) is a pure function of (seed, step, slot), where a
/// slot is a document's place in the global batch: a resumed run, or the same global batch
/// split over any number of ranks, sees exactly the same data.
///
/// One step: `computeGradients` (zeroes, then accumulates the gradient of Σ loss / globalSelectedCount
/// over the given slots), [an Allreduce-sum of `gradients` across ranks goes here], `applyUpdate`.
public final class Trainer {
    public let config: ModelConfig
    public var options: TrainOptions
    public let corpus: TokenizedCorpus
    public let tokenizerHash: String
    /// Completed steps (the next step is `step + 1`).
    public private(set) var step = 0
    let net: EncoderNetwork
    /// Data parallelism inside the process: worker w runs its share of the slots on its own
    /// thread (single-threaded BLAS), then the gradients are summed into net's. net is worker 0.
    let workers: [EncoderNetwork]
    let m: FloatBuffer, v: FloatBuffer
    /// Each document's nearest documents by BM25, for contrastive `pairs = "bm25"` (not saved
    /// in checkpoints: a pure function of the corpus, recomputed on resume).
    public var lexicalNeighbours: [[Int32]]?
    /// Each token's inverse document frequency over the corpus, for contrastive `pairs = .keywords`
    /// and `.contentSpan`
    /// (a pure function of the corpus; computed on first use, never saved).
    lazy var tokenIDF: [Float] = {
        var df = [Int32](repeating: 0, count: config.vocabSize)
        var seen = [Int](repeating: -1, count: config.vocabSize)
        for d in 0 ..< corpus.count {
            for t in corpus.document(d) where t >= 0 && Int(t) < df.count && seen[Int(t)] != d { seen[Int(t)] = d; df[Int(t)] += 1 }
        }
        let n = Float(max(1, corpus.count))
        return df.map { Foundation.log((n + 1) / (Float($0) + 1)) }
    }()
    /// The corpus's documents are "Title. description" (CorpusReader.titlesInText): recorded in
    /// the model file, so that idx eval reads validation documents the same way.
    public var corpusTitlesInText = false

    public init(config: ModelConfig, options: TrainOptions, corpus: TokenizedCorpus, tokenizerHash: String) throws {
        try config.validate()
        guard corpus.count > 0 else { throw IdxError("the corpus has no documents; ingest some text first.") }
        guard options.maxLen >= 3, options.maxLen <= config.maxLen else {
            throw IdxError("--max-len \(options.maxLen) must be between 3 and the model's position table (\(config.maxLen)).")
        }
        guard options.batchSize > 0, options.steps >= 0, options.lr > 0, options.lr.isFinite else {
            throw IdxError("--batch and --lr must be positive and --steps not negative.")
        }
        try options.contrastive?.validate(totalSteps: options.steps)
        if let bad = corpus.tokens.first(where: { $0 < 0 || Int($0) >= config.vocabSize }) {
            throw IdxError("the corpus holds token id \(bad), outside the model's vocabulary of \(config.vocabSize); use the corpus the model was made for.")
        }
        self.config = config; self.options = options; self.corpus = corpus; self.tokenizerHash = tokenizerHash
        let first = EncoderNetwork(config: config)
        let nWorkers = max(1, min(EncoderNetwork.computeThreads, options.batchSize))
        net = first
        workers = [first] + (1 ..< nWorkers).map { _ in EncoderNetwork(config: config, sharedParameters: first.params) }
        m = FloatBuffer(net.parameterCount); v = FloatBuffer(net.parameterCount)
        net.initialize(seed: options.seed)
    }

    public var parameterCount: Int { net.parameterCount }
    /// The flat parameter and gradient buffers (same layout): what an Allreduce sums.
    public var parameters: UnsafeMutableBufferPointer<Float> { net.parameters }
    public var gradients: UnsafeMutableBufferPointer<Float> { net.gradients }

    // MARK: data, a pure function of (seed, step, slot)

    /// The corpus indices of the global batch of `step` (slot i = element i), sampled uniformly with replacement.
    public func batchDocuments(step: Int) -> [Int] {
        (0 ..< options.batchSize).map { document(step: step, slot: $0) }
    }

    func document(step: Int, slot: Int) -> Int {
        Int(SplitMix64.derive([options.seed, UInt64(step), UInt64(slot)], .documentChoice) % UInt64(corpus.count))
    }

    /// The masked batch of the given slots of `step`, packed (no padding).
    func makeBatch(step: Int, slots: Range<Int>) -> PackedBatch {
        var b = PackedBatch()
        for slot in slots {
            var input = wrapDocument(corpus.document(document(step: step, slot: slot)), maxTokens: options.maxLen)
            let base = b.rowCount
            maskDocument(&input, step: step, slot: slot) { p, t in
                b.selectedRows.append(base + p)
                b.targets.append(t)
            }
            b.append(document: input)
            b.dropoutSeeds.append(SplitMix64.derive([options.seed, UInt64(step), UInt64(slot)], .dropout))
        }
        return b
    }

    /// Masks a wrapped document in place with the draws of (seed, step, slot) and calls
    /// `selected(position, original id)` for each loss-carrying position, in order.
    /// Never selects PAD/BOS/EOS.
    @inline(__always)
    func maskDocument(_ input: inout [Int32], step: Int, slot: Int, _ selected: (Int, Int32) -> Void) {
        let v = UInt64(config.vocabSize - 5)
        var g = SplitMix64(state: SplitMix64.derive([options.seed, UInt64(step), UInt64(slot)], .masking))
        for p in 0 ..< input.count {
            let t = input[p]
            if t == SpecialToken.pad || t == SpecialToken.bos || t == SpecialToken.eos { continue }
            guard g.nextDouble() < options.maskProbability else { continue }
            selected(p, t)
            switch options.maskMode {
            case .maskOnly: input[p] = SpecialToken.mask
            case .bert:
                let r = g.nextDouble()
                if r < 0.8 { input[p] = SpecialToken.mask } else if r < 0.9 { input[p] = Int32(5 + g.next() % v) }
            }
        }
    }

    /// Selected (loss-carrying) positions among `slots` of `step`: the same draws as makeBatch,
    /// without building the batch. Cheap enough that every rank counts the whole global batch
    /// itself instead of summing counts in an Allreduce (which also made the ranks wait for
    /// each other before the step).
    public func selectedCount(step: Int, slots: Range<Int>) -> Int {
        var count = 0
        for slot in slots {
            var input = wrapDocument(corpus.document(document(step: step, slot: slot)), maxTokens: options.maxLen)
            maskDocument(&input, step: step, slot: slot) { _, _ in count += 1 }
        }
        return count
    }

    // MARK: one step

    public struct StepResult { public var lossSum: Double; public var selected: Int; public var tokens: Int }

    /// Zeroes the gradients, then runs forward + backward (with dropout) over `slots` of
    /// `step`, the loss gradient scaled by 1 / globalSelectedCount (default: this call's own count).
    public func computeGradients(step: Int, slots: Range<Int>? = nil, globalSelectedCount: Int? = nil) -> StepResult {
        let slots = slots ?? 0 ..< options.batchSize
        let w = min(workers.count, slots.count)
        if w <= 1 {
            let batch = makeBatch(step: step, slots: slots)
            net.grads.zero(net.parameterCount)
            net.forward(batch, training: true)
            let loss = net.backward(batch, globalSelectedCount: globalSelectedCount ?? batch.selectedRows.count)
            return StepResult(lossSum: loss, selected: batch.selectedRows.count, tokens: batch.rowCount)
        }
        if !Trainer.blasSingleThreaded { openblas_set_num_threads(1); Trainer.blasSingleThreaded = true }
        let parts = (0 ..< w).map { i in slots.lowerBound + slots.count * i / w ..< slots.lowerBound + slots.count * (i + 1) / w }
        let batches = parts.map { makeBatch(step: step, slots: $0) }
        let global = globalSelectedCount ?? batches.reduce(0) { $0 + $1.selectedRows.count }
        var losses = [Double](repeating: 0, count: w)
        // Worker i uses only workers[i] (its own gradients and activations; the parameters they
        // share are only read) and writes only losses[i].
        let nets = SharedWithWorkers(workers)
        losses.withUnsafeMutableBufferPointer { lp in
            let lossPtr = SharedWithWorkers(lp.baseAddress!)
            DispatchQueue.concurrentPerform(iterations: w) { i in
                idx_flush_denormals()
                let net = nets.value[i]
                net.grads.zero(net.parameterCount)
                net.forward(batches[i], training: true)
                lossPtr.value[i] = net.backward(batches[i], globalSelectedCount: global)
            }
        }
        sumWorkerGradients(w)
        return StepResult(lossSum: losses.reduce(0, +), selected: batches.reduce(0) { $0 + $1.selectedRows.count },
                          tokens: batches.reduce(0) { $0 + $1.rowCount })
    }

    // Whether OpenBLAS was set to one thread (the workers parallelise instead). Unsafe is sound
    // here: only the training thread reads and writes it, between parallel sections.
    nonisolated(unsafe) static var blasSingleThreaded = false

    /// Sums workers 1..<w's gradients into net's (worker 0's), split over the threads by parameter range.
    func sumWorkerGradients(_ w: Int) {
        guard w > 1 else { return }
        let n = net.parameterCount
        // Part `part` writes only its own range of net's (worker 0's) gradients and reads the
        // same range of the others'.
        let nets = SharedWithWorkers(workers)
        DispatchQueue.concurrentPerform(iterations: w) { part in
            let range = n * part / w ..< n * (part + 1) / w
            let dst = nets.value[0].grads.ptr
            for k in 1 ..< w {
                let src = nets.value[k].grads.ptr
                for i in range { dst[i] += src[i] }
            }
        }
    }

    /// Clips the (global) gradient to `maxGradNorm` and takes the AdamW step (at `lr`, default the
    /// options'); returns the norm before clipping. The gradient buffer itself is left unscaled
    /// (the clip factor goes into the update).
    @discardableResult
    public func applyUpdate(lr: Float? = nil) -> Double {
        let n = net.parameterCount
        // clipping folded into the update (the same rounding as scaling the buffer first)
        let norm = gradientSquaredNorm(net.grads.ptr, count: n, threads: min(workers.count, 8)).squareRoot()
        step += 1
        AdamW(lr: lr ?? options.learningRate(step: step), weightDecay: options.weightDecay)
            .step(params: net.params.ptr, grads: net.grads.ptr, m: m.ptr, v: v.ptr, count: n, t: step,
                  gradScale: clipCoefficient(norm: norm, maxNorm: options.maxGradNorm))
        return norm
    }

    /// The AdamW step over `part` of the parameters only, from the summed gradient of that part
    /// (`partGradients`, part.count floats) clipped by the global `norm`: a sharded update, where
    /// each rank updates its part and the ranks then exchange parameters. The elementwise
    /// arithmetic equals applyUpdate's on those elements; the moments outside `part` are left
    /// as they were.
    func applyUpdate(part: Range<Int>, partGradients: UnsafePointer<Float>, norm: Double, lr: Float? = nil) {
        step += 1
        AdamW(lr: lr ?? options.learningRate(step: step), weightDecay: options.weightDecay)
            .step(params: net.params.ptr + part.lowerBound, grads: partGradients, m: m.ptr + part.lowerBound,
                  v: v.ptr + part.lowerBound, count: part.count, t: step,
                  gradScale: clipCoefficient(norm: norm, maxNorm: options.maxGradNorm))
    }

    /// The optimizer's moment buffers (exp_avg, exp_avg_sq), in the parameter layout.
    var moments: (m: UnsafeMutableBufferPointer<Float>, v: UnsafeMutableBufferPointer<Float>) {
        (UnsafeMutableBufferPointer(start: m.ptr, count: parameterCount), UnsafeMutableBufferPointer(start: v.ptr, count: parameterCount))
    }

    /// computeGradients + applyUpdate on one process; the mean loss of the step.
    public func trainStep() throws -> (loss: Double, tokens: Int) {
        let r = computeGradients(step: step + 1)
        let loss = r.selected > 0 ? r.lossSum / Double(r.selected) : 0
        guard loss.isFinite else {
            throw IdxError("step \(step + 1): the loss is \(loss); training diverged. Lower --lr; the last checkpoint (step \(step / max(1, options.checkpointEvery) * options.checkpointEvery)) is kept.")
        }
        applyUpdate()
        return (loss, r.tokens)
    }

    // MARK: checkpoints

    struct State: Codable {
        var format = "idx-train-state"
        var formatVersion = 1
        var step: Int
        var options: TrainOptions
        var config: ModelConfig
        var tokenizerHash: String
        var corpus: String
        var modelXxh64: String
        var optimizerXxh64: String
        var elapsedSeconds: Double
    }

    /// Writes model.safetensors, tokenizer.json, optimizer.safetensors, state.json and
    /// train-log.csv into a staged folder, then swaps it in for `directory` atomically: a crash
    /// leaves the previous checkpoint whole.
    public func writeCheckpoint(directory: String, tokenizerJSON: Data, corpusPath: String, log: String, elapsed: Double) throws {
        let stage = AtomicFile.temporarySibling(of: directory)
        try AtomicFile.createParent(of: stage)
        try FileManager.default.createDirectory(atPath: stage, withIntermediateDirectories: true)
        do {
            var model = ModelCheckpoint.tensors(of: net.params.ptr, layout: net.layout)
            model.metadata = ModelCheckpoint.metadata(config, tokenizerHash: tokenizerHash, step: step, trainedTokens: options.maxLen,
                                                    titlesInText: corpusTitlesInText)
            let modelData = model.serialized()
            var opt = ModelCheckpoint.tensors(of: m.ptr, layout: net.layout, prefix: "exp_avg.")
            let sq = ModelCheckpoint.tensors(of: v.ptr, layout: net.layout, prefix: "exp_avg_sq.")
            for name in sq.order { opt.add(name, shape: sq.tensors[name]!.shape, data: sq.tensors[name]!.data) }
            opt.metadata = ["step": "\(step)"]
            let optData = opt.serialized()
            let state = State(step: step, options: options, config: config, tokenizerHash: tokenizerHash, corpus: corpusPath,
                              modelXxh64: XXHash64.hex(XXHash64.hash(modelData)), optimizerXxh64: XXHash64.hex(XXHash64.hash(optData)),
                              elapsedSeconds: elapsed)
            let enc = JSONEncoder(); enc.outputFormatting = [.prettyPrinted, .sortedKeys]
            try AtomicFile.write(modelData, to: stage + "/model.safetensors")
            try AtomicFile.write(optData, to: stage + "/optimizer.safetensors")
            try AtomicFile.write(tokenizerJSON, to: stage + "/tokenizer.json")
            try AtomicFile.write(Data(log.utf8), to: stage + "/train-log.csv")
            try AtomicFile.write(try enc.encode(state), to: stage + "/state.json")
            try AtomicFile.publishDirectory(stage, at: directory)
        } catch {
            try? FileManager.default.removeItem(atPath: stage)
            throw error
        }
    }

    /// Restores a checkpoint written by writeCheckpoint. The corpus must be tokenized with the
    /// checkpoint's tokenizer. Returns the trainer (at the checkpoint's step), the log so far and elapsed seconds.
    public static func resume(directory: String, corpus: TokenizedCorpus, tokenizerHash: String,
                              corpusPath: String) throws -> (trainer: Trainer, log: String, elapsed: Double) {
        let statePath = directory + "/state.json"
        guard let stateData = FileManager.default.contents(atPath: statePath) else {
            throw IdxError("\(statePath): missing; there is no checkpoint to resume in \(directory) (run without --resume to start).")
        }
        guard let state = try? JSONDecoder().decode(State.self, from: stateData), state.format == "idx-train-state" else {
            throw IdxError("\(statePath): not a readable idx training state; the checkpoint is damaged.")
        }
        // state.json is read as it stands (no checksum covers it): a value no run writes would
        // trap (a negative step) or train the wrong way (a negative clipping norm).
        let o = state.options
        guard state.step >= 0, o.maskProbability > 0, o.maskProbability < 1, o.maxGradNorm > 0, o.maxGradNorm.isFinite,
              o.weightDecay >= 0, o.weightDecay.isFinite, state.elapsedSeconds >= 0 else {
            throw IdxError("\(statePath): holds values no training writes (step \(state.step), mask probability \(o.maskProbability), gradient norm \(o.maxGradNorm), weight decay \(o.weightDecay), \(state.elapsedSeconds) s); the checkpoint is damaged: train into another --out without --resume.")
        }
        guard state.tokenizerHash == tokenizerHash else {
            throw IdxError("\(corpusPath): tokenized with tokenizer \(tokenizerHash), but the checkpoint in \(directory) was trained with \(state.tokenizerHash); resume with the corpus it was trained on (\(state.corpus)), or re-ingest with `idx ingest --tokenizer \(directory)/tokenizer.json`.")
        }
        func load(_ name: String, hash: String) throws -> SafeTensors {
            let path = directory + "/" + name
            guard let data = FileManager.default.contents(atPath: path) else {
                throw IdxError("\(path): missing; the checkpoint is incomplete.")
            }
            let h = XXHash64.hex(XXHash64.hash(data))
            guard h == hash else {
                throw IdxError("\(path): checksum \(h) differs from state.json's \(hash); the file is truncated or damaged.")
            }
            return try SafeTensors.parse(data, path: path)
        }
        let model = try load("model.safetensors", hash: state.modelXxh64)
        let opt = try load("optimizer.safetensors", hash: state.optimizerXxh64)
        let t = try Trainer(config: state.config, options: state.options, corpus: corpus, tokenizerHash: tokenizerHash)
        try ModelCheckpoint.copy(from: model, into: t.net.params.ptr, layout: t.net.layout, path: directory + "/model.safetensors")
        try ModelCheckpoint.copy(from: opt, into: t.m.ptr, layout: t.net.layout, prefix: "exp_avg.", path: directory + "/optimizer.safetensors")
        try ModelCheckpoint.copy(from: opt, into: t.v.ptr, layout: t.net.layout, prefix: "exp_avg_sq.", path: directory + "/optimizer.safetensors")
        t.step = state.step
        let log = (try? String(contentsOfFile: directory + "/train-log.csv", encoding: .utf8)) ?? TrainLog.header
        return (t, log, state.elapsedSeconds)
    }
}

public enum TrainLog {
    public static let header = "step,loss,lr,tokens_per_s,elapsed_s\n"
    public static func line(step: Int, loss: Double, lr: Float, tokensPerSecond: Double, elapsed: Double) -> String {
        String(format: "%d,%.6f,%g,%.1f,%.3f\n", step, loss, Double(lr), tokensPerSecond, elapsed)
    }
}

/// Per-thread and library setup for compute: OpenBLAS's kernels, FTZ/DAZ and its thread count.
public enum ComputeSetup {
    public static func configure(threads: Int) {
        BLASRuntime.preferWidestKernels()
        idx_flush_denormals()
        let n = max(1, threads)
        openblas_set_num_threads(Int32(n))
        EncoderNetwork.computeThreads = n
    }
}
