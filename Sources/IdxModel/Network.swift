import COpenBLAS
import Foundation
import IdxBase

/// A heap Float buffer that grows (contents not kept) and never shrinks.
public final class FloatBuffer {
    public private(set) var ptr: FPtr
    private(set) var capacity: Int
    private var owned = true
    public init(_ n: Int = 1) {
        capacity = max(n, 1)
        ptr = Self.allocate(capacity)
        ptr.initialize(repeating: 0, count: capacity)
    }
    deinit { if owned { free(ptr) } }

    /// Buffers of 2 MB and more on 2 MB boundaries, advised to the kernel as huge pages: a
    /// model's 10 MB of weights then fault in as 5 pages instead of 2,500.
    private static func allocate(_ n: Int) -> FPtr {
        let bytes = 4 * n, huge = 2 << 20
        var p: UnsafeMutableRawPointer?
        guard posix_memalign(&p, bytes >= huge ? huge : 64, bytes) == 0, let p else { fatalError("out of memory for \(bytes) bytes") }
        if bytes >= huge { _ = madvise(p, bytes, MADV_HUGEPAGE) }
        return p.bindMemory(to: Float.self, capacity: n)
    }

    /// From now on the buffer is `count` floats at `memory`, owned elsewhere (an MPI shared
    /// window that outlives it); `copy` moves the first `count` values there first. Every
    /// holder of this buffer (worker networks sharing parameters) sees the new memory.
    public func adopt(_ memory: FPtr, count: Int, copy: Bool) {
        precondition(count <= capacity)
        if copy { memory.update(from: ptr, count: count) }
        if owned { free(ptr) }
        ptr = memory; capacity = count; owned = false
    }

    public func ensure(_ n: Int) {
        guard n > capacity else { return }
        precondition(owned, "a FloatBuffer over shared memory cannot grow")
        free(ptr)
        capacity = n + n / 4
        ptr = Self.allocate(capacity)
        ptr.initialize(repeating: 0, count: capacity)
    }
    public func zero(_ n: Int) { ptr.update(repeating: 0, count: n) }
}

/// A batch with the padding taken out: the documents' tokens back to back.
/// Document d is rows docStart[d] ..< docStart[d+1] (its [BOS] … [EOS], at most maxLen).
/// Packing is exact: with PyTorch's key-padding mask a padded position never
/// influences a real one, and its own output never reaches the loss.
public struct PackedBatch: Sendable {
    public var tokens: [Int32] = []        // N input ids (after masking)
    public var positions: [Int32] = []     // N positions within their document
    public var docStart: [Int] = [0]       // docs + 1
    public var selectedRows: [Int] = []    // M rows that carry a loss
    public var targets: [Int32] = []       // M original ids at those rows
    public var dropoutSeeds: [UInt64] = [] // one per document while training (empty: no dropout)

    public var rowCount: Int { tokens.count }
    public var docCount: Int { docStart.count - 1 }

    public init() {}

    public mutating func append(document ids: [Int32]) {
        tokens.append(contentsOf: ids)
        for p in 0 ..< ids.count { positions.append(Int32(p)) }
        docStart.append(tokens.count)
    }
}

/// The encoder's parameters, gradients and activations, with forward and backward over a
/// PackedBatch. Parameters live in ONE contiguous buffer, gradients in another of the same
/// layout (see ParameterLayout), so data-parallel training needs one Allreduce.
public final class EncoderNetwork {
    let cfg: ModelConfig
    public let layout: ParameterLayout
    public let params: FloatBuffer
    public let grads: FloatBuffer
    public var parameterCount: Int { layout.count }

    final class LayerActs {
        let qkv = FloatBuffer(), probs = FloatBuffer(), attMask = FloatBuffer(), atty = FloatBuffer()
        let attProj = FloatBuffer(), drop1 = FloatBuffer(), res1 = FloatBuffer()
        let ln1Mean = FloatBuffer(), ln1Rstd = FloatBuffer(), x1 = FloatBuffer()
        let hPre = FloatBuffer(), dropFF = FloatBuffer(), hAct = FloatBuffer(), h2 = FloatBuffer()
        let drop2 = FloatBuffer(), res2 = FloatBuffer(), ln2Mean = FloatBuffer(), ln2Rstd = FloatBuffer()
    }
    private var acts: [LayerActs]
    private var xs: [FloatBuffer]              // nLayers + 1 hidden states, N×C each
    private var probOffset: [Int] = [0]
    private var training = false
    // backward scratch
    private let dA = FloatBuffer(), dB = FloatBuffer(), dC = FloatBuffer(), dH = FloatBuffer(), dQKV = FloatBuffer()
    private let hSel = FloatBuffer(), dHSel = FloatBuffer(), logits = FloatBuffer(), scratch = FloatBuffer()

    /// `sharedParameters`: another network's parameters (worker threads of one trainer
    /// share the weights and keep their own gradients and activations).
    public init(config: ModelConfig, sharedParameters: FloatBuffer? = nil) {
        cfg = config
        layout = ParameterLayout(config)
        params = sharedParameters ?? FloatBuffer(layout.count)
        grads = FloatBuffer(layout.count)
        acts = (0 ..< config.nLayers).map { _ in LayerActs() }
        xs = (0 ... config.nLayers).map { _ in FloatBuffer() }
    }

    public var parameters: UnsafeMutableBufferPointer<Float> { UnsafeMutableBufferPointer(start: params.ptr, count: layout.count) }
    public var gradients: UnsafeMutableBufferPointer<Float> { UnsafeMutableBufferPointer(start: grads.ptr, count: layout.count) }

    /// The final hidden states of the last forward: N×C.
    public var output: CFPtr { CFPtr(xs[cfg.nLayers].ptr) }

    // MARK: init (as PyTorch does, with our own RNG)

    /// Embeddings N(0,1); in_proj xavier_uniform, zero bias; Linear default U(±1/√fan_in)
    /// for weights and biases, out_proj bias 0; LayerNorm 1/0. Like nn.TransformerEncoder
    /// (which deep-copies one layer), every layer starts from the same weights.
    public func initialize(seed: UInt64) {
        var g = SplitMix64(state: SplitMix64.derive([seed], .initialization))
        let p = params.ptr, c = cfg.dModel, f = cfg.dFF, v = cfg.vocabSize
        func normal(_ o: Int, _ n: Int) {
            var i = 0
            while i < n {
                let u1 = max(g.nextDouble(), 0x1p-60), u2 = g.nextDouble()
                let r = (-2 * Foundation.log(u1)).squareRoot()
                p[o + i] = Float(r * cos(2 * .pi * u2)); i += 1
                if i < n { p[o + i] = Float(r * sin(2 * .pi * u2)); i += 1 }
            }
        }
        func uniform(_ o: Int, _ n: Int, _ bound: Double) {
            for i in 0 ..< n { p[o + i] = Float((2 * g.nextDouble() - 1) * bound) }
        }
        func fill(_ o: Int, _ n: Int, _ x: Float) { (p + o).update(repeating: x, count: n) }
        normal(layout.tokEmb, v * c)
        normal(layout.posEmb, cfg.maxLen * c)
        let l0 = layout.layers[0]
        uniform(l0.inProjW, 3 * c * c, (6.0 / Double(c + 3 * c)).squareRoot())
        fill(l0.inProjB, 3 * c, 0)
        uniform(l0.outProjW, c * c, 1 / Double(c).squareRoot())
        fill(l0.outProjB, c, 0)
        uniform(l0.lin1W, f * c, 1 / Double(c).squareRoot())
        uniform(l0.lin1B, f, 1 / Double(c).squareRoot())
        uniform(l0.lin2W, c * f, 1 / Double(f).squareRoot())
        uniform(l0.lin2B, c, 1 / Double(f).squareRoot())
        fill(l0.norm1W, c, 1); fill(l0.norm1B, c, 0); fill(l0.norm2W, c, 1); fill(l0.norm2B, c, 0)
        let layerSize = layout.layers.count > 1 ? layout.layers[1].inProjW - l0.inProjW : 0
        for l in layout.layers.dropFirst() { (p + l.inProjW).update(from: p + l0.inProjW, count: layerSize) }
        uniform(layout.lmHeadW, v * c, 1 / Double(c).squareRoot())
        uniform(layout.lmHeadB, v, 1 / Double(c).squareRoot())
    }

    // MARK: forward

    /// Runs the encoder over the batch; with dropout when `training` (masks drawn from
    /// batch.dropoutSeeds, one stream per (document, layer)).
    public func forward(_ b: PackedBatch, training: Bool) {
        self.training = training && cfg.dropout > 0 && !b.dropoutSeeds.isEmpty
        let n = b.rowCount, c = cfg.dModel, f = cfg.dFF, h = cfg.nHeads, docs = b.docCount
        probOffset = [Int](repeating: 0, count: docs + 1)
        for d in 0 ..< docs {
            let l = b.docStart[d + 1] - b.docStart[d]
            probOffset[d + 1] = probOffset[d] + h * l * l
        }
        let pCount = probOffset[docs]
        for x in xs { x.ensure(n * c) }
        for a in acts {
            a.qkv.ensure(n * 3 * c); a.probs.ensure(pCount); a.atty.ensure(n * c); a.attProj.ensure(n * c)
            a.res1.ensure(n * c); a.ln1Mean.ensure(n); a.ln1Rstd.ensure(n); a.x1.ensure(n * c)
            a.hPre.ensure(n * f); a.hAct.ensure(n * f); a.h2.ensure(n * c); a.res2.ensure(n * c)
            a.ln2Mean.ensure(n); a.ln2Rstd.ensure(n)
            if self.training { a.attMask.ensure(pCount); a.drop1.ensure(n * c); a.dropFF.ensure(n * f); a.drop2.ensure(n * c) }
        }
        let p = params.ptr
        b.tokens.withUnsafeBufferPointer { tok in
            b.positions.withUnsafeBufferPointer { pos in
                embeddingForward(xs[0].ptr, tok.baseAddress!, pos.baseAddress!, p + layout.tokEmb, p + layout.posEmb, n, c)
            }
        }
        if self.training { drawDropoutMasks(b) }
        scratch.ensure(2 * cfg.maxLen * cfg.maxLen)
        for (li, L) in layout.layers.enumerated() {
            let a = acts[li], xin = xs[li].ptr
            let m1: CFPtr? = self.training ? CFPtr(a.drop1.ptr) : nil
            let mA: CFPtr? = self.training ? CFPtr(a.attMask.ptr) : nil
            let mF: FPtr? = self.training ? a.dropFF.ptr : nil
            let m2: CFPtr? = self.training ? CFPtr(a.drop2.ptr) : nil
            linearForward(a.qkv.ptr, xin, p + L.inProjW, p + L.inProjB, n, c, 3 * c)
            b.docStart.withUnsafeBufferPointer { ds in
                probOffset.withUnsafeBufferPointer { po in
                    attentionForward(a.atty.ptr, a.probs.ptr, mA, a.qkv.ptr, scratch.ptr, ds.baseAddress!, po.baseAddress!, 0 ..< docs, c, h)
                }
            }
            linearForward(a.attProj.ptr, a.atty.ptr, p + L.outProjW, p + L.outProjB, n, c, c)
            residualForward(a.res1.ptr, xin, a.attProj.ptr, m1, n * c)
            layerNormForward(a.x1.ptr, a.ln1Mean.ptr, a.ln1Rstd.ptr, a.res1.ptr, p + L.norm1W, p + L.norm1B, n, c)
            linearForward(a.hPre.ptr, a.x1.ptr, p + L.lin1W, p + L.lin1B, n, c, f)
            reluDropoutForward(a.hAct.ptr, a.hPre.ptr, mF, n * f)
            linearForward(a.h2.ptr, a.hAct.ptr, p + L.lin2W, p + L.lin2B, n, f, c)
            residualForward(a.res2.ptr, a.x1.ptr, a.h2.ptr, m2, n * c)
            layerNormForward(xs[li + 1].ptr, a.ln2Mean.ptr, a.ln2Rstd.ptr, a.res2.ptr, p + L.norm2W, p + L.norm2B, n, c)
        }
    }

    /// Dropout masks (0 or 1/(1-p)): for each document and layer one SplitMix64 stream,
    /// drawn in the order attention probabilities, dropout1, FFN dropout, dropout2.
    private func drawDropoutMasks(_ b: PackedBatch) {
        let c = cfg.dModel, f = cfg.dFF, h = cfg.nHeads
        let keep = 1 / (1 - cfg.dropout)
        let threshold = UInt64((Double(cfg.dropout) * 65536).rounded())  // 16-bit resolution, 4 per draw
        for (li, a) in acts.enumerated() {
            for d in 0 ..< b.docCount {
                var g = SplitMix64(state: SplitMix64.derive([b.dropoutSeeds[d], UInt64(li)]))
                let s = b.docStart[d], l = b.docStart[d + 1] - s
                func fill(_ ptr: FPtr, _ count: Int) { fillDropoutMask(ptr, count, &g, threshold, keep) }
                fill(a.attMask.ptr + probOffset[d], h * l * l)
                fill(a.drop1.ptr + s * c, l * c)
                fill(a.dropFF.ptr + s * f, l * f)
                fill(a.drop2.ptr + s * c, l * c)
            }
        }
    }

    /// Worker threads a Trainer uses (set by ComputeSetup.configure from --threads). Unsafe is
    /// sound here: written once at start-up, before any worker exists, read-only after.
    public nonisolated(unsafe) static var computeThreads = Cores.available

    // MARK: loss + backward

    /// The LM head at the selected rows, cross-entropy, and the full backward pass.
    /// Gradients ACCUMULATE into `grads` (zero them first); the loss gradient is scaled
    /// by 1/globalSelectedCount so ranks can sum their gradients. Returns Σ loss.
    public func backward(_ b: PackedBatch, globalSelectedCount: Int) -> Double {
        let n = b.rowCount, c = cfg.dModel, f = cfg.dFF, v = cfg.vocabSize
        let m = b.selectedRows.count
        let p = params.ptr, g = grads.ptr
        dA.ensure(n * c); dB.ensure(n * c); dC.ensure(n * c); dH.ensure(n * f); dQKV.ensure(n * 3 * c)
        hSel.ensure(m * c); dHSel.ensure(m * c); logits.ensure(m * v); scratch.ensure(2 * cfg.maxLen * cfg.maxLen)
        let top = xs[cfg.nLayers].ptr
        for (i, r) in b.selectedRows.enumerated() { (hSel.ptr + i * c).update(from: top + r * c, count: c) }
        linearForward(logits.ptr, hSel.ptr, p + layout.lmHeadW, p + layout.lmHeadB, m, c, v)
        let loss = b.targets.withUnsafeBufferPointer {
            crossEntropyForwardBackward(logits.ptr, $0.baseAddress!, m, v, gradScale: 1 / Float(max(1, globalSelectedCount)))
        }
        linearBackward(dHSel.ptr, g + layout.lmHeadW, g + layout.lmHeadB, logits.ptr, hSel.ptr, p + layout.lmHeadW, m, c, v)
        dA.zero(n * c)
        for (i, r) in b.selectedRows.enumerated() {
            let d = dA.ptr + r * c, s = dHSel.ptr + i * c
            for k in 0 ..< c { d[k] += s[k] }
        }
        backwardEncoder(b)
        return loss
    }

    /// Backward from a gradient of the final hidden states (N×C), for losses on pooled
    /// embeddings (ContrastiveLoss). Gradients ACCUMULATE into `grads`; the LM head gets none.
    public func backward(_ b: PackedBatch, hiddenGradient: UnsafePointer<Float>) {
        let n = b.rowCount, c = cfg.dModel, f = cfg.dFF
        dA.ensure(n * c); dB.ensure(n * c); dC.ensure(n * c); dH.ensure(n * f); dQKV.ensure(n * 3 * c)
        scratch.ensure(2 * cfg.maxLen * cfg.maxLen)
        dA.ptr.update(from: hiddenGradient, count: n * c)
        backwardEncoder(b)
    }

    /// The layers and embeddings backward, from dA = ∂loss/∂(final hidden states), N×C.
    private func backwardEncoder(_ b: PackedBatch) {
        let n = b.rowCount, c = cfg.dModel, f = cfg.dFF, h = cfg.nHeads, docs = b.docCount
        let p = params.ptr, g = grads.ptr
        for li in stride(from: cfg.nLayers - 1, through: 0, by: -1) {
            let L = layout.layers[li], a = acts[li]
            let m1: CFPtr? = training ? CFPtr(a.drop1.ptr) : nil
            let mA: CFPtr? = training ? CFPtr(a.attMask.ptr) : nil
            let mF: CFPtr? = training ? CFPtr(a.dropFF.ptr) : nil
            let m2: CFPtr? = training ? CFPtr(a.drop2.ptr) : nil
            layerNormBackward(dB.ptr, g + L.norm2W, g + L.norm2B, dA.ptr, a.res2.ptr, p + L.norm2W, a.ln2Mean.ptr, a.ln2Rstd.ptr, n, c)
            residualBackward(dC.ptr, dB.ptr, m2, n * c)
            linearBackward(dH.ptr, g + L.lin2W, g + L.lin2B, dC.ptr, a.hAct.ptr, p + L.lin2W, n, f, c)
            reluDropoutBackward(dH.ptr, a.hPre.ptr, mF, n * f)
            linearBackward(dB.ptr, g + L.lin1W, g + L.lin1B, dH.ptr, a.x1.ptr, p + L.lin1W, n, c, f, accumulate: true)
            layerNormBackward(dA.ptr, g + L.norm1W, g + L.norm1B, dB.ptr, a.res1.ptr, p + L.norm1W, a.ln1Mean.ptr, a.ln1Rstd.ptr, n, c)
            residualBackward(dC.ptr, dA.ptr, m1, n * c)
            linearBackward(dB.ptr, g + L.outProjW, g + L.outProjB, dC.ptr, a.atty.ptr, p + L.outProjW, n, c, c)
            b.docStart.withUnsafeBufferPointer { ds in
                probOffset.withUnsafeBufferPointer { po in
                    attentionBackward(dQKV.ptr, scratch.ptr, dB.ptr, a.qkv.ptr, a.probs.ptr, mA,
                                      ds.baseAddress!, po.baseAddress!, 0 ..< docs, c, h)
                }
            }
            linearBackward(dA.ptr, g + L.inProjW, g + L.inProjB, dQKV.ptr, xs[li].ptr, p + L.inProjW, n, c, 3 * c, accumulate: true)
        }
        b.tokens.withUnsafeBufferPointer { tok in
            b.positions.withUnsafeBufferPointer { pos in
                embeddingBackward(g + layout.tokEmb, g + layout.posEmb, dA.ptr, tok.baseAddress!, pos.baseAddress!, n, c)
            }
        }
    }
}


/// Mean of each document's rows of `hidden` (N×C): docs × C.
public func meanPool(_ hidden: CFPtr, docStart: [Int], c: Int) -> [Float] {
    let docs = docStart.count - 1
    var out = [Float](repeating: 0, count: docs * c)
    for d in 0 ..< docs {
        let n = docStart[d + 1] - docStart[d]
        var acc = [Double](repeating: 0, count: c)
        for r in docStart[d] ..< docStart[d + 1] {
            let h = hidden + r * c
            for k in 0 ..< c { acc[k] += Double(h[k]) }
        }
        for k in 0 ..< c { out[d * c + k] = Float(acc[k] / Double(max(n, 1))) }
    }
    return out
}

/// 0 or `keep`, four decisions per 64-bit draw (16 bits each, drop when below `threshold`),
/// low bits first. Two draws fill eight lanes at once: the same masks as one draw per four
/// elements, without building every lane from shifts.
@inline(__always) func fillDropoutMask(_ ptr: FPtr, _ count: Int, _ g: inout SplitMix64, _ threshold: UInt64, _ keep: Float) {
    let t = UInt32(truncatingIfNeeded: threshold)
    let t8 = SIMD8<UInt32>(repeating: t), zero8 = SIMD8<Float>(repeating: 0), kept8 = SIMD8<Float>(repeating: keep)
    let raw = UnsafeMutableRawPointer(ptr)
    var i = 0
    while i + 8 <= count {
        let r0 = g.next(), r1 = g.next()
        // little-endian: lane k of the 16-bit view is bits 16k ..< 16k+16, r0's four then r1's
        let lanes = SIMD8<UInt32>(truncatingIfNeeded: unsafeBitCast(SIMD2<UInt64>(r0, r1), to: SIMD8<UInt16>.self))
        raw.storeBytes(of: kept8.replacing(with: zero8, where: lanes .< t8), toByteOffset: 4 * i, as: SIMD8<Float>.self)
        i += 8
    }
    while i < count {
        var r = g.next()
        let end = min(i + 4, count)
        while i < end { ptr[i] = UInt32(truncatingIfNeeded: r & 0xFFFF) < t ? 0 : keep; r >>= 16; i += 1 }
    }
}
