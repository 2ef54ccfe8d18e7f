import Foundation
import IdxBase
import IdxModel

/// t-SNE (van der Maaten & Hinton 2008; Barnes-Hut: van der Maaten 2014), with
/// scikit-learn's defaults and optimiser: early exaggeration 12 for 250
/// iterations with momentum 0.5, then momentum 0.8; gains +0.2 / ×0.8 (min
/// 0.01); learning rate "auto" = max(n / 12 / 4, 50); initialisation by PCA
/// scaled so the first coordinate has standard deviation 1e-4 (or random
/// N(0, 1e-4²) from the seed).
public struct TSNEOptions {
    public enum Gradient: String { case auto, exact, barnesHut = "barnes-hut" }
    public enum Initialization: String { case pca, random }
    public var perplexity = 30.0
    public var iterations = 1000
    public var earlyExaggeration = 12.0
    public var exaggerationIterations = 250
    public var learningRate: Double? = nil   // nil = auto
    public var theta = 0.5
    public var gradient = Gradient.auto
    public var initialization = Initialization.pca
    public var seed: UInt64 = 42
    public var exactThreshold = 1000         // auto: exact gradients up to this many points
    public var minGradNorm = 1e-7
    public init() {}
}

public struct TSNEResult {
    public var embedding: [Float]   // n × 2
    public var klDivergence: Double
    public var iterations: Int
    public var usedExact: Bool
}

public enum TSNE {
    /// Runs t-SNE on x (n × d, row-major). `report(iteration, kl)` is called every 50 iterations.
    public static func run(_ x: [Float], n: Int, d: Int, options o: TSNEOptions,
                           report: ((Int, Double) -> Void)? = nil) throws -> TSNEResult {
        guard n >= 3 else { throw IdxError("t-SNE needs at least 3 points, got \(n)") }
        guard o.perplexity > 0, o.perplexity < Double(n) else {
            throw IdxError("t-SNE: perplexity \(o.perplexity) must be positive and less than the number of points (\(n)); pass a smaller --perplexity (scikit-learn refuses it too)")
        }
        guard o.iterations >= 1 else { throw IdxError("t-SNE: --iterations must be at least 1") }
        let exact = o.gradient == .exact || (o.gradient == .auto && n <= o.exactThreshold)

        var y = try initialEmbedding(x, n: n, d: d, options: o)
        let lr = o.learningRate ?? max(Double(n) / o.earlyExaggeration / 4, 50)
        var dense = [Double](), sparse = CSRMatrix(n: n, rowStart: [], cols: [], vals: [])
        if exact {
            dense = Affinities.denseJoint(x, n: n, d: d, perplexity: o.perplexity)
        } else {
            let k = min(n - 1, Int(3 * o.perplexity + 1))
            let nn = Affinities.nearestNeighbors(x, n: n, d: d, k: k)
            sparse = Affinities.sparseJoint(indices: nn.indices, sqDistances: nn.sqDistances, n: n, k: k, perplexity: o.perplexity)
        }
        let tree = QuadTree(capacity: max(1024, 4 * n))
        var grad = [Double](repeating: 0, count: 2 * n)
        var update = [Double](repeating: 0, count: 2 * n)
        var gains = [Double](repeating: 1, count: 2 * n)
        var kl = Double.nan
        var done = 0
        // Two stages as scikit-learn's: exploration (exaggerated P, momentum 0.5) until iteration 250
        // or until the gradient norm falls below minGradNorm, then the rest with a fresh optimiser
        // state (update 0, gains 1) until `iterations` in all.
        var exploring = o.exaggerationIterations > 0
        for it in 0 ..< o.iterations {
            if exploring && it >= o.exaggerationIterations {
                exploring = false
                for e in 0 ..< 2 * n { update[e] = 0; gains[e] = 1 }
            }
            let exaggeration = exploring ? o.earlyExaggeration : 1
            let momentum = exploring ? 0.5 : 0.8
            let check = (it + 1) % 50 == 0 || it + 1 == o.iterations
            let err: Double?
            if exact {
                err = exactGradient(p: dense, y: y, n: n, exaggeration: exaggeration, grad: &grad, computeKL: check)
            } else {
                err = barnesHutGradient(p: sparse, y: y, n: n, exaggeration: exaggeration, theta: o.theta,
                                        tree: tree, grad: &grad, computeKL: check)
            }
            var norm2 = 0.0
            for e in 0 ..< 2 * n {
                let g = grad[e]
                norm2 += g * g
                if update[e] * g < 0 { gains[e] += 0.2 } else { gains[e] = max(gains[e] * 0.8, 0.01) }
                update[e] = momentum * update[e] - lr * gains[e] * g
                y[e] += update[e]
            }
            done = it + 1
            if check, let err {
                kl = err
                report?(it + 1, err)
                if norm2.squareRoot() <= o.minGradNorm {
                    if !exploring { break }
                    exploring = false
                    for e in 0 ..< 2 * n { update[e] = 0; gains[e] = 1 }
                }
            }
        }
        return TSNEResult(embedding: y.map { Float($0) }, klDivergence: kl, iterations: done, usedExact: exact)
    }

    /// PCA init scaled to std(first coordinate) = 1e-4 (scikit-learn's default), or N(0, 1e-4²).
    static func initialEmbedding(_ x: [Float], n: Int, d: Int, options o: TSNEOptions) throws -> [Double] {
        var y = [Double](repeating: 0, count: 2 * n)
        switch o.initialization {
        case .random:
            var rng = SplitMix64(state: o.seed)
            for e in 0 ..< 2 * n { y[e] = 1e-4 * rng.normal() }
        case .pca:
            let k = min(2, d)
            let pca = try PCA.fit(x, rows: n, dim: d, components: k)
            for i in 0 ..< n { for c in 0 ..< k { y[2 * i + c] = Double(pca.coordinates[i * k + c]) } }
            var mean = 0.0, sq = 0.0
            for i in 0 ..< n { mean += y[2 * i] }
            mean /= Double(n)
            for i in 0 ..< n { sq += (y[2 * i] - mean) * (y[2 * i] - mean) }
            let std = (sq / Double(n)).squareRoot()
            let scale = std > 0 ? 1e-4 / std : 1
            for e in 0 ..< 2 * n { y[e] *= scale }
        }
        return y
    }

    /// Exact gradient of KL(P || Q) for Student-t Q (one degree of freedom), P dense n × n:
    /// ∂C/∂y_i = 4 Σ_j (α p_ij - q_ij) w_ij (y_i - y_j), w_ij = 1 / (1 + |y_i - y_j|²),
    /// q_ij = w_ij / Σ_{k≠l} w_kl. Returns KL(P || Q) (with P un-exaggerated) when asked.
    @discardableResult
    static func exactGradient(p: [Double], y: [Double], n: Int, exaggeration: Double, grad: inout [Double],
                              computeKL: Bool) -> Double? {
        var w = [Double](repeating: 0, count: n * n)
        var sumW = 0.0
        for i in 0 ..< n {
            for j in 0 ..< n where j != i {
                let dx = y[2 * i] - y[2 * j], dy = y[2 * i + 1] - y[2 * j + 1]
                let v = 1 / (1 + dx * dx + dy * dy)
                w[i * n + j] = v; sumW += v
            }
        }
        for i in 0 ..< n {
            var gx = 0.0, gy = 0.0
            for j in 0 ..< n where j != i {
                let wij = w[i * n + j]
                let f = (exaggeration * p[i * n + j] - wij / sumW) * wij
                gx += f * (y[2 * i] - y[2 * j]); gy += f * (y[2 * i + 1] - y[2 * j + 1])
            }
            grad[2 * i] = 4 * gx; grad[2 * i + 1] = 4 * gy
        }
        guard computeKL else { return nil }
        var kl = 0.0
        for i in 0 ..< n {
            for j in 0 ..< n where j != i {
                let pij = p[i * n + j]
                kl += pij * log(max(pij, Double.ulpOfOne) / max(w[i * n + j] / sumW, Double.ulpOfOne))
            }
        }
        return kl
    }

    /// KL(P || Q) for a dense P; for the finite-difference test.
    static func exactKL(p: [Double], y: [Double], n: Int) -> Double {
        var g = [Double](repeating: 0, count: 2 * n)
        return exactGradient(p: p, y: y, n: n, exaggeration: 1, grad: &g, computeKL: true)!
    }

    /// Barnes-Hut gradient: attractive forces over the sparse P (CSR), repulsive forces from the
    /// quadtree. Work is split in a fixed number of chunks, so results do not depend on the core count.
    @discardableResult
    static func barnesHutGradient(p: CSRMatrix, y: [Double], n: Int, exaggeration: Double, theta: Double,
                                  tree: QuadTree, grad: inout [Double], computeKL: Bool) -> Double? {
        let chunks = 16
        let per = (n + chunks - 1) / chunks
        var partialQ = [Double](repeating: 0, count: chunks)
        var partialKL = [Double](repeating: 0, count: chunks)
        var negative = [Double](repeating: 0, count: 2 * n)
        let theta2 = theta * theta
        y.withUnsafeBufferPointer { yb in
            let yp = yb.baseAddress!
            tree.build(yp, n: n)
            negative.withUnsafeMutableBufferPointer { negp in
                grad.withUnsafeMutableBufferPointer { gp in
                    partialQ.withUnsafeMutableBufferPointer { qp in
                        p.rowStart.withUnsafeBufferPointer { rs in
                            p.cols.withUnsafeBufferPointer { cols in
                                p.vals.withUnsafeBufferPointer { vals in
                                    // The tree (built above), y and P are only read; chunk ch writes only
                                    // its own points' rows lo ..< hi of negative and grad, and qp[ch].
                                    let shared = SharedWithWorkers((tree: tree, yp: yp, negp: negp, gp: gp, qp: qp,
                                                                    rs: rs, cols: cols, vals: vals))
                                    DispatchQueue.concurrentPerform(iterations: chunks) { ch in
                                        let (tree, yp, negp, gp, qp, rs, cols, vals) = shared.value
                                        let lo = ch * per, hi = min(n, lo + per)
                                        if lo >= hi { return }
                                        let stack = UnsafeMutablePointer<Int32>.allocate(capacity: 1024)
                                        defer { stack.deallocate() }
                                        var q = 0.0
                                        for i in lo ..< hi {
                                            var fx = 0.0, fy = 0.0
                                            q += tree.repulsion(yp, i, theta2: theta2, stack: stack, fx: &fx, fy: &fy)
                                            negp[2 * i] = fx; negp[2 * i + 1] = fy
                                            // Attractive: Σ_j p_ij w_ij (y_i - y_j).
                                            let xi = yp[2 * i], yi = yp[2 * i + 1]
                                            var ax = 0.0, ay = 0.0
                                            for e in rs[i] ..< rs[i + 1] {
                                                let j = Int(cols[e])
                                                let dx = xi - yp[2 * j], dy = yi - yp[2 * j + 1]
                                                let f = vals[e] / (1 + dx * dx + dy * dy)
                                                ax += f * dx; ay += f * dy
                                            }
                                            gp[2 * i] = exaggeration * ax; gp[2 * i + 1] = exaggeration * ay
                                        }
                                        qp[ch] = q
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        var sumQ = 0.0
        for v in partialQ { sumQ += v }
        for e in 0 ..< 2 * n { grad[e] = 4 * (grad[e] - negative[e] / sumQ) }
        guard computeKL else { return nil }
        let chunkKL = partialKL.count, totalQ = sumQ
        partialKL.withUnsafeMutableBufferPointer { kp in
            let kp = SharedWithWorkers(kp)  // chunk ch writes only kp[ch]
            DispatchQueue.concurrentPerform(iterations: chunkKL) { ch in
                let lo = ch * per, hi = min(n, lo + per)
                var s = 0.0
                if lo < hi {
                    for i in lo ..< hi {
                        for e in p.rowStart[i] ..< p.rowStart[i + 1] {
                            let j = Int(p.cols[e])
                            let dx = y[2 * i] - y[2 * j], dy = y[2 * i + 1] - y[2 * j + 1]
                            let qij = 1 / (1 + dx * dx + dy * dy) / totalQ
                            let pij = p.vals[e]
                            s += pij * log(max(pij, Double.ulpOfOne) / max(qij, Double.ulpOfOne))
                        }
                    }
                }
                kp.value[ch] = s
            }
        }
        return partialKL.reduce(0, +)
    }
}
