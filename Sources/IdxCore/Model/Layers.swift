import COpenBLAS
import Foundation

// The encoder's layers, each a forward/backward pair of plain functions over
// flat row-major buffers (llm.c style). Rows are the packed tokens of a batch:
// N = total non-pad tokens, C = d_model, F = d_ff, H = heads, D = C / H.
// Backward functions ACCUMULATE into parameter gradients (dw, db) and, where
// noted, into input gradients.

typealias FPtr = UnsafeMutablePointer<Float>
typealias CFPtr = UnsafePointer<Float>

// MARK: - Embedding

/// out[N, C] = tokW[tokens[r]] + posW[positions[r]]
func embeddingForward(_ out: FPtr, _ tokens: UnsafePointer<Int32>, _ positions: UnsafePointer<Int32>,
                      _ tokW: CFPtr, _ posW: CFPtr, _ n: Int, _ c: Int) {
    for r in 0 ..< n {
        let o = out + r * c, t = tokW + Int(tokens[r]) * c, p = posW + Int(positions[r]) * c
        for i in 0 ..< c { o[i] = t[i] + p[i] }
    }
}

/// dtokW[tokens[r]] += dout[r]; dposW[positions[r]] += dout[r]
func embeddingBackward(_ dtokW: FPtr, _ dposW: FPtr, _ dout: CFPtr, _ tokens: UnsafePointer<Int32>,
                       _ positions: UnsafePointer<Int32>, _ n: Int, _ c: Int) {
    for r in 0 ..< n {
        let d = dout + r * c, t = dtokW + Int(tokens[r]) * c, p = dposW + Int(positions[r]) * c
        for i in 0 ..< c { t[i] += d[i]; p[i] += d[i] }
    }
}

// MARK: - LayerNorm

/// out[N, C] = (inp - mean) * rstd * w + b, per row; saves mean[N], rstd[N].
func layerNormForward(_ out: FPtr, _ mean: FPtr, _ rstd: FPtr, _ inp: CFPtr, _ w: CFPtr, _ b: CFPtr,
                      _ n: Int, _ c: Int, eps: Float = 1e-5) {
    for r in 0 ..< n {
        let x = inp + r * c, o = out + r * c
        var s: Float = 0
        for i in 0 ..< c { s += x[i] }
        let m = s / Float(c)
        var v: Float = 0
        for i in 0 ..< c { let d = x[i] - m; v += d * d }
        let rs = 1 / (v / Float(c) + eps).squareRoot()
        for i in 0 ..< c { o[i] = (x[i] - m) * rs * w[i] + b[i] }
        mean[r] = m; rstd[r] = rs
    }
}

/// dinp[N, C] = (overwritten) gradient of the input; dw, db accumulate.
func layerNormBackward(_ dinp: FPtr, _ dw: FPtr, _ db: FPtr, _ dout: CFPtr, _ inp: CFPtr, _ w: CFPtr,
                       _ mean: CFPtr, _ rstd: CFPtr, _ n: Int, _ c: Int) {
    for r in 0 ..< n {
        let x = inp + r * c, d = dout + r * c, di = dinp + r * c
        let m = mean[r], rs = rstd[r]
        var dnMean: Float = 0, dnNormMean: Float = 0
        for i in 0 ..< c {
            let norm = (x[i] - m) * rs
            let dn = w[i] * d[i]
            dnMean += dn; dnNormMean += dn * norm
        }
        dnMean /= Float(c); dnNormMean /= Float(c)
        for i in 0 ..< c {
            let norm = (x[i] - m) * rs
            let dn = w[i] * d[i]
            db[i] += d[i]
            dw[i] += norm * d[i]
            di[i] = (dn - dnMean - norm * dnNormMean) * rs
        }
    }
}

// MARK: - Linear

/// out[N, OUT] = inp[N, IN] · w[OUT, IN]ᵀ + bias[OUT]  (PyTorch's Linear layout)
func linearForward(_ out: FPtr, _ inp: CFPtr, _ w: CFPtr, _ bias: CFPtr, _ n: Int, _ inDim: Int, _ outDim: Int) {
    if n == 0 { return }
    for r in 0 ..< n { (out + r * outDim).update(from: bias, count: outDim) }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(n), Int32(outDim), Int32(inDim),
                1, inp, Int32(inDim), w, Int32(inDim), 1, out, Int32(outDim))
}

/// dinp[N, IN] (= or += when `accumulate`) dout · w; dw[OUT, IN] += doutᵀ · inp; db += Σ rows dout.
func linearBackward(_ dinp: FPtr?, _ dw: FPtr, _ db: FPtr, _ dout: CFPtr, _ inp: CFPtr, _ w: CFPtr,
                    _ n: Int, _ inDim: Int, _ outDim: Int, accumulate: Bool = false) {
    if n == 0 { return }
    if let dinp {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(n), Int32(inDim), Int32(outDim),
                    1, dout, Int32(outDim), w, Int32(inDim), accumulate ? 1 : 0, dinp, Int32(inDim))
    }
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(outDim), Int32(inDim), Int32(n),
                1, dout, Int32(outDim), inp, Int32(inDim), 1, dw, Int32(inDim))
    for r in 0 ..< n {
        let d = dout + r * outDim
        for j in 0 ..< outDim { db[j] += d[j] }
    }
}

// MARK: - ReLU + dropout (the FFN's middle), residual + dropout

/// act[N*F] = relu(pre) * mask  (mask nil = no dropout; mask holds 0 or 1/(1-p))
func reluDropoutForward(_ act: FPtr, _ pre: CFPtr, _ mask: CFPtr?, _ count: Int) {
    if let mask {
        for i in 0 ..< count { act[i] = max(pre[i], 0) * mask[i] }
    } else {
        for i in 0 ..< count { act[i] = max(pre[i], 0) }
    }
}

/// dpre = dact * mask * (pre > 0), in place over dact.
func reluDropoutBackward(_ d: FPtr, _ pre: CFPtr, _ mask: CFPtr?, _ count: Int) {
    if let mask {
        for i in 0 ..< count { d[i] = pre[i] > 0 ? d[i] * mask[i] : 0 }
    } else {
        for i in 0 ..< count { d[i] = pre[i] > 0 ? d[i] : 0 }
    }
}

/// out = x + y * mask  (mask nil = no dropout)
func residualForward(_ out: FPtr, _ x: CFPtr, _ y: CFPtr, _ mask: CFPtr?, _ count: Int) {
    if let mask {
        for i in 0 ..< count { out[i] = x[i] + y[i] * mask[i] }
    } else {
        for i in 0 ..< count { out[i] = x[i] + y[i] }
    }
}

/// Gradient through `out = x + y * mask`: dx = dout (the caller reuses dout), dy = dout * mask.
func residualBackward(_ dy: FPtr, _ dout: CFPtr, _ mask: CFPtr?, _ count: Int) {
    if let mask {
        for i in 0 ..< count { dy[i] = dout[i] * mask[i] }
    } else {
        dy.update(from: dout, count: count)
    }
}

// MARK: - Multi-head self-attention core (between in_proj and out_proj)

/// Packed documents: document d is rows docStart[d] ..< docStart[d+1]; a row attends
/// only to rows of its own document, which is exactly PyTorch's key-padding mask
/// over a padded batch (padded keys get probability 0, padded queries are dropped).
/// qkv[N, 3C] (q | k | v, head h at columns h*D ..< (h+1)*D of each part);
/// out[N, C]; probs: per document H·L·L softmax probabilities at probOffset[d];
/// mask: the same layout, attention dropout (nil = none).
func attentionForward(_ out: FPtr, _ probs: FPtr, _ mask: CFPtr?, _ qkv: CFPtr,
                      _ docStart: UnsafePointer<Int>, _ probOffset: UnsafePointer<Int>, _ docs: Range<Int>,
                      _ c: Int, _ h: Int) {
    let d = c / h, c3 = 3 * c
    let scale = 1 / Float(d).squareRoot()
    for doc in docs {
        let s = docStart[doc], l = docStart[doc + 1] - s
        for head in 0 ..< h {
            let pBase = probs + probOffset[doc] + head * l * l
            let mBase = mask.map { $0 + probOffset[doc] + head * l * l }
            for i in 0 ..< l {
                let q = qkv + (s + i) * c3 + head * d
                let p = pBase + i * l
                var mx = -Float.infinity
                for j in 0 ..< l {
                    let k = qkv + (s + j) * c3 + c + head * d
                    var dot: Float = 0
                    for e in 0 ..< d { dot += q[e] * k[e] }
                    dot *= scale
                    p[j] = dot
                    mx = max(mx, dot)
                }
                var sum: Float = 0
                for j in 0 ..< l { let e = expf(p[j] - mx); p[j] = e; sum += e }
                let inv = 1 / sum
                for j in 0 ..< l { p[j] *= inv }
                let o = out + (s + i) * c + head * d
                for e in 0 ..< d { o[e] = 0 }
                for j in 0 ..< l {
                    var pj = p[j]
                    if let mBase { pj *= mBase[i * l + j] }
                    if pj == 0 { continue }
                    let v = qkv + (s + j) * c3 + 2 * c + head * d
                    for e in 0 ..< d { o[e] += pj * v[e] }
                }
            }
        }
    }
}

/// dqkv[N, 3C] (overwritten for the rows of `docs`) from dout[N, C].
/// scratch: at least L floats for the longest document.
func attentionBackward(_ dqkv: FPtr, _ scratch: FPtr, _ dout: CFPtr, _ qkv: CFPtr, _ probs: CFPtr, _ mask: CFPtr?,
                       _ docStart: UnsafePointer<Int>, _ probOffset: UnsafePointer<Int>, _ docs: Range<Int>,
                       _ c: Int, _ h: Int) {
    let d = c / h, c3 = 3 * c
    let scale = 1 / Float(d).squareRoot()
    for doc in docs {
        let s = docStart[doc], l = docStart[doc + 1] - s
        for r in s ..< s + l { (dqkv + r * c3).update(repeating: 0, count: c3) }
        for head in 0 ..< h {
            let pBase = probs + probOffset[doc] + head * l * l
            let mBase = mask.map { $0 + probOffset[doc] + head * l * l }
            for i in 0 ..< l {
                let p = pBase + i * l
                let dO = dout + (s + i) * c + head * d
                let dp = scratch
                // dp[j] = dO · v_j (through the dropout), dv_j += p'_j dO
                var dot: Float = 0
                for j in 0 ..< l {
                    let v = qkv + (s + j) * c3 + 2 * c + head * d
                    let dv = dqkv + (s + j) * c3 + 2 * c + head * d
                    let m: Float = mBase?[i * l + j] ?? 1
                    var g: Float = 0
                    for e in 0 ..< d { g += dO[e] * v[e] }
                    let pd = p[j] * m
                    if pd != 0 { for e in 0 ..< d { dv[e] += pd * dO[e] } }
                    dp[j] = g * m
                    dot += dp[j] * p[j]
                }
                // softmax backward, then the scaled dot product
                let q = qkv + (s + i) * c3 + head * d
                let dq = dqkv + (s + i) * c3 + head * d
                for j in 0 ..< l {
                    let ds = p[j] * (dp[j] - dot) * scale
                    if ds == 0 { continue }
                    let k = qkv + (s + j) * c3 + c + head * d
                    let dk = dqkv + (s + j) * c3 + c + head * d
                    for e in 0 ..< d { dq[e] += ds * k[e]; dk[e] += ds * q[e] }
                }
            }
        }
    }
}

// MARK: - LM head cross-entropy (fused softmax)

/// logits[M, V] in place become dlogits = (softmax - onehot) * gradScale; returns Σ loss (Double).
func crossEntropyForwardBackward(_ logits: FPtr, _ targets: UnsafePointer<Int32>, _ m: Int, _ v: Int,
                                 gradScale: Float) -> Double {
    var total = 0.0
    for r in 0 ..< m {
        let z = logits + r * v
        var mx = -Float.infinity
        for j in 0 ..< v { mx = max(mx, z[j]) }
        let t = Int(targets[r])
        let zt = z[t]
        var sum: Float = 0
        for j in 0 ..< v { let e = expf(z[j] - mx); z[j] = e; sum += e }
        total += Double(logf(sum) + mx - zt)  // logsumexp - z_target
        let inv = 1 / sum
        for j in 0 ..< v { z[j] *= inv * gradScale }
        z[t] -= gradScale
    }
    return total
}

