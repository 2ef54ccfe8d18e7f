import XCTest
@testable import IdxModel

/// Every layer's backward against central finite differences of a scalar loss
/// L = Σ out · R (R fixed random), evaluated in Double.
final class LayerTests: XCTestCase {
    var rng = SplitMix64(state: 7)
    func randoms(_ n: Int, _ scale: Float = 1) -> [Float] { (0 ..< n).map { _ in Float(rng.nextDouble() * 2 - 1) * scale } }
    func dot(_ a: [Float], _ b: [Float]) -> Double { zip(a, b).reduce(0.0) { $0 + Double($1.0) * Double($1.1) } }

    /// Checks analytic gradient `ana` of `loss` w.r.t. `x` at every index (or `indices`).
    func checkGradient(_ name: String, _ x: inout [Float], _ ana: [Float], eps: Float = 1e-2, tol: Double = 2e-3,
                       indices: [Int]? = nil, _ loss: ([Float]) -> Double) {
        var worst = 0.0
        for i in indices ?? Array(0 ..< x.count) {
            let saved = x[i]
            x[i] = saved + eps; let lp = loss(x)
            x[i] = saved - eps; let lm = loss(x)
            x[i] = saved
            let num = (lp - lm) / (2 * Double(eps))
            let err = abs(num - Double(ana[i])) / max(1, abs(num))
            worst = max(worst, err)
            XCTAssertLessThan(err, tol, "\(name)[\(i)]: numeric \(num) analytic \(ana[i])")
        }
        XCTAssertGreaterThan(ana.map { abs($0) }.max() ?? 0, 0, "\(name): gradient is all zero")
    }

    func testLinearBackward() {
        let n = 5, i = 7, o = 6
        var x = randoms(n * i), w = randoms(o * i), b = randoms(o)
        let r = randoms(n * o)
        func loss(_ x: [Float], _ w: [Float], _ b: [Float]) -> Double {
            var out = [Float](repeating: 0, count: n * o)
            linearForward(&out, x, w, b, n, i, o)
            return dot(out, r)
        }
        var dx = [Float](repeating: 0, count: n * i), dw = [Float](repeating: 0, count: o * i), db = [Float](repeating: 0, count: o)
        linearBackward(&dx, &dw, &db, r, x, w, n, i, o)
        checkGradient("x", &x, dx) { loss($0, w, b) }
        checkGradient("w", &w, dw) { loss(x, $0, b) }
        checkGradient("b", &b, db) { loss(x, w, $0) }
    }

    func testLayerNormBackward() {
        let n = 4, c = 16
        var x = randoms(n * c, 2), w = randoms(c), b = randoms(c)
        let r = randoms(n * c)
        func loss(_ x: [Float], _ w: [Float], _ b: [Float]) -> Double {
            var out = [Float](repeating: 0, count: n * c), m = [Float](repeating: 0, count: n), s = m
            layerNormForward(&out, &m, &s, x, w, b, n, c)
            return dot(out, r)
        }
        var out = [Float](repeating: 0, count: n * c), m = [Float](repeating: 0, count: n), s = m
        layerNormForward(&out, &m, &s, x, w, b, n, c)
        var dx = [Float](repeating: 0, count: n * c), dw = [Float](repeating: 0, count: c), db = dw
        layerNormBackward(&dx, &dw, &db, r, x, w, m, s, n, c)
        checkGradient("x", &x, dx, eps: 1e-2, tol: 5e-3) { loss($0, w, b) }
        checkGradient("w", &w, dw) { loss(x, $0, b) }
        checkGradient("b", &b, db) { loss(x, w, $0) }
    }

    func testEmbeddingBackward() {
        let v = 9, p = 6, c = 4
        let tokens: [Int32] = [2, 5, 5, 3, 2, 8, 3], positions: [Int32] = [0, 1, 2, 3, 0, 1, 2]
        let n = tokens.count
        var tw = randoms(v * c), pw = randoms(p * c)
        let r = randoms(n * c)
        func loss(_ tw: [Float], _ pw: [Float]) -> Double {
            var out = [Float](repeating: 0, count: n * c)
            embeddingForward(&out, tokens, positions, tw, pw, n, c)
            return dot(out, r)
        }
        var dtw = [Float](repeating: 0, count: v * c), dpw = [Float](repeating: 0, count: p * c)
        embeddingBackward(&dtw, &dpw, r, tokens, positions, n, c)
        checkGradient("tok", &tw, dtw) { loss($0, pw) }
        checkGradient("pos", &pw, dpw) { loss(tw, $0) }
    }

    func testReluDropoutAndResidualBackward() {
        let n = 40
        var pre = randoms(n)
        let mask: [Float] = (0 ..< n).map { $0 % 3 == 0 ? 0 : 1 / 0.9 }
        let r = randoms(n)
        func loss(_ pre: [Float]) -> Double {
            var act = [Float](repeating: 0, count: n), m = mask
            reluDropoutForward(&act, pre, &m, n)
            return dot(act, r)
        }
        var act = [Float](repeating: 0, count: n), folded = mask
        reluDropoutForward(&act, pre, &folded, n)  // folds the ReLU gate into the mask
        var d = r
        reluDropoutBackward(&d, pre, folded, n)
        checkGradient("relu", &pre, d, eps: 1e-3, indices: (0 ..< n).filter { abs(pre[$0]) > 1e-2 }) { loss($0) }

        var x = randoms(n), y = randoms(n)
        func rloss(_ x: [Float], _ y: [Float]) -> Double {
            var out = [Float](repeating: 0, count: n)
            residualForward(&out, x, y, mask, n)
            return dot(out, r)
        }
        var dy = [Float](repeating: 0, count: n)
        residualBackward(&dy, r, mask, n)
        checkGradient("res.x", &x, r) { rloss($0, y) }
        checkGradient("res.y", &y, dy) { rloss(x, $0) }
    }

    /// Two documents of different lengths packed (the key-padding mask), with attention dropout.
    func testAttentionBackward() {
        let c = 8, h = 2, docStart = [0, 3, 8], n = 8
        let probOffset = [0, h * 9, h * 9 + h * 25]
        var qkv = randoms(n * 3 * c)
        let mask: [Float] = (0 ..< probOffset[2]).map { $0 % 5 == 1 ? 0 : 1 / 0.9 }
        let r = randoms(n * c)
        func loss(_ qkv: [Float]) -> Double {
            var out = [Float](repeating: 0, count: n * c), probs = [Float](repeating: 0, count: probOffset[2])
            var scratchF = [Float](repeating: 0, count: 64)
            attentionForward(&out, &probs, mask, qkv, &scratchF, docStart, probOffset, 0 ..< 2, c, h)
            return dot(out, r)
        }
        var out = [Float](repeating: 0, count: n * c), probs = [Float](repeating: 0, count: probOffset[2])
        var scratchF = [Float](repeating: 0, count: 64)
        attentionForward(&out, &probs, mask, qkv, &scratchF, docStart, probOffset, 0 ..< 2, c, h)
        // each probability row sums to 1 over its own document only
        for d in 0 ..< 2 {
            let l = docStart[d + 1] - docStart[d]
            for row in 0 ..< h * l { XCTAssertEqual(probs[probOffset[d] + row * l ..< probOffset[d] + (row + 1) * l].reduce(0, +), 1, accuracy: 1e-5) }
        }
        var dqkv = [Float](repeating: 0, count: n * 3 * c), scratch = [Float](repeating: 0, count: 64)
        attentionBackward(&dqkv, &scratch, r, qkv, probs, mask, docStart, probOffset, 0 ..< 2, c, h)
        checkGradient("qkv", &qkv, dqkv, eps: 1e-2, tol: 3e-3) { loss($0) }
    }

    func testCrossEntropyBackward() {
        let m = 3, v = 7
        var z = randoms(m * v, 3)
        let t: [Int32] = [1, 6, 0]
        func loss(_ z: [Float]) -> Double {
            var zz = z
            return crossEntropyForwardBackward(&zz, t, m, v, gradScale: 1) / Double(m)
        }
        var d = z
        _ = crossEntropyForwardBackward(&d, t, m, v, gradScale: 1 / Float(m))
        // loss equals log-sum-exp minus target logit, in Double
        var ref = 0.0
        for r in 0 ..< m {
            let row = z[r * v ..< (r + 1) * v].map(Double.init)
            ref += Foundation.log(row.map { Foundation.exp($0) }.reduce(0, +)) - row[Int(t[r])]
        }
        XCTAssertEqual(loss(z), ref / Double(m), accuracy: 1e-5)
        checkGradient("logits", &z, d, eps: 1e-2) { loss($0) }
    }

    /// The whole network (embeddings, 2 layers, LM head at selected rows, dropout on)
    /// against finite differences at sampled parameters of every tensor.
    func testNetworkBackward() {
        let cfg = ModelConfig(vocabSize: 11, dModel: 8, nHeads: 2, nLayers: 2, dFF: 12, maxLen: 6, dropout: 0.1)
        let net = EncoderNetwork(config: cfg)
        net.initialize(seed: 3)
        var batch = PackedBatch()
        batch.append(document: [2, 7, 4, 9, 3])
        batch.append(document: [2, 5, 3])
        batch.selectedRows = [1, 2, 6]
        batch.targets = [8, 6, 10]
        batch.dropoutSeeds = [11, 12]
        func loss() -> Double {
            net.forward(batch, training: true)
            net.grads.zero(net.parameterCount)
            return net.backward(batch, globalSelectedCount: 3) / 3
        }
        _ = loss()
        let ana = Array(net.gradients)
        var worst = 0.0
        for slot in net.layout.slots {
            for k in stride(from: 0, to: slot.count, by: max(1, slot.count / 5)) {
                let i = slot.offset + k
                let saved = net.params.ptr[i], eps: Float = 1e-2
                net.params.ptr[i] = saved + eps; let lp = loss()
                net.params.ptr[i] = saved - eps; let lm = loss()
                net.params.ptr[i] = saved
                let num = (lp - lm) / (2 * Double(eps))
                let err = abs(num - Double(ana[i])) / max(0.05, abs(num))
                worst = max(worst, err)
                XCTAssertLessThan(err, 2e-2, "\(slot.name)[\(k)]: numeric \(num) analytic \(ana[i])")
            }
        }
        XCTAssertEqual(net.layout.slots.count, 4 + 12 * 2)
    }

    /// The softmax's vector exp against expf: within 2 ulp over the range softmax sees (and more),
    /// and the fused exp-and-sum equal to the sum of the parts.
    func testVectorExpMatchesExpf() {
        var worst: Float = 0
        var x: Float = -87
        while x <= 88 {
            let lanes = SIMD8<Float>((0 ..< 8).map { x + Float($0) * 0.0137 })
            let y = expSIMD(lanes)
            for k in 0 ..< 8 where lanes[k] <= 88 {
                let ref = expf(lanes[k])
                worst = max(worst, abs(y[k] - ref) / ref.ulp)
            }
            x += 0.1
        }
        XCTAssertLessThanOrEqual(worst, 2, "largest error in ulp")
        var row: [Float] = (0 ..< 37).map { Float($0 % 11) * 0.7 - 3 }
        let copy = row
        let mx = row.withUnsafeBufferPointer { maxValue($0.baseAddress!, $0.count) }
        XCTAssertEqual(mx, copy.max()!)
        let sum = row.withUnsafeMutableBufferPointer { expShiftedInPlace($0.baseAddress!, $0.count, shift: mx) }
        for (a, b) in zip(row, copy) { XCTAssertEqual(a, expf(b - mx), accuracy: 2 * expf(b - mx).ulp) }
        XCTAssertEqual(sum, row.reduce(0, +), accuracy: 1e-5 * sum)
    }

    func testParameterCountMatchesReference() {
        XCTAssertEqual(ParameterLayout(ModelConfig(vocabSize: 2000)).count, 919_632)
    }
}
