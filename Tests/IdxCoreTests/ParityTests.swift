import XCTest
import IdxTrain
@testable import IdxModel

/// idx's encoder against PyTorch (fixture from scripts/make-model-fixtures.py): forward
/// logits and loss, every parameter's gradient, the pooled embeddings, one clipped AdamW step.
final class ParityTests: XCTestCase {
    static var fixturePath: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/model/parity.safetensors").path
    }

    /// The weight rule mirrored from make-model-fixtures.py.
    static func fillWeights(_ net: EncoderNetwork, seed: UInt64) {
        for (ti, slot) in net.layout.slots.enumerated() {
            var base = 0.0, amp = 0.1
            if slot.name.hasPrefix("token_emb") || slot.name.hasPrefix("pos_emb") { amp = 1 }
            else if slot.name.contains(".norm") { base = slot.name.hasSuffix("weight") ? 1 : 0 }
            else if slot.shape.count == 2 { amp = 1 / Double(slot.shape[1]).squareRoot() }
            var g = SplitMix64(state: SplitMix64.derive([seed, UInt64(ti)]))
            for k in 0 ..< slot.count { net.params.ptr[slot.offset + k] = Float(base + (2 * g.nextDouble() - 1) * amp) }
        }
    }

    static func sampleIndices(_ n: Int) -> [Int] { Array(stride(from: 0, to: n, by: max(1, n / 256))) }

    struct Setup {
        var fx: SafeTensors
        var net: EncoderNetwork
        var batch: PackedBatch
    }

    func setup() throws -> Setup {
        let fx = try SafeTensors.read(path: Self.fixturePath)
        let m = fx.metadata
        let cfg = ModelConfig(vocabSize: Int(m["vocab_size"]!)!, dModel: Int(m["d_model"]!)!, nHeads: Int(m["n_heads"]!)!,
                              nLayers: Int(m["n_layers"]!)!, dFF: Int(m["d_ff"]!)!, maxLen: Int(m["max_len"]!)!, dropout: 0.1)
        let net = EncoderNetwork(config: cfg)
        let names = try JSONDecoder().decode([String].self, from: Data(m["names"]!.utf8))
        XCTAssertEqual(names, net.layout.slots.map(\.name), "state_dict names and order")
        Self.fillWeights(net, seed: UInt64(m["weight_seed"]!)!)
        let x = fx.tensors["input_ids"]!, lengths = fx.tensors["lengths"]!.data.map { Int($0) }
        let t = x.shape[1]
        var batch = PackedBatch()
        for (b, n) in lengths.enumerated() { batch.append(document: (0 ..< n).map { Int32(x.data[b * t + $0]) }) }
        for flat in fx.tensors["selected"]!.data.map({ Int($0) }) { batch.selectedRows.append(batch.docStart[flat / t] + flat % t) }
        batch.targets = fx.tensors["targets"]!.data.map { Int32($0) }
        return Setup(fx: fx, net: net, batch: batch)
    }

    func testForwardLogitsLossAndPooled() throws {
        let s = try setup()
        let (net, batch, cfg) = (s.net, s.batch, s.net.cfg)
        net.forward(batch, training: false)
        let c = cfg.dModel, v = cfg.vocabSize, m = batch.selectedRows.count
        var hSel = [Float](), logits = [Float](repeating: 0, count: m * v)
        for r in batch.selectedRows { hSel += Array(UnsafeBufferPointer(start: net.output + r * c, count: c)) }
        linearForward(&logits, hSel, net.params.ptr + net.layout.lmHeadW, net.params.ptr + net.layout.lmHeadB, m, c, v)
        let ref = s.fx.tensors["logits"]!.data
        let maxErr = zip(logits, ref).map { abs($0 - $1) }.max()!
        print("parity: logits max abs error \(maxErr)")
        XCTAssertLessThanOrEqual(maxErr, 1e-4)

        let pooled = meanPool(net.output, docStart: batch.docStart, c: c)
        let pErr = zip(pooled, s.fx.tensors["pooled"]!.data).map { abs($0 - $1) }.max()!
        print("parity: pooled embedding max abs error \(pErr)")
        XCTAssertLessThanOrEqual(pErr, 1e-4)

        net.grads.zero(net.parameterCount)
        let loss = net.backward(batch, globalSelectedCount: m) / Double(m)
        print("parity: loss \(loss) vs PyTorch \(s.fx.tensors["loss"]!.data[0])")
        XCTAssertEqual(loss, Double(s.fx.tensors["loss"]!.data[0]), accuracy: 1e-4)
    }

    func testGradientsAndAdamWStep() throws {
        let s = try setup()
        let (net, batch) = (s.net, s.batch)
        let initial = Array(net.parameters)
        net.forward(batch, training: false)
        net.grads.zero(net.parameterCount)
        _ = net.backward(batch, globalSelectedCount: batch.selectedRows.count)
        let norms = s.fx.tensors["grad_norms"]!.data
        var worstRel: Float = 0, worstNorm = 0.0
        for (ti, slot) in net.layout.slots.enumerated() {
            let ref = s.fx.tensors["grad." + slot.name]!.data
            let mine = Self.sampleIndices(slot.count).map { net.grads.ptr[slot.offset + $0] }
            let scale = max(ref.map { abs($0) }.max()!, 1e-6)
            let rel = zip(mine, ref).map { abs($0 - $1) }.max()! / scale
            worstRel = max(worstRel, rel)
            XCTAssertLessThanOrEqual(rel, 1e-3, "gradient of \(slot.name)")
            var n2 = 0.0
            for k in 0 ..< slot.count { n2 += Double(net.grads.ptr[slot.offset + k]) * Double(net.grads.ptr[slot.offset + k]) }
            let nRel = abs(n2.squareRoot() - Double(norms[ti])) / max(Double(norms[ti]), 1e-6)
            if norms[ti] > 1e-5 { worstNorm = max(worstNorm, nRel); XCTAssertLessThanOrEqual(nRel, 1e-3, "norm of \(slot.name)") }
        }
        print("parity: gradients worst sampled error / max |grad| \(worstRel), worst tensor-norm relative error \(worstNorm)")

        // Clipping: the norm matches PyTorch's, and the clip is active.
        let maxNorm = Float(s.fx.metadata["max_norm"]!)!, lr = Float(s.fx.metadata["lr"]!)!
        let total = clipGradientNorm(net.grads.ptr, count: net.parameterCount, maxNorm: maxNorm)
        let refTotal = Double(s.fx.tensors["total_norm"]!.data[0])
        XCTAssertEqual(total, refTotal, accuracy: 1e-3 * refTotal)
        XCTAssertGreaterThan(refTotal, Double(maxNorm))

        // AdamW semantics on PyTorch's own gradients (elementwise, so samples suffice).
        let adam = AdamW(lr: lr)
        let coef = Float(Double(maxNorm) / (refTotal + 1e-6))
        var worstStep: Float = 0
        for slot in net.layout.slots {
            let idx = Self.sampleIndices(slot.count)
            var p = idx.map { initial[slot.offset + $0] }
            let g = s.fx.tensors["grad." + slot.name]!.data.map { $0 * coef }
            var m = [Float](repeating: 0, count: p.count), v = m
            adam.step(params: &p, grads: g, m: &m, v: &v, count: p.count, t: 1)
            let err = zip(p, s.fx.tensors["after." + slot.name]!.data).map { abs($0 - $1) }.max()!
            worstStep = max(worstStep, err)
            XCTAssertLessThanOrEqual(err, 1e-5, "AdamW step of \(slot.name)")
        }
        // End to end with idx's own clipped gradients (skipping gradients that are pure
        // rounding noise, e.g. the key bias, whose true gradient is 0 and whose Adam step is ±lr by sign).
        var m = [Float](repeating: 0, count: net.parameterCount), v = m
        adam.step(params: net.params.ptr, grads: net.grads.ptr, m: &m, v: &v, count: net.parameterCount, t: 1)
        var worstE2E: Float = 0
        for slot in net.layout.slots {
            let ref = s.fx.tensors["after." + slot.name]!.data, gref = s.fx.tensors["grad." + slot.name]!.data
            for (j, k) in Self.sampleIndices(slot.count).enumerated() where abs(gref[j]) > 1e-6 || gref[j] == 0 {
                worstE2E = max(worstE2E, abs(net.params.ptr[slot.offset + k] - ref[j]))
            }
        }
        print("parity: AdamW step max abs error \(worstStep) (PyTorch grads), \(worstE2E) (idx grads); grad norm \(total) vs \(refTotal)")
        XCTAssertLessThanOrEqual(worstE2E, 1e-5)
    }
}
