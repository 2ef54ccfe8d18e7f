import Foundation
import IdxBase
import IdxModel
import IdxParallel

/// Data-parallel training over the ranks of a Communicator (see docs/parallel.md): the one
/// object through which a Trainer's ranks exchange parameters and gradients.
/// The global batch of a step is a pure function of (seed, step, slot); rank r takes the
/// contiguous slots `communicator.share(of: batchSize)`. With the loss of every rank
/// normalised by the global count of selected positions, the sum of the ranks' gradients
/// is the gradient of the whole batch, so the step equals the single-process step.
public final class DataParallelExchange {
    public let trainer: Trainer
    public let communicator: Communicator
    /// A rank's part of the summed gradient in a sharded multi-rank step.
    let shardGradients = FloatBuffer()
    /// Same-host ranks: parameters and gradients in a shared window (`shareMemory`).
    private(set) var sharedMemory: SharedTrainingMemory?

    /// Joins `trainer` to the ranks of `communicator`: checks that every rank holds the same
    /// corpus, options and step (on several hosts a rank reading another corpus copy or
    /// checkpoint would otherwise train silently on other data), copies rank 0's parameters
    /// (its fresh init, or the checkpoint it read) to every rank, and shares memory between
    /// ranks on one host. On one process it checks and sends nothing.
    public init(_ trainer: Trainer, communicator: Communicator) throws {
        self.trainer = trainer
        self.communicator = communicator
        guard communicator.size > 1 else { return }
        let mine = trainer.setupSummary
        var root = Array(mine.utf8)
        try communicator.broadcast(bytes: &root)
        let theirs = String(decoding: root, as: UTF8.self)
        let agree = try communicator.allreduceSum(theirs == mine ? 0 : 1)
        if theirs != mine {
            throw IdxError("rank \(communicator.rank) does not train what rank 0 trains: here \(mine); rank 0 has \(theirs). Give every rank the same corpus, checkpoint and options (same paths on every host).")
        }
        if agree != 0 {
            throw IdxError("\(agree) rank(s) hold another corpus, checkpoint or options than rank 0 (see their messages).")
        }
        try communicator.broadcast(trainer.parameters)
        try shareMemory()
    }

    /// Ranks on one host keep the parameters and every rank's gradients in one MPI shared window,
    /// [parameters | rank 0's gradients | rank 1's | …]: a step then sums the gradients and
    /// publishes the updated weights with plain loads and stores, where Reduce_scatter and
    /// Allgatherv copy every float through message buffers twice. Ranks on several hosts (or
    /// IDX_MPI_SHARED=0) keep message passing; both give the same weights.
    private func shareMemory() throws {
        let comm = communicator, n = trainer.parameterCount
        guard sharedMemory == nil, n < Int(Int32.max),
              let base = try comm.sharedFloats(count: (1 + comm.size) * n) else { return }
        trainer.net.params.adopt(base, count: n, copy: comm.isRoot)   // the weights are equal after the broadcast: one writer
        trainer.net.grads.adopt(base + (1 + comm.rank) * n, count: n, copy: false)
        sharedMemory = SharedTrainingMemory(base: base, count: n)
        try comm.sharedSync()
    }

    /// Whether this rank trains over the shared window (else by message passing, or alone).
    public var sharesMemory: Bool { sharedMemory != nil }

    /// The next step across all ranks, MLM or contrastive as the trainer's schedule says.
    public func step() throws -> (loss: Double, tokens: Int) {
        trainer.isContrastive(step: trainer.step + 1) ? try contrastiveStep() : try trainStep()
    }

    /// One MLM optimizer step across all ranks; returns the global mean loss and the
    /// tokens of the whole global batch. Every rank ends with the same weights.
    public func trainStep() throws -> (loss: Double, tokens: Int) {
        let comm = communicator, options = trainer.options
        guard comm.size > 1 else { return try trainer.trainStep() }
        guard options.batchSize >= comm.size else {
            throw IdxError("--batch \(options.batchSize) is smaller than the \(comm.size) ranks; every rank needs at least one document a step.")
        }
        let next = trainer.step + 1
        let t0 = DispatchTime.now().uptimeNanoseconds
        // Equal slot counts, not token-balanced ranges: a token-balanced split was tried, but it
        // changes the summation order, and AdamW turns the rounding noise of near-zero gradient
        // components into ±lr moves (up to 3e-3 in 20 steps against 2e-5 with halves).
        let slots = comm.share(of: options.batchSize)
        // 1. the global count of loss-carrying positions normalises every rank's loss; the
        //    masks are a pure function of (seed, step, slot), so each rank counts all slots itself
        let globalSelected = trainer.selectedCount(step: next, slots: 0 ..< options.batchSize)
        let t1 = DispatchTime.now().uptimeNanoseconds
        // 2. local forward + backward
        let local = trainer.computeGradients(step: next, slots: slots, globalSelectedCount: globalSelected)
        StepProfile.mark(count: t1 - t0, compute: DispatchTime.now().uptimeNanoseconds - t1)
        return try exchangeGradientsAndUpdate(next: next, lossSum: local.lossSum, lossDivisor: Double(globalSelected),
                                              tokens: local.tokens, lr: nil)
    }

    /// One contrastive step across all ranks: each rank embeds its share of the 2B views, the
    /// pooled embeddings are summed into every rank (each row comes from one rank, the others
    /// add zeros), every rank computes the whole InfoNCE loss and backpropagates its own rows,
    /// and the gradients are summed as in an MLM step. With the views split as one rank's
    /// threads split them, it gives the single-process weights.
    public func contrastiveStep() throws -> (loss: Double, tokens: Int) {
        let comm = communicator, contrastive = trainer.contrastive
        guard comm.size > 1 else { return try trainer.contrastiveStep() }
        let views = comm.share(of: 2 * contrastive.batchSize)
        guard !views.isEmpty else {
            throw IdxError("--contrastive-batch \(contrastive.batchSize): its \(2 * contrastive.batchSize) views are fewer than the \(comm.size) ranks; every rank needs at least one.")
        }
        let r = try trainer.computeContrastiveGradients(step: trainer.step + 1, views: views) { try comm.allreduceSum(&$0) }
        // The loss is the same on every rank: rank 0's alone enters the sum.
        return try exchangeGradientsAndUpdate(next: trainer.step + 1, lossSum: comm.isRoot ? r.loss : 0, lossDivisor: 1,
                                              tokens: r.tokens, lr: contrastive.lr)
    }
    /// Steps 3-4 of a data-parallel step, once every rank holds its local gradient: sum the
    /// trainer.gradients, take the clipped AdamW step at `lr` (nil: the schedule's), leave the same
    /// weights on every rank. Returns Σ lossSum / lossDivisor and Σ tokens over the ranks.
    func exchangeGradientsAndUpdate(next: Int, lossSum: Double, lossDivisor: Double,
                                    tokens: Int, lr: Float?) throws -> (loss: Double, tokens: Int) {
        let comm = communicator, options = trainer.options
        let t2 = DispatchTime.now().uptimeNanoseconds
        // 3. sharded update: each rank receives the sum of its part of the gradient
        //    (Reduce_scatter, half an Allreduce's traffic), takes the AdamW step on that part
        //    only, and the ranks exchange the updated parts (Allgatherv). Every rank ends with
        //    the same weights, and does 1/N of the update's memory traffic instead of all of it.
        //    Parts start at multiples of the norm's 4096-float blocks, so the clipping norm sums
        //    the same blocks as on one process.
        let n = trainer.parameterCount
        guard n < Int(Int32.max) else {
            return try exchangeByAllreduce(next: next, lossSum: lossSum, lossDivisor: lossDivisor, tokens: tokens, lr: lr, t2: t2)
        }
        let parts = Communicator.parts(of: n, size: comm.size, align: normBlock)
        let mine = parts[comm.rank]
        shardGradients.ensure(mine.count)
        if let shared = sharedMemory {
            // every rank's gradient is complete; sum this rank's part in rank order (for two
            // ranks the same bits as Reduce_scatter, whose sum of two terms has no order)
            try comm.sharedSync()
            let dst = shardGradients.ptr
            dst.update(from: shared.gradients(of: 0) + mine.lowerBound, count: mine.count)
            for r in 1 ..< comm.size {
                let src = shared.gradients(of: r) + mine.lowerBound
                for i in 0 ..< mine.count { dst[i] += src[i] }
            }
        } else {
            try comm.reduceScatterSum(UnsafeBufferPointer(trainer.gradients), into: shardGradients.ptr, parts: parts)
        }
        // Σ g² of the parts, the loss and the token tallies, in one small Allreduce
        var tallies = [gradientSquaredNorm(shardGradients.ptr, count: mine.count), lossSum, Double(tokens)]
        try tallies.withUnsafeMutableBufferPointer { try comm.allreduceSum($0) }
        let loss = lossDivisor > 0 ? tallies[1] / lossDivisor : 0
        guard loss.isFinite else {
            throw IdxError("step \(next): the loss is \(loss); training diverged. Lower --lr (--contrastive-lr in the contrastive steps); the last checkpoint (step \(trainer.step / max(1, options.checkpointEvery) * options.checkpointEvery)) is kept.")
        }
        let t3 = DispatchTime.now().uptimeNanoseconds
        trainer.applyUpdate(part: mine, partGradients: shardGradients.ptr, norm: tallies[0].squareRoot(), lr: lr)
        if sharedMemory != nil {
            try comm.sharedSync()   // every part updated (and every gradient read) before any rank goes on
        } else {
            try comm.allgather(trainer.parameters, parts: parts)
        }
        // Only rank 0 writes checkpoints, with all the moments: gather them when one is due
        // (TrainCommand writes every checkpointEvery steps and at the last).
        if trainer.step % max(1, options.checkpointEvery) == 0 || trainer.step == options.steps {
            try comm.allgather(trainer.moments.m, parts: parts)
            try comm.allgather(trainer.moments.v, parts: parts)
        }
        StepProfile.add(reduce: t3 - t2, update: DispatchTime.now().uptimeNanoseconds - t3, rank: comm.rank, last: trainer.step == options.steps)
        return (loss, Int(tallies[2]))
    }

    /// Steps 3-4 with one Allreduce of the whole gradient and the full update on every rank
    /// (for a model too large for MPI's int counts in one Reduce_scatter).
    private func exchangeByAllreduce(next: Int, lossSum: Double, lossDivisor: Double, tokens: Int,
                                     lr: Float?, t2: UInt64) throws -> (loss: Double, tokens: Int) {
        let comm = communicator, options = trainer.options
        try comm.allreduceSum(trainer.gradients)
        var tallies = [lossSum, Double(tokens)]
        try tallies.withUnsafeMutableBufferPointer { try comm.allreduceSum($0) }
        let loss = lossDivisor > 0 ? tallies[0] / lossDivisor : 0
        guard loss.isFinite else {
            throw IdxError("step \(next): the loss is \(loss); training diverged. Lower --lr (--contrastive-lr in the contrastive steps); the last checkpoint (step \(trainer.step / max(1, options.checkpointEvery) * options.checkpointEvery)) is kept.")
        }
        let t3 = DispatchTime.now().uptimeNanoseconds
        trainer.applyUpdate(lr: lr)
        StepProfile.add(reduce: t3 - t2, update: DispatchTime.now().uptimeNanoseconds - t3, rank: comm.rank, last: trainer.step == options.steps)
        return (loss, Int(tallies[1]))
    }
}

extension Trainer {
    /// What every rank must agree on before training together (DataParallelExchange).
    var setupSummary: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let opts = (try? encoder.encode(options)).map { XXHash64.hex(XXHash64.hash($0)) } ?? "?"
        var tokens = XXHash64()
        corpus.tokens.withUnsafeBytes { tokens.update($0) }
        return "corpus of \(corpus.count) documents (tokens \(XXHash64.hex(tokens.finalize())), tokenizer \(tokenizerHash)), step \(step), options \(opts), \(parameterCount) parameters"
    }
}

/// The layout of the shared window of same-host ranks (DataParallelExchange.shareMemory).
struct SharedTrainingMemory {
    let base: UnsafeMutablePointer<Float>
    let count: Int   // parameters
    func gradients(of rank: Int) -> UnsafeMutablePointer<Float> { base + (1 + rank) * count }
}

/// With IDX_PROFILE_STEPS set, each rank prints at the last step where its step time went:
/// count, forward + backward, the gradient sum (Reduce_scatter or the shared window, with the
/// wait for the slowest rank) and tallies, update + parameter exchange (ms a step, mean).
/// Unsafe is sound here: only a rank's training thread touches the tallies.
enum StepProfile {
    nonisolated(unsafe) static var totals = [UInt64](repeating: 0, count: 4)
    nonisolated(unsafe) static var steps = 0
    static let enabled = ProcessInfo.processInfo.environment["IDX_PROFILE_STEPS"] != nil

    /// The first two phases of an MLM step (a contrastive step leaves them out).
    static func mark(count: UInt64, compute: UInt64) {
        guard enabled else { return }
        totals[0] += count; totals[1] += compute
    }

    /// The last two phases; ends the step.
    static func add(reduce: UInt64, update: UInt64, rank: Int, last: Bool) {
        guard enabled else { return }
        totals[2] += reduce; totals[3] += update
        steps += 1
        guard last else { return }
        let ms = totals.map { Double($0) / 1e6 / Double(steps) }
        FileHandle.standardError.write(Data(String(format: "profile rank %d, %d steps, ms a step: count %.1f, forward+backward %.1f, gradient-reduce %.1f, update+allgather %.1f\n",
                                                   rank, steps, ms[0], ms[1], ms[2], ms[3]).utf8))
    }
}
