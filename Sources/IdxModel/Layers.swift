import COpenBLAS
import Foundation

// The encoder's layers, each a forward/backward pair of plain functions over
// flat row-major buffers (llm.c style). Rows are the packed tokens of a batch:
// N = total non-pad tokens, C = d_model, F = d_ff, H = heads, D = C / H.
// Backward functions ACCUMULATE into parameter gradients (dw, db) and, where
// noted, into input gradients.

public typealias FPtr = UnsafeMutablePointer<Float>
public typealias CFPtr = UnsafePointer<Float>

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
        let m = vectorSum(x, c) / Float(c)
        for i in 0 ..< c { o[i] = x[i] - m }   // centred, then normalised in place
        let rs = 1 / (dotProduct(o, o, c) / Float(c) + eps).squareRoot()
        for i in 0 ..< c { o[i] = o[i] * rs * w[i] + b[i] }
        mean[r] = m; rstd[r] = rs
    }
}

/// dinp[N, C] = (overwritten) gradient of the input; dw, db accumulate.
func layerNormBackward(_ dinp: FPtr, _ dw: FPtr, _ db: FPtr, _ dout: CFPtr, _ inp: CFPtr, _ w: CFPtr,
                       _ mean: CFPtr, _ rstd: CFPtr, _ n: Int, _ c: Int) {
    for r in 0 ..< n {
        let x = inp + r * c, d = dout + r * c, di = dinp + r * c
        let m = mean[r], rs = rstd[r]
        // di holds norm, then the result (dinp never aliases inp or dout here)
        for i in 0 ..< c { di[i] = (x[i] - m) * rs; db[i] += d[i]; dw[i] += di[i] * d[i] }
        let dnMean = dotProduct(w, d, c) / Float(c)
        let dnNormMean = dotProduct3(w, d, di, c) / Float(c)
        for i in 0 ..< c { di[i] = (w[i] * d[i] - dnMean - di[i] * dnNormMean) * rs }
    }
}

// MARK: - Linear

/// out[N, OUT] = inp[N, IN] · w[OUT, IN]ᵀ + bias[OUT]  (PyTorch's Linear layout)
public func linearForward(_ out: FPtr, _ inp: CFPtr, _ w: CFPtr, _ bias: CFPtr, _ n: Int, _ inDim: Int, _ outDim: Int) {
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

/// act[N*F] = relu(pre) * mask  (mask nil = no dropout; mask holds 0 or 1/(1-p)).
/// The mask is folded with the ReLU's gate in place (mask = 0 where pre <= 0), so the
/// backward is one multiply.
func reluDropoutForward(_ act: FPtr, _ pre: CFPtr, _ mask: FPtr?, _ count: Int) {
    if let mask {
        let rp = UnsafeRawPointer(pre), rm = UnsafeMutableRawPointer(mask), ra = UnsafeMutableRawPointer(act)
        var i = 0
        while i + 8 <= count {
            let p = rp.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self)
            let m = rm.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self).replacing(with: 0, where: p .<= 0)
            rm.storeBytes(of: m, toByteOffset: 4 * i, as: SIMD8<Float>.self)
            ra.storeBytes(of: p * m, toByteOffset: 4 * i, as: SIMD8<Float>.self)
            i += 8
        }
        while i < count { let m = pre[i] > 0 ? mask[i] : 0; mask[i] = m; act[i] = pre[i] * m; i += 1 }
    } else {
        for i in 0 ..< count { act[i] = max(pre[i], 0) }
    }
}

/// dpre = dact * mask (mask folded with the gate by the forward), in place over dact.
func reluDropoutBackward(_ d: FPtr, _ pre: CFPtr, _ mask: CFPtr?, _ count: Int) {
    if let mask {
        for i in 0 ..< count { d[i] *= mask[i] }
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
/// mask: the same layout, attention dropout (nil = none). Per (document, head) the
/// products are small sgemms (L ≤ 64, D = 32) over strided views of qkv.
/// scratch: at least L·L floats for the longest document.
func attentionForward(_ out: FPtr, _ probs: FPtr, _ mask: CFPtr?, _ qkv: CFPtr, _ scratch: FPtr,
                      _ docStart: UnsafePointer<Int>, _ probOffset: UnsafePointer<Int>, _ docs: Range<Int>,
                      _ c: Int, _ h: Int) {
    let d = c / h, c3 = 3 * c
    let scale = 1 / Float(d).squareRoot()
    for doc in docs {
        let s = docStart[doc], l = docStart[doc + 1] - s
        let l32 = Int32(l), d32 = Int32(d)
        for head in 0 ..< h {
            let p = probs + probOffset[doc] + head * l * l
            let q = qkv + s * c3 + head * d, k = q + c, v = q + 2 * c
            // S = scale · Q Kᵀ  [L, L]
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, l32, l32, d32, scale, q, Int32(c3), k, Int32(c3), 0, p, l32)
            for i in 0 ..< l {
                let row = p + i * l
                let inv = 1 / expShiftedInPlace(row, l, shift: maxValue(row, l))
                for j in 0 ..< l { row[j] *= inv }
            }
            var pd = CFPtr(p)
            if let mask {
                let m = mask + probOffset[doc] + head * l * l
                for x in 0 ..< l * l { scratch[x] = p[x] * m[x] }
                pd = CFPtr(scratch)
            }
            // O = P' V  [L, D]
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, l32, d32, l32, 1, pd, l32, v, Int32(c3), 0,
                        out + s * c + head * d, Int32(c))
        }
    }
}

/// dqkv[N, 3C] (overwritten for the rows of `docs`) from dout[N, C].
/// scratch: at least 2·L·L floats for the longest document.
func attentionBackward(_ dqkv: FPtr, _ scratch: FPtr, _ dout: CFPtr, _ qkv: CFPtr, _ probs: CFPtr, _ mask: CFPtr?,
                       _ docStart: UnsafePointer<Int>, _ probOffset: UnsafePointer<Int>, _ docs: Range<Int>,
                       _ c: Int, _ h: Int) {
    let d = c / h, c3 = 3 * c
    let scale = 1 / Float(d).squareRoot()
    for doc in docs {
        let s = docStart[doc], l = docStart[doc + 1] - s
        let l32 = Int32(l), d32 = Int32(d), ld3 = Int32(c3)
        for head in 0 ..< h {
            let p = probs + probOffset[doc] + head * l * l
            let q = qkv + s * c3 + head * d, k = q + c, v = q + 2 * c
            let dq = dqkv + s * c3 + head * d, dk = dq + c, dv = dq + 2 * c
            let dO = dout + s * c + head * d
            let dp = scratch, pdBuf = scratch + l * l
            var pd = p
            let m = mask.map { $0 + probOffset[doc] + head * l * l }
            if let m {
                for x in 0 ..< l * l { pdBuf[x] = p[x] * m[x] }
                pd = CFPtr(pdBuf)
            }
            // dP' = dO Vᵀ [L, L];  dV = P'ᵀ dO [L, D]
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, l32, l32, d32, 1, dO, Int32(c), v, ld3, 0, dp, l32)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, l32, d32, l32, 1, pd, l32, dO, Int32(c), 0, dv, ld3)
            // through the dropout and the softmax: dS = P ⊙ (dP − Σ_j P dP) · scale
            for i in 0 ..< l {
                let row = p + i * l, g = dp + i * l
                if let m { let mr = m + i * l; for j in 0 ..< l { g[j] *= mr[j] } }
                var dot: Float = 0
                for j in 0 ..< l { dot += g[j] * row[j] }
                for j in 0 ..< l { g[j] = row[j] * (g[j] - dot) * scale }
            }
            // dQ = dS K;  dK = dSᵀ Q
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, l32, d32, l32, 1, dp, l32, k, ld3, 0, dq, ld3)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, l32, d32, l32, 1, dp, l32, q, ld3, 0, dk, ld3)
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
        let mx = maxValue(z, v)
        let t = Int(targets[r])
        let zt = z[t]
        let sum = expShiftedInPlace(z, v, shift: mx)
        total += Double(logf(sum) + mx - zt)  // logsumexp - z_target
        let inv = 1 / sum
        for j in 0 ..< v { z[j] *= inv * gradScale }
        z[t] -= gradScale
    }
    return total
}


// MARK: - small vector kernels (explicit SIMD: Swift does not reorder a float reduction itself)

@inline(__always) public func dotProduct(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
    var acc0 = SIMD8<Float>(), acc1 = SIMD8<Float>()
    let ra = UnsafeRawPointer(a), rb = UnsafeRawPointer(b)
    var e = 0
    while e + 16 <= n {
        acc0 += ra.loadUnaligned(fromByteOffset: 4 * e, as: SIMD8<Float>.self) * rb.loadUnaligned(fromByteOffset: 4 * e, as: SIMD8<Float>.self)
        acc1 += ra.loadUnaligned(fromByteOffset: 4 * e + 32, as: SIMD8<Float>.self) * rb.loadUnaligned(fromByteOffset: 4 * e + 32, as: SIMD8<Float>.self)
        e += 16
    }
    while e + 8 <= n {
        acc0 += ra.loadUnaligned(fromByteOffset: 4 * e, as: SIMD8<Float>.self) * rb.loadUnaligned(fromByteOffset: 4 * e, as: SIMD8<Float>.self)
        e += 8
    }
    var s = (acc0 + acc1).sum()
    while e < n { s += a[e] * b[e]; e += 1 }
    return s
}

/// y += a * x
@inline(__always) func axpy(_ y: UnsafeMutablePointer<Float>, _ a: Float, _ x: UnsafePointer<Float>, _ n: Int) {
    let ry = UnsafeMutableRawPointer(y), rx = UnsafeRawPointer(x)
    var e = 0
    while e + 8 <= n {
        let v = ry.loadUnaligned(fromByteOffset: 4 * e, as: SIMD8<Float>.self) + a * rx.loadUnaligned(fromByteOffset: 4 * e, as: SIMD8<Float>.self)
        ry.storeBytes(of: v, toByteOffset: 4 * e, as: SIMD8<Float>.self)
        e += 8
    }
    while e < n { y[e] += a * x[e]; e += 1 }
}

@inline(__always) func vectorSum(_ a: UnsafePointer<Float>, _ n: Int) -> Float {
    var acc = SIMD8<Float>()
    let ra = UnsafeRawPointer(a)
    var e = 0
    while e + 8 <= n { acc += ra.loadUnaligned(fromByteOffset: 4 * e, as: SIMD8<Float>.self); e += 8 }
    var s = acc.sum()
    while e < n { s += a[e]; e += 1 }
    return s
}

/// Σ a·b·c (SIMD partial sums, like dotProduct).
@inline(__always) func dotProduct3(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ c: UnsafePointer<Float>, _ n: Int) -> Float {
    var acc = SIMD8<Float>()
    let ra = UnsafeRawPointer(a), rb = UnsafeRawPointer(b), rc = UnsafeRawPointer(c)
    var e = 0
    while e + 8 <= n {
        acc += ra.loadUnaligned(fromByteOffset: 4 * e, as: SIMD8<Float>.self) * rb.loadUnaligned(fromByteOffset: 4 * e, as: SIMD8<Float>.self)
            * rc.loadUnaligned(fromByteOffset: 4 * e, as: SIMD8<Float>.self)
        e += 8
    }
    var s = acc.sum()
    while e < n { s += a[e] * b[e] * c[e]; e += 1 }
    return s
}

/// The largest of x[0 ..< n] (n ≥ 1; no NaNs expected).
@inline(__always) func maxValue(_ x: UnsafePointer<Float>, _ n: Int) -> Float {
    let rx = UnsafeRawPointer(x)
    var e = 0, m = -Float.infinity
    if n >= 8 {
        // replacing(with:where:) rather than pointwiseMax/max(), which Swift leaves generic (slow)
        var acc = rx.loadUnaligned(as: SIMD8<Float>.self)
        e = 8
        while e + 8 <= n {
            let y = rx.loadUnaligned(fromByteOffset: 4 * e, as: SIMD8<Float>.self)
            acc = acc.replacing(with: y, where: y .> acc)
            e += 8
        }
        for k in 0 ..< 8 { m = max(m, acc[k]) }
    }
    while e < n { m = max(m, x[e]); e += 1 }
    return m
}

/// x[i] = exp(x[i] - shift) in place; returns Σ of the results. The softmax's inner loop:
/// glibc's expf one element at a time was ~3% of a training step.
@inline(__always) func expShiftedInPlace(_ x: UnsafeMutablePointer<Float>, _ n: Int, shift: Float) -> Float {
    let rx = UnsafeMutableRawPointer(x)
    var acc = SIMD8<Float>()
    var e = 0
    while e + 8 <= n {
        let y = expSIMD(rx.loadUnaligned(fromByteOffset: 4 * e, as: SIMD8<Float>.self) - shift)
        rx.storeBytes(of: y, toByteOffset: 4 * e, as: SIMD8<Float>.self)
        acc += y
        e += 8
    }
    var s = acc.sum()
    while e < n { let y = expSIMD(SIMD8(repeating: x[e] - shift))[0]; x[e] = y; s += y; e += 1 }
    return s
}

/// e^x, eight lanes, within 2 ulp of expf for x in [-87, 88] (Cephes' expf: x = n·ln2 + r,
/// |r| ≤ ln2/2, a degree-6 polynomial for e^r, 2^n from the exponent bits). Below -87 it gives
/// ~1e-38 instead of a subnormal (flushed to zero in training anyway); inputs are clamped
/// to [-87.3, 88] (softmax inputs here are ≤ 0).
/// Only SSE2 is assumed, so n is rounded with the 1.5·2^23 trick rather than roundps.
@inline(__always) func expSIMD(_ v: SIMD8<Float>) -> SIMD8<Float> {
    let lo = SIMD8<Float>(repeating: -87.33654), hi = SIMD8<Float>(repeating: 88)  // 2^n stays finite
    let x = v.replacing(with: lo, where: v .< lo).replacing(with: hi, where: v .> hi)
    // Adding 1.5·2^23 rounds to an integer n and leaves n + 2^22 in the low mantissa bits.
    // (The generic Float→Int32 SIMD conversions and pointwiseMin/Max are not specialised.)
    let magic = SIMD8<Float>(repeating: 12_582_912)
    let t = x * 1.442_695_04 + magic
    let n = t - magic
    let r = x - n * 0.693_359_375 + n * 2.121_944_4e-4  // ln2 split in a short high part and the rest
    var p = SIMD8<Float>(repeating: 1.987_569_15e-4)
    p = p * r + 1.398_199_95e-3
    p = p * r + 8.333_451_9e-3
    p = p * r + 4.166_579_59e-2
    p = p * r + 1.666_666_55e-1
    p = p * r + 5.000_000_12e-1
    let y = p * (r * r) + r + 1
    let bits = (unsafeBitCast(t, to: SIMD8<Int32>.self) &- 0x4B40_0000 &+ 127) &<< 23
    return y * unsafeBitCast(bits, to: SIMD8<Float>.self)
}
