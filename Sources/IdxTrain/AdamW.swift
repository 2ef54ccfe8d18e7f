import CSupport
import Foundation
import IdxBase
import IdxModel

/// torch.optim.AdamW (amsgrad off, maximize off): decoupled weight decay on every
/// parameter, bias-corrected moments, over the flat parameter buffer.
public struct AdamW: Sendable {
    public var lr: Float = 1e-3
    public var beta1: Float = 0.9
    public var beta2: Float = 0.999
    public var eps: Float = 1e-8
    public var weightDecay: Float = 0.01
    public init(lr: Float = 1e-3, beta1: Float = 0.9, beta2: Float = 0.999, eps: Float = 1e-8, weightDecay: Float = 0.01) {
        self.lr = lr; self.beta1 = beta1; self.beta2 = beta2; self.eps = eps; self.weightDecay = weightDecay
    }

    /// One step number `t` (1-based) over `count` parameters. The gradient used is
    /// `grads[i] * gradScale`: clipping folded in, which saves a pass over the buffer and
    /// rounds exactly as scaling the buffer first would.
    public func step(params: UnsafeMutablePointer<Float>, grads: UnsafePointer<Float>, m: UnsafeMutablePointer<Float>,
                     v: UnsafeMutablePointer<Float>, count: Int, t: Int, gradScale: Float = 1) {
        let bc1 = 1 - Float(pow(Double(beta1), Double(t)))
        let bc2 = 1 - Float(pow(Double(beta2), Double(t)))
        let stepSize = lr / bc1
        let bc2Sqrt = bc2.squareRoot()
        let decay = 1 - lr * weightDecay
        let b1 = beta1, b2 = beta2, e = eps, gs = gradScale
        // parts on the compute threads (elementwise, so the result does not depend on the split);
        // one with --threads 1, so an MPI rank does not take a core from the other rank
        let parts = count > 100_000 ? min(8, max(1, EncoderNetwork.computeThreads)) : 1
        // Each part reads and writes only its own range lo ..< hi of the four buffers.
        let buffers = SharedWithWorkers((params: params, grads: grads, m: m, v: v))
        DispatchQueue.concurrentPerform(iterations: parts) { part in
        idx_flush_denormals()
        let (params, grads, m, v) = buffers.value
        let lo = count * part / parts, hi = count * (part + 1) / parts
        let rp = UnsafeMutableRawPointer(params), rg = UnsafeRawPointer(grads)
        let rm = UnsafeMutableRawPointer(m), rv = UnsafeMutableRawPointer(v)
        var i = lo
        // the same arithmetic as the scalar tail, eight lanes at a time
        while i + 8 <= hi {
            let o = 4 * i
            let g = rg.loadUnaligned(fromByteOffset: o, as: SIMD8<Float>.self) * gs
            let p = rp.loadUnaligned(fromByteOffset: o, as: SIMD8<Float>.self) * decay
            var mi = rm.loadUnaligned(fromByteOffset: o, as: SIMD8<Float>.self)
            mi = mi + (1 - b1) * (g - mi)
            let vi = rv.loadUnaligned(fromByteOffset: o, as: SIMD8<Float>.self) * b2 + (1 - b2) * g * g
            rm.storeBytes(of: mi, toByteOffset: o, as: SIMD8<Float>.self)
            rv.storeBytes(of: vi, toByteOffset: o, as: SIMD8<Float>.self)
            rp.storeBytes(of: p - stepSize * mi / (vi.squareRoot() / bc2Sqrt + e), toByteOffset: o, as: SIMD8<Float>.self)
            i += 8
        }
        while i < hi {
            let g = grads[i] * gs
            let p = params[i] * decay
            let mi = m[i] + (1 - b1) * (g - m[i])  // torch's lerp_
            let vi = v[i] * b2 + (1 - b2) * g * g
            m[i] = mi; v[i] = vi
            params[i] = p - stepSize * mi / (vi.squareRoot() / bc2Sqrt + e)
            i += 1
        }
        }
    }
}

/// torch.nn.utils.clip_grad_norm_: scales the gradients by max_norm / (norm + 1e-6) when
/// that is below 1. Returns the norm before clipping (accumulated in Double).
@discardableResult
public func clipGradientNorm(_ grads: UnsafeMutablePointer<Float>, count: Int, maxNorm: Float) -> Double {
    let norm = gradientSquaredNorm(grads, count: count).squareRoot()
    let coef = clipCoefficient(norm: norm, maxNorm: maxNorm)
    if coef < 1 { for i in 0 ..< count { grads[i] *= coef } }
    return norm
}

/// The factor clip_grad_norm_ scales the gradients by: max_norm / (norm + 1e-6), or 1.
func clipCoefficient(norm: Double, maxNorm: Float) -> Float {
    let coef = Float(Double(maxNorm) / (norm + 1e-6))
    return coef < 1 ? coef : 1
}

/// Σ g² over the buffer: Float partial sums over blocks of 4096 (SIMD), added in Double, exact
/// enough and fast. A buffer split at multiples of 4096 gives the same blocks in every part.
/// With `threads` > 1 the blocks are shared out and their partial sums still added in block
/// order, so the result is the same bits.
func gradientSquaredNorm(_ grads: UnsafePointer<Float>, count: Int, threads: Int = 1) -> Double {
    let blocks = (count + normBlock - 1) / normBlock
    let g = SharedWithWorkers(grads)  // only read
    @Sendable func block(_ b: Int) -> Float {
        let grads = g.value
        let start = b * normBlock, n = min(normBlock, count - start)
        return dotProduct(grads + start, grads + start, n)
    }
    guard threads > 1, blocks >= 2 * threads else { return (0 ..< blocks).reduce(0.0) { $0 + Double(block($1)) } }
    var partial = [Float](repeating: 0, count: blocks)
    partial.withUnsafeMutableBufferPointer { out in
        // Thread t writes only the sums of its own blocks.
        let o = SharedWithWorkers(out.baseAddress!)
        DispatchQueue.concurrentPerform(iterations: threads) { t in
            for b in blocks * t / threads ..< blocks * (t + 1) / threads { o.value[b] = block(b) }
        }
    }
    return partial.reduce(0.0) { $0 + Double($1) }
}

let normBlock = 4096
