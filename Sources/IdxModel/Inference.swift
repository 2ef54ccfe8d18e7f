import COpenBLAS
import CSupport
import Foundation
import IdxCorpus

/// The inference-only forward behind `EncoderModel.embed`: the encoder over packed
/// documents without dropout, without saved activations and without gradients, with
/// mean pooling. It needs five activation buffers (N×C ×3, N×3C, N×F) instead of the
/// training network's ~15 per layer, and fuses what the training forward does in
/// separate passes: the residual and the bias are written first and the GEMM adds
/// onto them (β = 1); LayerNorm runs in place; the kernels use explicit SIMD.
/// Numerically it computes the same function as `EncoderNetwork.forward(training: false)`
/// (PyTorch's eval-mode encoder), with different rounding (≈1e-7).
/// Not thread-safe: one per thread; the parameters are shared and read-only.
final class InferenceEncoder {
    let cfg: ModelConfig
    let layout: ParameterLayout
    let params: UnsafePointer<Float>
    let transposed: TransposedWeights
    private var capacity = 0
    private var x: UnsafeMutablePointer<Float>, y: UnsafeMutablePointer<Float>, att: UnsafeMutablePointer<Float>
    private var qkv: UnsafeMutablePointer<Float>, hid: UnsafeMutablePointer<Float>
    private let scores: UnsafeMutablePointer<Float>
    private var tokens: [Int32] = [], positions: [Int32] = [], docStart: [Int] = [0]

    init(config: ModelConfig, layout: ParameterLayout, parameters: UnsafePointer<Float>, transposed: TransposedWeights) {
        cfg = config; self.layout = layout; params = parameters; self.transposed = transposed
        x = .allocate(capacity: 1); y = .allocate(capacity: 1); att = .allocate(capacity: 1)
        qkv = .allocate(capacity: 1); hid = .allocate(capacity: 1)
        scores = .allocate(capacity: config.maxLen * ((config.maxLen + 7) / 8 * 8))
    }

    deinit { for p in [x, y, att, qkv, hid, scores] { p.deallocate() } }

    private func ensure(rows n: Int) {
        guard n > capacity else { return }
        for p in [x, y, att, qkv, hid] { p.deallocate() }
        capacity = n + n / 4
        let c = cfg.dModel
        x = .allocate(capacity: capacity * c); y = .allocate(capacity: capacity * c); att = .allocate(capacity: capacity * c)
        qkv = .allocate(capacity: capacity * 3 * c); hid = .allocate(capacity: capacity * cfg.dFF)
    }

    /// Embeds documents `range` of `corpus` ([BOS] ids [EOS], cut to `maxTokens`), `batchSize`
    /// documents per forward, into `out` (range.count × dModel).
    /// `rowwise`: every linear layer through `idx_sgemm_rows`, whatever the batch's size, so that a
    /// document's vector does not depend on the batch it is in (queries: one alone or batched
    /// with others must score alike); otherwise only batches of at most `smallRows` rows.
    func embed(_ corpus: TokenizedCorpus, range: Range<Int>, maxTokens: Int, batchSize: Int, rowwise: Bool = false,
               into out: UnsafeMutablePointer<Float>) {
        let cut = max(2, min(maxTokens, cfg.maxLen))
        var start = range.lowerBound
        while start < range.upperBound {
            let end = min(start + max(1, batchSize), range.upperBound)
            tokens.removeAll(keepingCapacity: true); positions.removeAll(keepingCapacity: true)
            docStart.removeAll(keepingCapacity: true); docStart.append(0)
            for d in start ..< end {
                // wrapDocument's contract: [BOS] ids [EOS], cut to `cut` (a long document loses its [EOS]).
                let ids = corpus.document(d).prefix(cut - 1)
                tokens.append(SpecialToken.bos); tokens.append(contentsOf: ids)
                if ids.count + 1 < cut { tokens.append(SpecialToken.eos) }
                for p in 0 ..< tokens.count - docStart[docStart.count - 1] { positions.append(Int32(p)) }
                docStart.append(tokens.count)
            }
            forward(rowwise: rowwise)
            pool(into: out + (start - range.lowerBound) * cfg.dModel)
            start = end
        }
    }

    /// Pooled embeddings of sequences given as the model sees them (specials included), one batch.
    func embed(sequences: [[Int32]]) -> [Float] {
        tokens = sequences.flatMap { $0 }
        positions = sequences.flatMap { (0 ..< $0.count).map { Int32($0) } }
        docStart = [0]
        for s in sequences { docStart.append(docStart[docStart.count - 1] + s.count) }
        forward(rowwise: false)
        var out = [Float](repeating: 0, count: sequences.count * cfg.dModel)
        out.withUnsafeMutableBufferPointer { pool(into: $0.baseAddress!) }
        return out
    }

    /// The encoder over `tokens`/`positions`/`docStart`; the final hidden states end in `x`.
    private func forward(rowwise: Bool) {
        let n = tokens.count, c = cfg.dModel, f = cfg.dFF, h = cfg.nHeads
        ensure(rows: n)
        let p = params
        let rowwise = rowwise || n <= Self.smallRows
        let tokW = p + layout.tokEmb, posW = p + layout.posEmb
        tokens.withUnsafeBufferPointer { tk in
            positions.withUnsafeBufferPointer { ps in
                for r in 0 ..< n { add(x + r * c, tokW + Int(tk[r]) * c, posW + Int(ps[r]) * c, c) }
            }
        }
        // The transposed weights only when a layer takes them (made on first use).
        let transposedLayers = rowwise ? transposed.layers : nil
        for (l, L) in layout.layers.enumerated() {
            let T = transposedLayers?[l]
            // qkv = x W_inᵀ + b_in
            broadcastRows(qkv, p + L.inProjB, n, 3 * c)
            linear(qkv, x, rows: n, in: c, out: 3 * c, weight: p + L.inProjW, transposed: T?.inProj)
            docStart.withUnsafeBufferPointer { attention($0, c, h) }
            // y = LayerNorm1(x + att W_outᵀ + b_out)
            addRows(y, x, p + L.outProjB, n, c)
            linear(y, att, rows: n, in: c, out: c, weight: p + L.outProjW, transposed: T?.outProj)
            layerNorm(y, p + L.norm1W, p + L.norm1B, n, c)
            // hid = relu(y W1ᵀ + b1)
            broadcastRows(hid, p + L.lin1B, n, f)
            linear(hid, y, rows: n, in: c, out: f, weight: p + L.lin1W, transposed: T?.lin1)
            relu(hid, n * f)
            // x = LayerNorm2(y + hid W2ᵀ + b2)
            addRows(x, y, p + L.lin2B, n, c)
            linear(x, hid, rows: n, in: f, out: c, weight: p + L.lin2W, transposed: T?.lin2)
            layerNorm(x, p + L.norm2W, p + L.norm2B, n, c)
        }
    }

    /// Rows up to which a linear layer runs `idx_sgemm_rows` over the transposed weight: a
    /// query's tokens, where OpenBLAS would spend most of its time packing the weight.
    static let smallRows = 64

    /// out (rows × out) += inp (rows × in) · weightᵀ, the weight stored PyTorch's way (out × in);
    /// Given the transposed copy: through it, one row at a time (each row's result independent of the others).
    private func linear(_ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>, rows n: Int, in k: Int, out m: Int,
                        weight: UnsafePointer<Float>, transposed wt: UnsafePointer<Float>?) {
        if let wt {
            idx_sgemm_rows(n, m, k, inp, k, wt, m, out, m)
        } else {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(n), Int32(m), Int32(k), 1, inp, Int32(k), weight, Int32(k), 1, out, Int32(m))
        }
    }

    /// Per document and head: softmax(scale · Q Kᵀ) V into `att` (key-padding masking is the packing).
    /// The L × L scores are stored with rows padded to a multiple of 8 columns, the padding set
    /// to -inf (the GEMMs never read or write it), so the softmax runs in whole SIMD8 chunks.
    private func attention(_ ds: UnsafeBufferPointer<Int>, _ c: Int, _ h: Int) {
        let d = c / h, c3 = Int32(3 * c), d32 = Int32(d)
        let scale = 1 / Float(d).squareRoot()
        for doc in 0 ..< ds.count - 1 {
            let s = ds[doc], l = ds[doc + 1] - s, l32 = Int32(l)
            let lp = (l + 7) / 8 * 8, lp32 = Int32(lp)
            for head in 0 ..< h {
                let q = qkv + s * 3 * c + head * d, k = q + c, v = q + 2 * c
                // (the softmax turns the padding into zeros: reset it for every head)
                if lp > l { for i in 0 ..< l { (scores + i * lp + l).update(repeating: -.infinity, count: lp - l) } }
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, l32, l32, d32, scale, q, c3, k, c3, 0, scores, lp32)
                for i in 0 ..< l { softmaxRow(scores + i * lp, lp) }
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, l32, d32, l32, 1, scores, lp32, v, c3, 0,
                            att + s * c + head * d, Int32(c))
            }
        }
    }

    /// Mean of each document's rows of `x` (sums in double, as `meanPool`).
    private func pool(into out: UnsafeMutablePointer<Float>) {
        let c = cfg.dModel
        var acc = [Double](repeating: 0, count: c)
        for doc in 0 ..< docStart.count - 1 {
            let a = docStart[doc], b = docStart[doc + 1]
            for k in 0 ..< c { acc[k] = 0 }
            for r in a ..< b {
                let row = x + r * c
                for k in 0 ..< c { acc[k] += Double(row[k]) }
            }
            let inv = 1 / Double(max(b - a, 1))
            for k in 0 ..< c { out[doc * c + k] = Float(acc[k] * inv) }
        }
    }
}

/// Each layer's four weight matrices transposed (in × out, row-major), for `idx_sgemm_rows`:
/// made on first use, once per loaded model, and shared, read-only, by all its encoders
/// (commands that embed only whole batches of documents never make them).
final class TransposedWeights: @unchecked Sendable {
    struct Layer { let inProj, outProj, lin1, lin2: UnsafePointer<Float> }
    private let config: ModelConfig, layout: ParameterLayout, parameters: UnsafePointer<Float>
    private let lock = NSLock()
    private var buffer: FloatBuffer?, built: [Layer]?

    init(config: ModelConfig, layout: ParameterLayout, parameters: UnsafePointer<Float>) {
        self.config = config; self.layout = layout; self.parameters = parameters
    }

    var layers: [Layer] {
        lock.withLock {
            if let built { return built }
            let layers = make()
            built = layers
            return layers
        }
    }

    private func make() -> [Layer] {
        let cfg = config, p = parameters
        let c = cfg.dModel, f = cfg.dFF
        let perLayer = 3 * c * c + c * c + f * c + c * f
        let buffer = FloatBuffer(max(1, perLayer * layout.layers.count))
        self.buffer = buffer
        let base = buffer.ptr
        var offset = 0
        // `rows` × `cols` at `src` into `cols` × `rows` at the next free place.
        func transpose(_ src: UnsafePointer<Float>, rows: Int, cols: Int) -> UnsafePointer<Float> {
            let dst = base + offset
            for r in 0 ..< rows { for k in 0 ..< cols { dst[k * rows + r] = src[r * cols + k] } }
            offset += rows * cols
            return UnsafePointer(dst)
        }
        return layout.layers.map { L in
            Layer(inProj: transpose(p + L.inProjW, rows: 3 * c, cols: c), outProj: transpose(p + L.outProjW, rows: c, cols: c),
                  lin1: transpose(p + L.lin1W, rows: f, cols: c), lin2: transpose(p + L.lin2W, rows: c, cols: f))
        }
    }
}

// MARK: - kernels (explicit SIMD8: Swift does not vectorise a float reduction itself)

private typealias V8 = SIMD8<Float>

@inline(__always) private func load8(_ p: UnsafePointer<Float>, _ i: Int) -> V8 {
    UnsafeRawPointer(p).loadUnaligned(fromByteOffset: 4 * i, as: V8.self)
}
@inline(__always) private func store8(_ p: UnsafeMutablePointer<Float>, _ i: Int, _ v: V8) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, toByteOffset: 4 * i, as: V8.self)
}

/// o = a + b
@inline(__always) private func add(_ o: UnsafeMutablePointer<Float>, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ c: Int) {
    var i = 0
    while i + 8 <= c { store8(o, i, load8(a, i) + load8(b, i)); i += 8 }
    while i < c { o[i] = a[i] + b[i]; i += 1 }
}

/// Every row of out[n, c] = bias.
private func broadcastRows(_ out: UnsafeMutablePointer<Float>, _ bias: UnsafePointer<Float>, _ n: Int, _ c: Int) {
    for r in 0 ..< n { (out + r * c).update(from: bias, count: c) }
}

/// out[r] = inp[r] + bias (the residual and the bias, onto which the GEMM adds).
private func addRows(_ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>, _ bias: UnsafePointer<Float>, _ n: Int, _ c: Int) {
    for r in 0 ..< n { add(out + r * c, inp + r * c, bias, c) }
}

private func relu(_ x: UnsafeMutablePointer<Float>, _ count: Int) {
    var i = 0
    while i + 8 <= count { let v = load8(x, i); store8(x, i, v.replacing(with: 0, where: v .< 0)); i += 8 }
    while i < count { x[i] = max(x[i], 0); i += 1 }
}

/// In-place LayerNorm of each row (eps 1e-5, biased variance, as PyTorch).
private func layerNorm(_ x: UnsafeMutablePointer<Float>, _ w: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int, _ c: Int) {
    let invC = 1 / Float(c)
    for r in 0 ..< n {
        let o = x + r * c
        var s0 = V8(), s1 = V8(), i = 0
        while i + 16 <= c { s0 += load8(o, i); s1 += load8(o, i + 8); i += 16 }
        var m = (s0 + s1).sum()
        while i < c { m += o[i]; i += 1 }
        m *= invC
        let mv = V8(repeating: m)
        var q0 = V8(), q1 = V8()
        i = 0
        while i + 16 <= c {
            let a = load8(o, i) - mv, e = load8(o, i + 8) - mv
            store8(o, i, a); store8(o, i + 8, e)
            q0 += a * a; q1 += e * e; i += 16
        }
        var v = (q0 + q1).sum()
        while i < c { o[i] -= m; v += o[i] * o[i]; i += 1 }
        let rs = 1 / (v * invC + 1e-5).squareRoot()
        let rv = V8(repeating: rs)
        i = 0
        while i + 8 <= c { store8(o, i, load8(o, i) * rv * load8(w, i) + load8(b, i)); i += 8 }
        while i < c { o[i] = o[i] * rs * w[i] + b[i]; i += 1 }
    }
}

/// e^x for x ≤ 0 (softmax arguments once the row's max is subtracted), 8 lanes at a time:
/// Cephes' expf (x = k ln2 + r with k = round(x / ln2) by the 1.5·2²³ trick, degree-6
/// polynomial in r, 2^k through the exponent bits), relative error ≈ 1e-7 like libm's;
/// arguments below -87 (and -inf) give 0. Float and integer SIMD operations only: the
/// generic SIMD conversions and roundings are not specialised and cost far more.
@inline(__always) private func exp8(_ x0: V8) -> V8 {
    let x = x0.replacing(with: -87, where: x0 .< -87)
    let magic = V8(repeating: 12_582_912)                       // 1.5 · 2²³
    let t = x * 1.44269504088896341 + magic                     // low mantissa bits = round(x / ln2)
    let k = t - magic
    var r = x - k * 0.693359375
    r = r - k * -2.12194440e-4
    var p = V8(repeating: 1.9875691500e-4)
    p = p * r + 1.3981999507e-3
    p = p * r + 8.3334519073e-3
    p = p * r + 4.1665795894e-2
    p = p * r + 1.6666665459e-1
    p = p * r + 5.0000001201e-1
    p = p * (r * r) + r + 1
    let kBits = unsafeBitCast(t, to: SIMD8<Int32>.self) &- 0x4B40_0000  // k, in [-126, 0]
    let scale = unsafeBitCast((kBits &+ 127) &<< 23, to: V8.self)
    return (p * scale).replacing(with: 0, where: x0 .< -87)
}

/// In-place softmax of one row of `l` scores (the tail of the row is padded with -inf).
@inline(__always) private func softmaxRow(_ row: UnsafeMutablePointer<Float>, _ l: Int) {
    var mv = V8(repeating: -Float.infinity), j = 0
    while j + 8 <= l { let v = load8(row, j); mv = mv.replacing(with: v, where: v .> mv); j += 8 }
    var mx = mv.max()
    while j < l { if row[j] > mx { mx = row[j] }; j += 1 }
    let m = V8(repeating: mx)
    var acc = V8()
    j = 0
    while j + 8 <= l { let e = exp8(load8(row, j) - m); store8(row, j, e); acc += e; j += 8 }
    if j < l {
        var t = V8(repeating: -Float.infinity)
        for u in 0 ..< l - j { t[u] = row[j + u] }
        let e = exp8(t - m)
        for u in 0 ..< l - j { row[j + u] = e[u] }
        acc += e
    }
    let inv = 1 / acc.sum()
    let iv = V8(repeating: inv)
    j = 0
    while j + 8 <= l { store8(row, j, load8(row, j) * iv); j += 8 }
    while j < l { row[j] *= inv; j += 1 }
}
