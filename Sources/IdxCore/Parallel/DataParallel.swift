import Foundation

/// Data-parallel training over the ranks of a Communicator (see docs/parallel.md).
/// The global batch of a step is a pure function of (seed, step, slot); rank r takes the
/// contiguous slots `communicator.share(of: batchSize)`. With the loss of every rank
/// normalised by the global count of selected positions, the sum of the ranks' gradients
/// is the gradient of the whole batch, so the step equals the single-process step.
extension Trainer {
    /// Copies rank 0's parameters to every rank (its fresh init, or the checkpoint it read),
    /// after checking that every rank holds the same corpus, options and step: on several
    /// hosts a rank reading another corpus copy or checkpoint would otherwise train silently
    /// on other data.
    public func broadcastParameters(_ communicator: Communicator) throws {
        guard communicator.size > 1 else { return }
        let mine = setupSummary
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
        try communicator.broadcast(parameters)
    }

    /// What every rank must agree on before training together.
    var setupSummary: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let opts = (try? encoder.encode(options)).map { XXHash64.hex(XXHash64.hash($0)) } ?? "?"
        var tokens = XXHash64()
        corpus.tokens.withUnsafeBytes { tokens.update($0) }
        return "corpus of \(corpus.count) documents (tokens \(XXHash64.hex(tokens.finalize())), tokenizer \(tokenizerHash)), step \(step), options \(opts), \(parameterCount) parameters"
    }

    /// One optimizer step across all ranks; returns the global mean loss and the
    /// tokens of the whole global batch. Every rank ends with the same weights.
    public func trainStep(communicator comm: Communicator) throws -> (loss: Double, tokens: Int) {
        guard comm.size > 1 else { return try trainStep() }
        guard options.batchSize >= comm.size else {
            throw IdxError("--batch \(options.batchSize) is smaller than the \(comm.size) ranks; every rank needs at least one document a step.")
        }
        let next = step + 1
        let t0 = DispatchTime.now().uptimeNanoseconds
        // Equal slot counts, not token-balanced ranges: a token-balanced split was tried, but it
        // changes the summation order, and AdamW turns the rounding noise of near-zero gradient
        // components into ±lr moves (up to 3e-3 in 20 steps against 2e-5 with halves).
        let slots = comm.share(of: options.batchSize)
        // 1. the global count of loss-carrying positions normalises every rank's loss
        let globalSelected = try comm.allreduceSum(selectedCount(step: next, slots: slots))
        let t1 = DispatchTime.now().uptimeNanoseconds
        // 2. local forward + backward
        let local = computeGradients(step: next, slots: slots, globalSelectedCount: globalSelected)
        let t2 = DispatchTime.now().uptimeNanoseconds
        // 3. sum gradients (one contiguous buffer) and the loss/token tallies
        try comm.allreduceSum(gradients)
        var tallies = [local.lossSum, Double(local.tokens)]
        try tallies.withUnsafeMutableBufferPointer { try comm.allreduceSum($0) }
        let loss = globalSelected > 0 ? tallies[0] / Double(globalSelected) : 0
        guard loss.isFinite else {
            throw IdxError("step \(next): the loss is \(loss); training diverged. Lower --lr; the last checkpoint (step \(step / max(1, options.checkpointEvery) * options.checkpointEvery)) is kept.")
        }
        // 4. the same update from the same gradients keeps the weights identical
        let t3 = DispatchTime.now().uptimeNanoseconds
        applyUpdate()
        StepProfile.add([t1 - t0, t2 - t1, t3 - t2, DispatchTime.now().uptimeNanoseconds - t3],
                        rank: comm.rank, last: step == options.steps)
        return (loss, Int(tallies[1]))
    }
}

/// With IDX_PROFILE_STEPS set, each rank prints at the last step where its step time went:
/// count Allreduce, forward + backward, gradient Allreduce, update (ms a step, mean).
enum StepProfile {
    nonisolated(unsafe) static var totals = [UInt64](repeating: 0, count: 4)
    nonisolated(unsafe) static var steps = 0
    static let enabled = ProcessInfo.processInfo.environment["IDX_PROFILE_STEPS"] != nil

    static func add(_ phases: [UInt64], rank: Int, last: Bool) {
        guard enabled else { return }
        for i in 0 ..< 4 { totals[i] += phases[i] }
        steps += 1
        guard last else { return }
        let ms = totals.map { Double($0) / 1e6 / Double(steps) }
        FileHandle.standardError.write(Data(String(format: "profile rank %d, %d steps, ms a step: count-allreduce %.1f, forward+backward %.1f, gradient-allreduce %.1f, update %.1f\n",
                                                   rank, steps, ms[0], ms[1], ms[2], ms[3]).utf8))
    }
}
