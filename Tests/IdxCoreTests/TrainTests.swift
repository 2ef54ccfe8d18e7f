import XCTest
import IdxBase
import IdxCorpus
import IdxModel
@testable import IdxTrain

/// A synthetic corpus and a tiny model: the trainer's contracts, fast.
enum TinyTraining {
    static func corpus(documents: Int = 40, vocab: Int = 30, seed: UInt64 = 5) -> TokenizedCorpus {
        var g = SplitMix64(state: seed)
        var c = TokenizedCorpus()
        for _ in 0 ..< documents {
            let n = 3 + Int(g.next() % 20)
            c.append((0 ..< n).map { _ in Int32(5 + g.next() % UInt64(vocab - 5)) })
        }
        return c
    }
    static let config = ModelConfig(vocabSize: 30, dModel: 16, nHeads: 2, nLayers: 2, dFF: 32, maxLen: 16, dropout: 0.1)
    static func options(steps: Int = 6, mode: MaskMode = .bert) -> TrainOptions {
        var o = TrainOptions()
        o.steps = steps; o.batchSize = 6; o.maxLen = 12; o.lr = 3e-3; o.seed = 9; o.maskMode = mode; o.maskProbability = 0.3
        return o
    }
    static func trainer(_ o: TrainOptions = options(), corpus c: TokenizedCorpus = corpus()) throws -> Trainer {
        try Trainer(config: config, options: o, corpus: c, tokenizerHash: "00000000000000aa")
    }
}

final class TrainTests: XCTestCase {
    func testBatchesAndMasksArePureFunctionsOfSeedAndStep() throws {
        let a = try TinyTraining.trainer(), b = try TinyTraining.trainer()
        _ = try a.trainStep(); _ = try a.trainStep()  // history must not matter
        for step in [1, 2, 7, 1000] {
            XCTAssertEqual(a.batchDocuments(step: step), b.batchDocuments(step: step))
            let ba = a.makeBatch(step: step, slots: 0 ..< 6), bb = b.makeBatch(step: step, slots: 0 ..< 6)
            XCTAssertEqual(ba.tokens, bb.tokens); XCTAssertEqual(ba.selectedRows, bb.selectedRows)
            XCTAssertEqual(ba.dropoutSeeds, bb.dropoutSeeds)
        }
        XCTAssertNotEqual(a.batchDocuments(step: 1), a.batchDocuments(step: 2))
    }

    func testMaskingRules() throws {
        for mode in [MaskMode.bert, .maskOnly] {
            let t = try TinyTraining.trainer(TinyTraining.options(mode: mode))
            var selected = 0, eligible = 0, masked = 0, kept = 0
            for step in 1 ... 200 {
                let b = t.makeBatch(step: step, slots: 0 ..< 6)
                for d in 0 ..< b.docCount {
                    let doc = t.document(step: step, slot: d)
                    let original = wrapDocument(t.corpus.document(doc), maxTokens: 12)
                    XCTAssertEqual(b.docStart[d + 1] - b.docStart[d], original.count)
                    XCTAssertEqual(original.first, SpecialToken.bos)
                    eligible += original.filter { $0 != SpecialToken.bos && $0 != SpecialToken.eos }.count
                }
                for (i, r) in b.selectedRows.enumerated() {
                    let p = Int(b.positions[r])
                    XCTAssertNotEqual(p, 0, "[BOS] is never selected")
                    XCTAssertNotEqual(b.targets[i], SpecialToken.eos)
                    if b.tokens[r] == SpecialToken.mask { masked += 1 } else if b.tokens[r] == b.targets[i] { kept += 1 }
                }
                selected += b.selectedRows.count
            }
            let rate = Double(selected) / Double(eligible)
            XCTAssertEqual(rate, 0.3, accuracy: 0.03, "selection rate")
            if mode == .maskOnly { XCTAssertEqual(masked, selected) } else {
                XCTAssertEqual(Double(masked) / Double(selected), 0.8, accuracy: 0.05)
                XCTAssertGreaterThan(kept, 0)
            }
        }
    }

    /// The same global batch split over two "ranks": summed gradients equal the one-rank gradient.
    func testGradientsSplitAcrossRanksSumToOneRank() throws {
        let one = try TinyTraining.trainer(), r0 = try TinyTraining.trainer(), r1 = try TinyTraining.trainer()
        let step = 3
        let global = one.selectedCount(step: step, slots: 0 ..< 6)
        XCTAssertEqual(global, r0.selectedCount(step: step, slots: 0 ..< 2) + r1.selectedCount(step: step, slots: 2 ..< 6))
        let full = one.computeGradients(step: step, slots: 0 ..< 6, globalSelectedCount: global)
        let a = r0.computeGradients(step: step, slots: 0 ..< 2, globalSelectedCount: global)
        let b = r1.computeGradients(step: step, slots: 2 ..< 6, globalSelectedCount: global)
        XCTAssertEqual(full.lossSum, a.lossSum + b.lossSum, accuracy: 1e-4)
        var worst: Float = 0, scale: Float = 0
        for i in 0 ..< one.parameterCount {
            worst = max(worst, abs(one.gradients[i] - (r0.gradients[i] + r1.gradients[i])))
            scale = max(scale, abs(one.gradients[i]))
        }
        XCTAssertLessThan(worst, 1e-5 * max(1, scale))
        XCTAssertGreaterThan(scale, 0)
    }

    func testLossDecreasesOnATinyCorpus() throws {
        var o = TinyTraining.options(steps: 150)
        o.lr = 1e-2
        let t = try TinyTraining.trainer(o, corpus: TinyTraining.corpus(documents: 8))
        var losses = [Double]()
        for _ in 0 ..< 150 { losses.append(try t.trainStep().loss) }
        let first = losses.prefix(20).reduce(0, +) / 20, last = losses.suffix(20).reduce(0, +) / 20
        XCTAssertLessThan(last, first * 0.8, "loss \(first) -> \(last)")
    }

    func testNaNLossIsAClearError() throws {
        let t = try TinyTraining.trainer()
        t.net.params.ptr[t.net.layout.lmHeadB] = .nan
        XCTAssertThrowsError(try t.trainStep()) { e in
            XCTAssertTrue((e as? IdxError)?.message.contains("diverged") ?? false, "\(e)")
        }
        XCTAssertEqual(t.step, 0, "no update after a NaN loss")
    }

    func testBadOptionsAreRejected() {
        var o = TinyTraining.options(); o.maxLen = 40
        XCTAssertThrowsError(try TinyTraining.trainer(o))
        var bad = TinyTraining.corpus(); bad.append([Int32(99)])
        XCTAssertThrowsError(try TinyTraining.trainer(corpus: bad)) { e in
            XCTAssertTrue("\(e)".contains("outside the model's vocabulary"))
        }
    }

    func testLinearScheduleWarmsUpThenDecaysToZero() {
        let s = LRSchedule(warmupSteps: 10)
        XCTAssertEqual(s.factor(step: 1, mlmSteps: 110), 0.1, accuracy: 1e-7)
        XCTAssertEqual(s.factor(step: 10, mlmSteps: 110), 1)
        XCTAssertEqual(s.factor(step: 11, mlmSteps: 110), 1)
        XCTAssertEqual(s.factor(step: 60, mlmSteps: 110), 0.51, accuracy: 1e-6)
        XCTAssertEqual(s.factor(step: 110, mlmSteps: 110), 0.01, accuracy: 1e-7)
        XCTAssertEqual(s.factor(step: 111, mlmSteps: 110), 0)
        var o = TinyTraining.options(steps: 110)
        XCTAssertEqual(o.learningRate(step: 1), o.lr, "no schedule: constant")
        o.schedule = s
        XCTAssertEqual(o.learningRate(step: 5), o.lr * 0.5, accuracy: 1e-9)
        // contrastive steps at the end are not MLM steps: the decay ends before them
        var k = ContrastiveOptions(); k.steps = 10; o.contrastive = k
        XCTAssertEqual(o.learningRate(step: 100), o.lr / 90, accuracy: 1e-9)  // 1 step left of 100 - 10
    }

    /// The scheduled rate is the one AdamW steps with: a warm-up step equals a constant-rate
    /// step at that rate, bit for bit. Old checkpoints (no "schedule" key) read as constant.
    func testScheduledStepUsesTheScheduledRate() throws {
        var scheduled = TinyTraining.options(); scheduled.schedule = LRSchedule(warmupSteps: 4)
        var constant = TinyTraining.options(); constant.lr = scheduled.lr * 0.25
        let a = try TinyTraining.trainer(scheduled), b = try TinyTraining.trainer(constant)
        _ = try a.trainStep(); _ = try b.trainStep()
        XCTAssertEqual(Array(a.parameters), Array(b.parameters))
        let plain = try TinyTraining.trainer()
        _ = try plain.trainStep()
        XCTAssertNotEqual(Array(a.parameters), Array(plain.parameters))
        var json = try JSONSerialization.jsonObject(with: JSONEncoder().encode(scheduled)) as! [String: Any]
        XCTAssertNotNil(json.removeValue(forKey: "schedule"))
        let old = try JSONDecoder().decode(TrainOptions.self, from: JSONSerialization.data(withJSONObject: json))
        XCTAssertNil(old.schedule)
        XCTAssertEqual(try JSONDecoder().decode(TrainOptions.self, from: JSONEncoder().encode(scheduled)), scheduled)
    }
}
